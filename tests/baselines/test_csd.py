"""CSDRCNN: training losses, gradients, weight schedule and plain inference on a tiny model."""

import math

import pytest
import torch
from detectron2.structures import Instances

import dualalign.baselines.csd as csd_module
from dualalign.baselines.consistency import flip_boxes

SUPERVISED = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}


def test_training_forward_gives_finite_supervised_and_csd_losses(tiny_model, batch, event_storage):
    # BG_THRESH 0 keeps every proposal, so the consistency terms are not trivially 0 at init.
    model, _ = tiny_model("csd_R18_cpu.yaml", "DUALALIGN.CSD.BG_THRESH", 0.0)
    model.train()
    losses = model(*batch)
    assert set(losses) == SUPERVISED | {"loss_csd_cls", "loss_csd_loc"}
    assert set(model.semi_loss_names) == {"loss_csd_cls", "loss_csd_loc"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_csd_cls"] > 0 and losses["loss_csd_loc"] > 0
    assert event_storage.history("csd/kept_fraction").latest() == 1.0
    (losses["loss_csd_cls"] + losses["loss_csd_loc"]).backward()
    stem = model.backbone.bottom_up.stem.conv1.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0  # through both views' features


def test_background_elimination_gives_zero_with_graph(tiny_model, batch):
    # At initialisation every class has ~1/(C+1) probability: nothing passes 0.5.
    model, _ = tiny_model("csd_R18_cpu.yaml")
    model.train()
    losses = model(*batch)
    assert losses["loss_csd_cls"].item() == 0.0 and losses["loss_csd_loc"].item() == 0.0
    assert losses["loss_csd_cls"].requires_grad
    sum(losses.values()).backward()


def test_labeled_only_batch_is_plain_faster_rcnn(tiny_model, batch):
    model, _ = tiny_model("csd_R18_cpu.yaml")
    model.train()
    assert set(model(batch[0])) == SUPERVISED


def test_eval_forward_gives_instances(tiny_model, batch):
    model, _ = tiny_model("csd_R18_cpu.yaml")
    model.eval()
    with torch.no_grad():
        out = model(batch[1])
    assert len(out) == 2 and all(isinstance(o["instances"], Instances) for o in out)
    assert len(out[0]["instances"]) > 0  # SCORE_THRESH_TEST 0 in the tiny config


def test_weight_schedule(tiny_model):
    # csd_R18_cpu.yaml: ramp-up 500, ramp-down over the last 333 of MAX_ITER 2000, weight 1.
    model, cfg = tiny_model("csd_R18_cpu.yaml", "DUALALIGN.CSD.WEIGHT", 2.0)
    assert (cfg.SOLVER.MAX_ITER, cfg.DUALALIGN.CSD.RAMPUP_ITERS) == (2000, 500)
    assert cfg.DUALALIGN.CSD.RAMPDOWN_ITERS == 333
    w = model.semi_loss_weight
    assert w(0) == pytest.approx(2.0 * math.exp(-5.0))
    assert w(250) == pytest.approx(2.0 * math.exp(-5.0 * 0.5**2))
    assert w(500) == w(1000) == w(2000 - 333) == 2.0
    t = 2000 - 100
    assert w(t) == pytest.approx(2.0 * math.exp(-12.5 * (1.0 - 100 / 333) ** 2))
    assert w(2000) == pytest.approx(2.0 * math.exp(-12.5))


def test_tail_iters_ends_the_ramp_down_early_and_holds_the_floor(tiny_model):
    # MAX_ITER 2000, ramp-down 333: with a tail of 300 it runs over [1367, 1700], then the floor.
    base, _ = tiny_model("csd_R18_cpu.yaml")
    model, _ = tiny_model("csd_R18_cpu.yaml", "DUALALIGN.CSD.TAIL_ITERS", 300)
    w, w0 = model.semi_loss_weight, base.semi_loss_weight
    assert w(1000) == w0(1000) == w(1700 - 333) == 1.0
    assert w(1600) == pytest.approx(w0(1900))  # the same ramp, 300 iterations earlier
    floor = math.exp(-12.5)
    assert w(1700) == w(1850) == w(2000) == pytest.approx(floor)
    assert w0(1850) > 100 * floor  # without the tail the weight is still on at 1850


@pytest.mark.parametrize(
    "opts",
    [
        ["DUALALIGN.CSD.TAIL_ITERS", 2000],  # not below MAX_ITER
        ["DUALALIGN.CSD.TAIL_ITERS", -1],
        ["DUALALIGN.CSD.RAMPDOWN_ITERS", 0, "DUALALIGN.CSD.TAIL_ITERS", 300],  # changes nothing
        ["DUALALIGN.CSD.RAMPDOWN_ITERS", -1],
        ["DUALALIGN.CSD.RAMPUP_ITERS", -1],
    ],
)
def test_schedule_lengths_are_refused_with_the_key_named(tiny_model, opts):
    with pytest.raises(ValueError, match=opts[-2].replace(".", r"\.")):
        tiny_model("csd_R18_cpu.yaml", *opts)


def test_flipped_view_is_scored_on_the_mirrored_proposals(tiny_model, batch, monkeypatch):
    seen = []
    real = csd_module.box_head_outputs

    def spy(roi_heads, features, boxes):
        seen.append([b.clone() for b in boxes])
        return real(roi_heads, features, boxes)

    monkeypatch.setattr(csd_module, "box_head_outputs", spy)
    model, _ = tiny_model("csd_R18_cpu.yaml")
    model.train()
    model(*batch)
    (boxes,) = seen
    assert len(boxes) == 4  # x1, x2, x1', x2'
    for original, mirrored in zip(boxes[:2], boxes[2:]):
        assert 0 < len(original) <= 16  # DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE
        assert torch.allclose(mirrored, flip_boxes(original, 64))
