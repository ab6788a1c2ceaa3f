"""MeanTeacherRCNN: EMA math, frozen teacher, checkpoint round trip, teacher/student inference."""

import pickle

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.solver.build import get_default_optimizer_params

import dualalign.baselines.mean_teacher as mt_module
from dualalign.baselines.consistency import flip_boxes
from dualalign.baselines.mean_teacher import ema_decay_at
from dualalign.engine.checkpoint import AtomicCheckpointer

CFG = "mean_teacher_R18_cpu.yaml"


def _teacher_param(model):
    return model.teacher["roi_heads"].box_predictor.cls_score.weight


def test_ema_decay_warm_up():
    assert ema_decay_at(1, 0.999) == pytest.approx(0.5)
    assert ema_decay_at(2, 0.999) == pytest.approx(2.0 / 3.0)
    assert ema_decay_at(10_000, 0.999) == pytest.approx(0.999)
    assert ema_decay_at(5, 0.0) == 0.0


def test_after_step_is_the_ema_of_parameters_and_copies_buffers(tiny_model):
    model, cfg = tiny_model(CFG)
    assert cfg.DUALALIGN.MEAN_TEACHER.EMA_DECAY == 0.999
    student = model.roi_heads.box_predictor.cls_score.weight
    with torch.no_grad():
        student.add_(1.0)  # as if an optimizer step had moved the student
        model.backbone.bottom_up.stem.conv1.norm.running_mean.add_(3.0)
    model.ema_updates.fill_(99)  # the next update is the 100th: a = min(0.999, 100/101)
    teacher_before = _teacher_param(model).clone()
    model.after_step()
    a = 1.0 - 1.0 / 101.0
    expected = a * teacher_before + (1.0 - a) * student.detach()
    assert torch.allclose(_teacher_param(model), expected, atol=1e-6)
    assert int(model.ema_updates) == 100
    t_norm = model.teacher["backbone"].bottom_up.stem.conv1.norm
    assert torch.equal(t_norm.running_mean, model.backbone.bottom_up.stem.conv1.norm.running_mean)


def test_teacher_is_frozen_and_outside_the_optimizer(tiny_model, batch):
    model, cfg = tiny_model(CFG)
    model.train()
    assert not model.teacher.training  # train() leaves the teacher in eval mode
    assert all(not p.requires_grad for p in model.teacher.parameters())
    losses = model(*batch)
    assert "loss_mt_cons" in losses and model.semi_loss_names == ("loss_mt_cons",)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.roi_heads.box_predictor.cls_score.weight.grad is not None
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    groups = get_default_optimizer_params(model, base_lr=0.01)
    optimised = {id(p) for g in groups for p in g["params"]}
    assert optimised and not optimised & teacher_ids


def test_consistency_is_finite_and_reaches_the_student_only(tiny_model, batch):
    model, _ = tiny_model(CFG)
    model.train()
    with torch.no_grad():  # make teacher and student disagree
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 1.0)
    losses = model(*batch)
    cons = losses["loss_mt_cons"]
    assert torch.isfinite(cons) and cons > 0
    cons.backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert model.proposal_generator.rpn_head.conv.weight.grad is None  # proposals: no gradient


def test_state_dict_holds_teacher_and_round_trips(tiny_model):
    model, cfg = tiny_model(CFG)
    with torch.no_grad():
        _teacher_param(model).add_(0.5)
    model.ema_updates.fill_(7)
    state = model.state_dict()
    assert any(k.startswith("teacher.backbone.") for k in state)
    assert "teacher.roi_heads.box_predictor.cls_score.weight" in state
    other = build_model(cfg)
    other.load_state_dict(state)  # strict
    assert torch.equal(_teacher_param(other), _teacher_param(model))
    assert int(other.ema_updates) == 7


def test_student_only_weights_are_copied_into_the_teacher(tiny_model):
    model, cfg = tiny_model(CFG)
    state = model.state_dict()
    mt_only = ("teacher", "ema_updates")
    student_only = {k: v for k, v in state.items() if k.split(".")[0] not in mt_only}
    student_only["roi_heads.box_predictor.cls_score.weight"] = torch.full_like(
        student_only["roi_heads.box_predictor.cls_score.weight"], 0.25
    )
    other = build_model(cfg)
    other.load_state_dict(student_only)  # strict: the teacher entries are filled in
    assert torch.all(_teacher_param(other) == 0.25)
    assert int(other.ema_updates) == 0


def test_inference_switches_between_teacher_and_student(tiny_model, batch):
    model, cfg = tiny_model(CFG)
    assert cfg.DUALALIGN.MEAN_TEACHER.EVAL_TEACHER and model.eval_teacher
    model.eval()
    images = batch[1][:1]

    def scores():
        with torch.no_grad():
            return model(images)[0]["instances"].scores

    teacher_scores = scores()
    assert len(teacher_scores) > 0
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 1.0)
    assert torch.equal(scores(), teacher_scores)  # the teacher did not change
    model.use_teacher_for_inference(False)
    student_scores = scores()
    assert student_scores.shape != teacher_scores.shape or not torch.allclose(
        student_scores, teacher_scores
    )
    model.use_teacher_for_inference(True)
    assert torch.equal(scores(), teacher_scores)


def test_imagenet_pkl_loads_into_student_and_teacher(tiny_model, tmp_path):
    model, _ = tiny_model(CFG)
    stem = model.backbone.bottom_up.stem.conv1.weight
    path = tmp_path / "R-18.pkl"  # Caffe2 blob names, no "__author__": matching heuristics
    with open(path, "wb") as f:
        pickle.dump({"conv1_w": torch.full_like(stem, 0.5).numpy()}, f)
    AtomicCheckpointer(model).load(str(path))
    assert torch.all(stem == 0.5)
    assert torch.all(model.teacher["backbone"].bottom_up.stem.conv1.weight == 0.5)


def test_teacher_scores_the_students_proposals_in_its_own_view(tiny_model, batch, monkeypatch):
    seen = []
    real = mt_module.box_head_outputs

    def spy(roi_heads, features, boxes):
        seen.append([b.clone() for b in boxes])
        return real(roi_heads, features, boxes)

    monkeypatch.setattr(mt_module, "box_head_outputs", spy)
    model, _ = tiny_model(CFG)
    model.student_flip_prob = 1.0  # every student view mirrored
    model.train()
    model(*batch)
    student_boxes, teacher_boxes = seen
    for s, t in zip(student_boxes, teacher_boxes):
        assert len(s) > 0 and torch.allclose(t, flip_boxes(s, 64))
