"""DUALALIGN.PSEUDO.BOX_REG_LOSS: the ROI heads' box regression on the unlabelled proposals
matched to a pseudo-box; every other loss of the step is unchanged."""

import torch
from test_teacher_pipeline import SUPERVISED, labelled_step


def run(monkeypatch, tag, box_reg, score=0.8, **opts):
    return labelled_step(
        monkeypatch, f"boxregu{tag}", score, DUALALIGN__PSEUDO__BOX_REG_LOSS=box_reg, **opts
    )


def test_the_switch_adds_loss_box_reg_u_and_changes_nothing_else(monkeypatch):
    _, off, _ = run(monkeypatch, "off", False)
    model, on, u = run(monkeypatch, "on", True)
    assert set(on) - set(off) == {"loss_box_reg_u"}
    for k in off:
        assert torch.equal(off[k], on[k]), k
    assert any((p.gt_classes == 1).any() for p in u)  # rows matched to the pseudo-box
    assert on["loss_box_reg_u"] > 0 and "loss_box_reg_u" in model.semi_loss_names
    on["loss_box_reg_u"].backward()
    predictor = model.roi_heads.box_predictor
    assert predictor.bbox_pred.weight.grad.abs().sum() > 0
    assert predictor.cls_score.weight.grad is None  # regression only
    assert all(p.grad is None for p in model.teacher.parameters())


def test_no_pseudo_box_means_no_regression_target(monkeypatch):
    _, losses, u = run(monkeypatch, "none", True, score=0.1)  # below BOX_THRESH 0.7
    assert all((p.gt_classes == 4).all() for p in u)  # background rows only
    assert losses["loss_box_reg_u"].item() == 0.0


def test_the_switch_alone_reads_the_unlabelled_proposals(monkeypatch):
    _, losses, _ = run(monkeypatch, "alone", True, DUALALIGN__PSEUDO__CLS_LOSS=False,
                       DUALALIGN__LOSS__PML_UNLABELED=False, DUALALIGN__LOSS__PMB_UNLABELED=False)
    assert losses["loss_box_reg_u"] > 0 and "loss_cls_u" not in losses
    for k in SUPERVISED:
        assert torch.isfinite(losses[k]), k
