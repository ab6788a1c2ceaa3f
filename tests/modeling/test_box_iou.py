"""pairwise_iou_blocked: detectron2's pairwise_iou, value for value, in column blocks."""

import pytest
import torch
from detectron2.structures import Boxes, pairwise_iou

from dualalign.modeling.box_iou import pairwise_iou_blocked


def boxes(n, seed, size=256.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * 60
    t = torch.cat([xy, xy + wh], 1)
    t[n - n // 10 :, 2:] = t[n - n // 10 :, :2]  # some zero-area boxes, last
    return Boxes(t)


@pytest.mark.parametrize("block", [0, 1, 7, 2048, 10**6])
def test_equals_detectron2_bit_for_bit(block):
    a, b = boxes(100, 0), boxes(5000, 1)
    b.tensor[:3] = a.tensor[:3]  # identical pairs (IoU 1), touching edges next
    b.tensor[3] = torch.cat([a.tensor[3, 2:], a.tensor[3, 2:] + 5])
    ours = pairwise_iou_blocked(a, b, block=block)
    theirs = pairwise_iou(a, b)
    assert ours.shape == (100, 5000) and torch.equal(ours, theirs)
    assert (ours[torch.arange(3), torch.arange(3)] == 1).all() and ours[3, 3] == 0


def test_empty_sets():
    a, none = boxes(4, 2), Boxes(torch.zeros(0, 4))
    assert pairwise_iou_blocked(none, a).shape == (0, 4)
    assert pairwise_iou_blocked(a, none).shape == (4, 0)
