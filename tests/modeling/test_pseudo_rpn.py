"""DUALALIGN.PSEUDO.RPN_LOSS: the RPN's losses on the unlabelled images against their
pseudo-boxes (class-agnostic, anchors on ignore regions left out); the supervised losses and
every other term are unchanged."""

import torch
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage
from test_teacher_pipeline import SUPERVISED, labelled_step, step_losses

from dualalign.modeling.detector_steps import proposals_without_loss
from dualalign.modeling.pseudo_rpn import (
    ignore_anchors,
    label_and_sample_anchors,
    rpn_head_pass,
    unlabeled_rpn_losses,
)


def test_ignore_anchors_drops_background_anchors_on_ignore_boxes_only():
    anchors = Boxes(torch.tensor([[0.0, 0, 10, 10], [0, 0, 9, 10], [50, 50, 60, 60], [1, 1, 9, 9]]))
    labels = torch.tensor([0, 1, 0, -1])
    ignore = Boxes(torch.tensor([[0.0, 0, 10, 10]]))
    out = ignore_anchors(labels, anchors, ignore, background_below=0.3)
    # anchor 0 overlaps the ignore box (background -> left out); anchor 1 stays an object,
    # anchor 2 stays background (no overlap), anchor 3 stays unsampled
    assert out.tolist() == [-1, 1, 0, -1]
    assert labels.tolist() == [0, 1, 0, -1]  # a copy
    assert ignore_anchors(labels, anchors, Boxes(torch.zeros(0, 4)), 0.3) is labels


def run(monkeypatch, tag, rpn_loss, score=0.8, **opts):
    model, losses, _ = labelled_step(
        monkeypatch, f"rpnu{tag}", score, DUALALIGN__PSEUDO__RPN_LOSS=rpn_loss, **opts
    )
    return model, losses


def test_the_switch_adds_the_two_rpn_losses_and_changes_nothing_else(monkeypatch):
    _, off = run(monkeypatch, "off", False)
    model, on = run(monkeypatch, "on", True)
    assert set(on) - set(off) == {"loss_rpn_cls_u", "loss_rpn_loc_u"}
    for k in off:
        assert torch.equal(off[k], on[k]), k
    assert on["loss_rpn_cls_u"] > 0 and on["loss_rpn_loc_u"] > 0  # the pseudo-box is an object
    assert {"loss_rpn_cls_u", "loss_rpn_loc_u"} <= set(model.semi_loss_names)  # lambda(t)
    (on["loss_rpn_cls_u"] + on["loss_rpn_loc_u"]).backward()
    head = model.proposal_generator.rpn_head
    assert head.objectness_logits.weight.grad.abs().sum() > 0
    assert head.anchor_deltas.weight.grad.abs().sum() > 0
    assert model.roi_heads.box_predictor.cls_score.weight.grad is None  # the RPN's terms only
    assert all(p.grad is None for p in model.teacher.parameters())


def test_an_ignore_region_is_no_object_for_the_rpn(monkeypatch):
    # the one detection (0.5) is below BOX_THRESH 0.7 and above IGNORE_THRESH 0.3
    _, ignored = run(monkeypatch, "ign", True, score=0.5, DUALALIGN__PSEUDO__IGNORE_THRESH=0.3)
    _, none = run(monkeypatch, "none", True, score=0.1)
    assert ignored["loss_rpn_loc_u"].item() == 0.0 and none["loss_rpn_loc_u"].item() == 0.0
    # all-background samples either way, but the anchors on the ignore region are left out
    assert ignored["loss_rpn_cls_u"].item() != none["loss_rpn_cls_u"].item()


def test_the_switch_works_without_any_roi_term_on_unlabelled_images(monkeypatch):
    _, losses = run(monkeypatch, "alone", True, DUALALIGN__PSEUDO__CLS_LOSS=False,
                    DUALALIGN__LOSS__PML_UNLABELED=False, DUALALIGN__LOSS__PMB_UNLABELED=False)
    assert losses["loss_rpn_loc_u"] > 0 and "loss_cls_u" not in losses
    for k in SUPERVISED:
        assert torch.isfinite(losses[k]), k


def test_one_head_pass_gives_the_rpns_own_losses_and_proposals(monkeypatch):
    model, _ = run(monkeypatch, "pass", True)
    rpn = model.proposal_generator
    torch.manual_seed(1)
    images = ImageList(torch.randn(2, 3, 64, 64), [(64, 64), (60, 64)])
    with torch.no_grad():
        features = model.backbone(images.tensor)
    gt = Instances((64, 64), gt_boxes=Boxes(torch.tensor([[8.0, 8, 30, 30]])),
                   gt_classes=torch.tensor([0]))  # fmt: skip
    head = rpn_head_pass(rpn, features)
    with EventStorage():
        torch.manual_seed(2)
        own = rpn(images, features, [gt, gt])[1]  # detectron2's forward, same anchor sample
        torch.manual_seed(2)
        ours = unlabeled_rpn_losses(rpn, head, [gt, gt])  # no ignore region: the same sample
    assert {k: v.item() for k, v in ours.items()} == {f"{k}_u": v.item() for k, v in own.items()}
    again = proposals_without_loss(rpn, images, features)
    shared = proposals_without_loss(rpn, images, features, head)
    for a, b in zip(again, shared):
        assert torch.equal(a.proposal_boxes.tensor, b.proposal_boxes.tensor)
        assert torch.equal(a.objectness_logits, b.objectness_logits)


def test_the_rpn_head_runs_once_on_the_unlabelled_maps(monkeypatch):
    batches = {}
    for tag, rpn_loss in (("off", False), ("on", True)):
        model, _ = run(monkeypatch, f"count{tag}", rpn_loss)  # one step done; one more:
        sizes = []
        head = model.proposal_generator.rpn_head
        handle = head.register_forward_hook(lambda m, inp, out: sizes.append(len(inp[0][0])))
        step_losses(model)
        handle.remove()
        batches[tag] = sizes
    # labelled images, then the unlabelled ones: for their proposals and, with the switch,
    # their RPN losses from the same pass (the teacher's own RPN is another module)
    assert batches["on"] == batches["off"] == [2, 2]


def test_anchor_labels_are_detectron2s_with_many_pseudo_boxes(monkeypatch):
    """label_and_sample_anchors (blocked IoU) gives RPN.label_and_sample_anchors' labels and
    matched boxes, at the teacher pipeline's worst case of 100 boxes per image."""
    model, _ = run(monkeypatch, "lab", True)
    rpn = model.proposal_generator
    with torch.no_grad():
        features = model.backbone(torch.randn(2, 3, 128, 128))
    anchors = rpn_head_pass(rpn, features).anchors
    g = torch.Generator().manual_seed(3)
    gts = []
    for n in (100, 1, 0):
        xy = torch.rand(n, 2, generator=g) * 100
        gts.append(Instances((128, 128), gt_boxes=Boxes(torch.cat([xy, xy + 4 + 30 * torch.rand(
            n, 2, generator=g)], 1)), gt_classes=torch.zeros(n, dtype=torch.long)))  # fmt: skip
    torch.manual_seed(4)
    theirs = rpn.label_and_sample_anchors(anchors, gts)
    torch.manual_seed(4)
    ours = label_and_sample_anchors(rpn, Boxes.cat(anchors), gts)
    for t, o in zip(theirs, ours):
        for x, y in zip(t, o):
            assert torch.equal(x, y)
    assert (ours[0][0] == 1).sum() > 0 and (ours[0][2] == 1).sum() == 0  # objects; none
