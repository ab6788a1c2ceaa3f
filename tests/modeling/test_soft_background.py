"""DUALALIGN.PSEUDO.SOFT_BACKGROUND: the unlabelled background rows of loss_cls_u take the
teacher's class distribution as their target; the foreground rows, the labelled side and the
teacher's single backbone pass are unchanged."""

import pytest
import torch
import torch.nn.functional as F
from test_dualalign_model import build
from test_teacher_pipeline import (
    SUPERVISED,
    TEACHER_CFG,
    one_box_labeller,
    record_sampling,
    step_losses,
)

from dualalign.modeling.soft_background import soft_background_targets, soft_cross_entropy

C = 4  # classes of the test configs


# -- pure parts ------------------------------------------------------------------------------


def test_targets_are_one_hot_for_foreground_and_the_teachers_softmax_for_background():
    y = torch.tensor([1, C, 3, C])
    probs = torch.tensor([[0.1, 0.2, 0.0, 0.0, 0.7], [0.0, 0.0, 0.5, 0.0, 0.5]])
    t = soft_background_targets(y, probs, C)
    assert t[0].tolist() == [0, 1, 0, 0, 0] and t[2].tolist() == [0, 0, 0, 1, 0]
    assert torch.equal(t[1], probs[0]) and torch.equal(t[3], probs[1])
    with pytest.raises(AssertionError):  # one row of probabilities per background row
        soft_background_targets(y, probs[:1], C)


def test_soft_cross_entropy_is_cross_entropy_on_one_hot_targets_and_zero_when_empty():
    logits = torch.randn(6, C + 1, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 4, 4])
    hard = F.cross_entropy(logits, y)
    assert soft_cross_entropy(logits, F.one_hot(y, C + 1).float()).item() == pytest.approx(
        hard.item(), rel=1e-6
    )
    uniform = torch.full((6, C + 1), 1.0 / (C + 1))
    expected = -F.log_softmax(logits, 1).mean(1).mean()
    assert soft_cross_entropy(logits, uniform).item() == pytest.approx(expected.item(), rel=1e-6)
    empty = torch.zeros(0, C + 1, requires_grad=True)
    zero = soft_cross_entropy(empty, torch.zeros(0, C + 1))
    assert zero.item() == 0.0 and zero.requires_grad


# -- in the model ----------------------------------------------------------------------------


def run(monkeypatch, tag, soft, background_logit=None):
    """One step's losses with a fixed labeller; ``background_logit``: the teacher's class
    logits of every box are 0 except background's (None: the real teacher's box head)."""
    torch.manual_seed(0)  # the same initial weights
    _, model = build(
        TEACHER_CFG, f"soft{tag}", DUALALIGN__PSEUDO__BOX_THRESH=0.7,
        DUALALIGN__PSEUDO__SOFT_BACKGROUND=soft,
    )  # fmt: skip
    monkeypatch.setattr(model, "teacher_detections", one_box_labeller(0.8))
    asked, real = [], model.teacher_box_logits

    def teacher_box_logits(features, boxes):
        asked.append(sum(len(b) for b in boxes))
        if background_logit is None:
            return real(features, boxes)
        logits = torch.zeros(asked[-1], C + 1)
        logits[:, C] = background_logit
        return logits

    monkeypatch.setattr(model, "teacher_box_logits", teacher_box_logits)
    sampled = record_sampling(monkeypatch, model.roi_heads)
    losses = step_losses(model)
    return model, losses, asked, sampled[2:]  # the 2 unlabelled images' sampled rows


def test_a_teacher_sure_of_background_gives_the_hard_loss(monkeypatch):
    _, hard, asked_hard, _ = run(monkeypatch, "off", False)
    _, sure, asked, u = run(monkeypatch, "sure", True, background_logit=50.0)
    assert asked_hard == []  # without the switch the teacher scores no proposal
    y = torch.cat([p.gt_classes for p in u])
    n_bg = int((y == C).sum())
    assert asked == [n_bg] and 0 < n_bg < len(y)  # only the background rows, once
    for k in SUPERVISED:
        assert torch.equal(hard[k], sure[k]), k
    assert sure["loss_cls_u"].item() == pytest.approx(hard["loss_cls_u"].item(), rel=1e-5)


def test_an_unsure_teacher_changes_loss_cls_u_and_nothing_else(monkeypatch):
    _, hard, _, _ = run(monkeypatch, "off2", False)
    model, unsure, _, _ = run(monkeypatch, "unsure", True, background_logit=0.0)
    for k in SUPERVISED:
        assert torch.equal(hard[k], unsure[k]), k
    # the background rows' targets are uniform now, not one-hot background
    assert abs(unsure["loss_cls_u"].item() - hard["loss_cls_u"].item()) > 0.01
    unsure["loss_cls_u"].backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_the_teachers_backbone_runs_once_per_step_with_the_switch(monkeypatch):
    torch.manual_seed(0)
    _, model = build(TEACHER_CFG, "softpass", DUALALIGN__PSEUDO__SOFT_BACKGROUND=True)
    calls = []
    model.teacher["backbone"].register_forward_hook(lambda *a: calls.append(1))
    losses = step_losses(model)  # the real teacher: detections and soft targets
    assert len(calls) == 1 and torch.isfinite(losses["loss_cls_u"])
