"""The baselines' consistency math (dualalign/baselines/consistency.py) against hand values."""

import math

import pytest
import torch

from dualalign.baselines.consistency import (
    csd_losses,
    flip_boxes,
    flip_deltas,
    foreground_mask,
    js_divergence,
    softmax_mse,
)


def _logits(*probs):
    """Logits whose softmax is each given distribution (one row per distribution)."""
    return torch.tensor(probs, dtype=torch.float64).log().float()


def test_js_of_identical_distributions_is_zero():
    x = torch.randn(5, 4)
    assert torch.allclose(js_divergence(x, x), torch.zeros(5), atol=1e-6)
    assert torch.allclose(js_divergence(x, x + 3.0), torch.zeros(5), atol=1e-6)  # shift-invariant


def test_js_two_class_hand_value():
    p, q = _logits([0.75, 0.25]), _logits([0.25, 0.75])
    # m = (0.5, 0.5); KL(p||m) = KL(q||m) = 0.75 ln 1.5 + 0.25 ln 0.5.
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert js_divergence(p, q).item() == pytest.approx(expected, abs=1e-6)
    assert js_divergence(q, p).item() == pytest.approx(expected, abs=1e-6)


def test_js_disjoint_distributions_is_ln2_without_nan():
    p = torch.tensor([[60.0, -60.0]])
    q = torch.tensor([[-60.0, 60.0]], requires_grad=True)
    js = js_divergence(p, q)
    assert js.item() == pytest.approx(math.log(2.0), abs=1e-5)
    js.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_softmax_mse_hand_value_and_teacher_detached():
    s = _logits([0.75, 0.25]).requires_grad_(True)
    t = _logits([0.25, 0.75]).requires_grad_(True)
    out = softmax_mse(s, t)
    assert out.shape == (1,)
    assert out.item() == pytest.approx(0.25, abs=1e-6)  # mean(0.5^2, 0.5^2)
    out.sum().backward()
    assert s.grad is not None and t.grad is None


def test_flip_boxes_hand_value_and_involution():
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 64.0, 8.0]])
    flipped = flip_boxes(boxes, 64)
    assert torch.equal(flipped, torch.tensor([[34.0, 5.0, 54.0, 25.0], [0.0, 0.0, 64.0, 8.0]]))
    assert torch.equal(flip_boxes(flipped, 64), boxes)
    per_row = flip_boxes(boxes, torch.tensor([64.0, 100.0]))
    assert per_row[1].tolist() == [36.0, 0.0, 100.0, 8.0]


def test_flip_deltas_negates_dx_only():
    d = torch.arange(1.0, 9.0).reshape(1, 8)  # two classes: (1,2,3,4), (5,6,7,8)
    assert flip_deltas(d).tolist() == [[-1.0, 2.0, 3.0, 4.0, -5.0, 6.0, 7.0, 8.0]]
    assert torch.equal(flip_deltas(flip_deltas(d)), d)
    assert flip_deltas(torch.zeros(0, 4)).shape == (0, 4)


def test_foreground_mask_uses_best_foreground_probability():
    # Background is the last column (detectron2). Rows: fg 0.9; fg split 0.45/0.45; bg 0.8.
    logits = _logits([0.9, 0.05, 0.05], [0.45, 0.45, 0.1], [0.1, 0.1, 0.8])
    assert foreground_mask(logits, 0.5).tolist() == [True, False, False]
    assert foreground_mask(logits, 0.4).tolist() == [True, True, False]


def test_csd_losses_keep_only_foreground_rows():
    logits = _logits([0.9, 0.05, 0.05], [0.1, 0.1, 0.8])
    logits_flip = _logits([0.6, 0.2, 0.2], [0.8, 0.1, 0.1])  # row 1 would dominate if kept
    deltas = torch.tensor([[1.0, 2.0, 3.0, 4.0], [9.0, 9.0, 9.0, 9.0]])
    # Flipped view predicts the mirrored box: dx negated, the rest off by 1.
    deltas_flip = torch.tensor([[-1.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    out = csd_losses(logits, logits_flip, deltas, deltas_flip, bg_thresh=0.5)
    assert out["loss_csd_cls"].item() == pytest.approx(
        js_divergence(logits[:1], logits_flip[:1]).item(), abs=1e-7
    )
    assert out["loss_csd_loc"].item() == pytest.approx(3.0 / 4.0)  # (0 + 1 + 1 + 1) / 4


def test_csd_losses_zero_with_graph_when_nothing_kept_or_empty():
    for n in (0, 3):
        logits = torch.zeros(n, 3)
        logits[:, -1] = 5.0  # background everywhere
        logits.requires_grad_(True)
        deltas = torch.randn(n, 8, requires_grad=True)
        out = csd_losses(logits, logits.clone(), deltas, deltas.clone(), bg_thresh=0.5)
        total = out["loss_csd_cls"] + out["loss_csd_loc"]
        assert total.item() == 0.0 and not torch.isnan(total)
        total.backward()
        assert torch.equal(logits.grad, torch.zeros_like(logits))
