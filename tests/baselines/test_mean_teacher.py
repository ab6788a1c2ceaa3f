"""MeanTeacherRCNN: EMA math, frozen teacher, checkpoint round trip, teacher/student inference."""

import pickle

import torch
from detectron2.modeling import build_model
from detectron2.solver.build import get_default_optimizer_params

import dualalign.baselines.mean_teacher as mt_module
import dualalign.modeling.semi_rcnn as semi_rcnn
from dualalign.baselines.consistency import flip_boxes
from dualalign.engine.checkpoint import AtomicCheckpointer
from dualalign.modeling.rampup import sigmoid_rampup
from dualalign.modeling.teacher import ema_update_

CFG = "mean_teacher_R18_cpu.yaml"


def _teacher_param(model):
    return model.teacher["roi_heads"].box_predictor.cls_score.weight


def _stem_norm(net):
    return net.bottom_up.stem.conv1.norm


def test_after_step_is_the_ema_of_parameters_and_bn_statistics(tiny_model):
    model, cfg = tiny_model(CFG)
    assert cfg.DUALALIGN.TEACHER.EMA_DECAY == 0.999 and cfg.DUALALIGN.TEACHER.START_ITER == 0
    a = cfg.DUALALIGN.TEACHER.EMA_DECAY
    student = model.roi_heads.box_predictor.cls_score.weight
    s_norm, t_norm = _stem_norm(model.backbone), _stem_norm(model.teacher["backbone"])
    with torch.no_grad():
        student.add_(1.0)  # as if an optimizer step had moved the student
        s_norm.running_mean.add_(3.0)
        s_norm.num_batches_tracked.fill_(5)
    teacher_before = _teacher_param(model).clone()
    mean_before = t_norm.running_mean.clone()
    model.after_step()
    # A constant decay: no warm-up averaging once the teacher exists.
    expected = a * teacher_before + (1.0 - a) * student.detach()
    assert torch.allclose(_teacher_param(model), expected, atol=1e-6)
    # Buffer policy: float buffers follow the same EMA, integer buffers are copied.
    expected_mean = a * mean_before + (1.0 - a) * s_norm.running_mean
    assert torch.allclose(t_norm.running_mean, expected_mean, atol=1e-6)
    assert not torch.allclose(t_norm.running_mean, s_norm.running_mean)
    assert int(t_norm.num_batches_tracked) == 5


def test_ema_update_is_a_copy_at_decay_zero_and_keeps_constants():
    t, s = [torch.zeros(3), torch.tensor(1)], [torch.arange(3.0), torch.tensor(4)]
    ema_update_(t, s, 0.0)
    assert torch.equal(t[0], s[0]) and int(t[1]) == 4
    const_t, const_s = [torch.full((2,), 2.0)], [torch.full((2,), 2.0)]
    ema_update_(const_t, const_s, 0.9)  # FrozenBN's buffers: EMA of a constant is the constant
    assert torch.allclose(const_t[0], torch.full((2,), 2.0))


def test_teacher_starts_as_an_exact_copy_at_start_iter(tiny_model, batch):
    model, cfg = tiny_model(CFG, "DUALALIGN.TEACHER.START_ITER", 3)
    model.train()
    assert not model.teacher.is_started
    teacher_before = _teacher_param(model).clone()
    with torch.no_grad():  # the student trains during the burn-in
        model.roi_heads.box_predictor.cls_score.weight.add_(1.0)
        _stem_norm(model.backbone).running_var.mul_(2.0)
    for it in range(3):
        model.before_step(it)
        assert model.semi_loss_weight(it) == 0.0
        losses = model(*batch)
        assert "loss_mt_cons" not in losses  # no unsupervised term before the start
        model.after_step()  # no EMA either
        assert torch.equal(_teacher_param(model), teacher_before)
    model.before_step(3)
    assert model.teacher.is_started
    student_state = {k: v for k, v in model.state_dict().items() if not k.startswith("teacher.")}
    teacher_state = model.teacher.state_dict()
    for key, value in student_state.items():
        if key.split(".")[0] in model.teacher:
            assert torch.equal(teacher_state[key], value), key  # parameters and buffers
    assert "loss_mt_cons" in model(*batch)
    # The ramp-up counts from the start: its first value at START_ITER, its end T later.
    ramp, weight = cfg.DUALALIGN.MEAN_TEACHER.RAMPUP_ITERS, cfg.DUALALIGN.MEAN_TEACHER.WEIGHT
    assert model.semi_loss_weight(3) == sigmoid_rampup(0, ramp, weight)
    assert model.semi_loss_weight(3 + ramp) == weight > model.semi_loss_weight(2 + ramp)


def test_start_iter_0_makes_the_teacher_a_copy_of_the_loaded_checkpoint(tiny_model, tmp_path):
    source, cfg = tiny_model(CFG)
    with torch.no_grad():
        source.roi_heads.box_predictor.cls_score.weight.fill_(0.125)
    path = tmp_path / "supervised.pth"
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("teacher.")}
    torch.save({"model": state}, path)
    model, _ = tiny_model(CFG)
    AtomicCheckpointer(model).load(str(path))
    model.before_step(0)
    assert torch.all(_teacher_param(model) == 0.125)


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
    model.teacher.started.fill_(False)
    state = model.state_dict()
    assert any(k.startswith("teacher.backbone.") for k in state)
    assert "teacher.roi_heads.box_predictor.cls_score.weight" in state
    other = build_model(cfg)
    other.load_state_dict(state)  # strict
    assert torch.equal(_teacher_param(other), _teacher_param(model))
    assert not other.teacher.is_started  # where the schedule stands is restored too


def test_student_only_weights_are_copied_into_the_teacher(tiny_model):
    model, cfg = tiny_model(CFG)
    state = model.state_dict()
    student_only = {k: v for k, v in state.items() if not k.startswith("teacher.")}
    student_only["roi_heads.box_predictor.cls_score.weight"] = torch.full_like(
        student_only["roi_heads.box_predictor.cls_score.weight"], 0.25
    )
    other = build_model(cfg)
    other.load_state_dict(student_only)  # strict: the teacher entries are filled in
    assert torch.all(_teacher_param(other) == 0.25)
    assert other.teacher.is_started  # START_ITER 0: that copy is the teacher


def test_inference_switches_between_teacher_and_student(tiny_model, batch):
    model, cfg = tiny_model(CFG)
    assert cfg.DUALALIGN.TEACHER.EVAL_TEACHER and model.eval_teacher
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

    monkeypatch.setattr(mt_module, "box_head_outputs", spy)  # the student's call
    monkeypatch.setattr(semi_rcnn, "box_head_outputs", spy)  # the teacher's (teacher_logits)
    model, _ = tiny_model(CFG)
    model.student_flip_prob = 1.0  # every student view mirrored
    model.train()
    model(*batch)
    student_boxes, teacher_boxes = seen
    for s, t in zip(student_boxes, teacher_boxes):
        assert len(s) > 0 and torch.allclose(t, flip_boxes(s, 64))
