"""Merging tile detections: one cell on a tile border seen twice gives one slide detection."""

import numpy as np
import torch
from torchvision.ops import box_iou

from dualalign.wsi.merge import merge_detections, offset_boxes, touches_inner_edge
from dualalign.wsi.tiling import tile_grid, tile_origins_level0

DOWNSAMPLE = 2.0  # tiles are read at level 1 of a slide


def _border_cell():
    """A cell straddling the right edge of tile A, seen whole by tile B (overlap 64).

    Returns (tile_a, tile_b) on level 1 and the cell's tile-local boxes in A and B.
    """
    tiles = tile_grid(2000, 256, 256, 64)
    tile_a, tile_b = tiles[1], tiles[2]  # x0 = 192 and 384 on level 1
    cell = np.array([400.0, 100.0, 460.0, 150.0])  # level-1 pixels; A ends at x = 448
    local_a = cell - np.tile(tile_a[:2], 2)
    local_a[2] = min(local_a[2], 256.0)  # A sees the cell cut at its border
    local_b = cell - np.tile(tile_b[:2], 2)
    return tile_a, tile_b, local_a[None], local_b[None]


def test_offset_boxes_numpy_and_torch():
    boxes = np.array([[0, 0, 10, 10], [5, 6, 7, 8]])
    out = offset_boxes(boxes, 100, 50, 2.0)
    np.testing.assert_allclose(out, [[100, 50, 120, 70], [110, 62, 114, 66]])
    out_t = offset_boxes(torch.tensor(boxes), 100, 50, 2.0)
    assert isinstance(out_t, torch.Tensor) and out_t.is_floating_point()
    np.testing.assert_allclose(out_t.numpy(), out)
    np.testing.assert_array_equal(boxes, [[0, 0, 10, 10], [5, 6, 7, 8]])  # input unchanged


def test_border_cell_seen_by_two_tiles_gives_one_detection():
    tile_a, tile_b, local_a, local_b = _border_cell()
    (ax, ay), (bx, by) = tile_origins_level0(np.stack([tile_a, tile_b]), DOWNSAMPLE)
    slide_a = offset_boxes(local_a, ax, ay, DOWNSAMPLE)
    slide_b = offset_boxes(local_b, bx, by, DOWNSAMPLE)
    boxes = np.concatenate([slide_a, slide_b])
    iou = box_iou(torch.tensor(boxes[:1]), torch.tensor(boxes[1:])).item()
    assert 0.7 < iou < 0.9
    np.testing.assert_allclose(slide_b[0], [800, 200, 920, 300])  # full cell, level 0
    keep = merge_detections(boxes, np.array([0.7, 0.9]), np.array([1, 1]), iou_thresh=0.5)
    assert isinstance(keep, np.ndarray)
    np.testing.assert_array_equal(keep, [1])  # the higher score survives


def test_truncated_box_flagged_at_inner_edge_only():
    tile_a, tile_b, local_a, local_b = _border_cell()
    assert touches_inner_edge(local_a, tile_a, 2000, 256).tolist() == [True]
    assert touches_inner_edge(local_b, tile_b, 2000, 256).tolist() == [False]
    # The slide's own border is not an inner edge: nothing lies beyond it.
    at_border = np.array([[200.0, 0.0, 256.0, 40.0]])
    last = tile_grid(2000, 256, 256, 64)[-1]
    assert touches_inner_edge(at_border, last, 2000, 256).tolist() == [False]
    assert touches_inner_edge(at_border, last, 3000, 256).tolist() == [True]


def test_different_classes_at_same_place_both_kept():
    boxes = np.array([[100.0, 100.0, 140.0, 140.0], [101.0, 100.0, 141.0, 140.0]])
    keep = merge_detections(boxes, np.array([0.9, 0.8]), np.array([0, 1]))
    assert sorted(keep.tolist()) == [0, 1]


def test_far_apart_boxes_kept_sorted_by_score():
    boxes = np.array(
        [[0.0, 0.0, 40.0, 40.0], [5000.0, 5000.0, 5040.0, 5040.0], [9e4, 7e4, 9e4 + 40, 7e4 + 40]]
    )
    keep = merge_detections(boxes, np.array([0.5, 0.9, 0.7]), np.array([2, 2, 2]))
    np.testing.assert_array_equal(keep, [1, 2, 0])


def test_torch_in_torch_out_and_empty():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0]])
    keep = merge_detections(boxes, torch.tensor([0.2, 0.3]), torch.tensor([0, 0]))
    assert isinstance(keep, torch.Tensor) and keep.tolist() == [1]
    empty = merge_detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int))
    assert empty.shape == (0,)
