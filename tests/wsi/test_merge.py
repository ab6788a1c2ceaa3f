"""Merging tile detections: one cell on a tile border seen twice gives one slide detection, and
the tile-pair merge equals one NMS over the whole slide and finds every overlapping pair."""

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from dualalign.wsi.merge import (
    covered_by_complete,
    drop_covered_truncated,
    merge_detections,
    offset_boxes,
    overlapping_pairs,
    tiled_nms,
    touches_inner_edge,
)
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


def _brute_pairs(regions):
    out = []
    for a in range(len(regions)):
        for b in range(a + 1, len(regions)):
            ra, rb = regions[a], regions[b]
            if min(ra[2], rb[2]) > max(ra[0], rb[0]) and min(ra[3], rb[3]) > max(ra[1], rb[1]):
                out.append((a, b))
    return out


@pytest.mark.parametrize("overlap", [0, 30, 70])  # 70: tiles two apart overlap too
def test_overlapping_pairs_matches_brute_force(overlap):
    regions = tile_grid(530, 310, 100, overlap).astype(float) * 2.5 + 7  # any affine frame
    assert overlapping_pairs(regions).tolist() == [list(p) for p in _brute_pairs(regions)]
    assert overlapping_pairs(np.zeros((0, 4))).shape == (0, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiled_nms_equals_global_nms(seed):
    rng = np.random.default_rng(seed)
    regions = tile_grid(430, 340, 100, 30).astype(float)
    boxes, scores, classes = [], [], []
    for region in regions:
        n = int(rng.integers(0, 40))
        xy = rng.uniform(region[:2] - 20, region[2:], size=(n, 2))
        b = np.concatenate([xy, xy + rng.uniform(4, 40, size=(n, 2))], axis=1)
        b[:, 0::2] = b[:, 0::2].clip(region[0], region[2])  # boxes stay inside their tile
        b[:, 1::2] = b[:, 1::2].clip(region[1], region[3])
        boxes.append(b)
        classes.append(rng.integers(0, 3, size=n))
    all_scores = rng.permutation(sum(len(c) for c in classes)) / 1000.0 + 0.01  # distinct
    cuts = np.cumsum([len(c) for c in classes])[:-1]
    scores = np.split(all_scores, cuts)

    keep = tiled_nms(boxes, scores, classes, regions, overlapping_pairs(regions), 0.3)
    expected = merge_detections(np.concatenate(boxes), all_scores, np.concatenate(classes), 0.3)
    assert sorted(np.flatnonzero(np.concatenate(keep)).tolist()) == sorted(expected.tolist())
    assert 0 < len(expected) < len(all_scores)  # the NMS did suppress something


def test_tiled_nms_without_boxes():
    regions = tile_grid(200, 100, 100, 20).astype(float)
    empty = [np.zeros((0, 4))] * len(regions)
    none = [np.zeros(0)] * len(regions)
    keep = tiled_nms(empty, none, none, regions, overlapping_pairs(regions))
    assert [len(k) for k in keep] == [0] * len(regions)


def test_drop_covered_truncated_uses_overlapping_tiles_only():
    regions = np.array([[0, 0, 256, 256], [192, 0, 448, 256], [600, 0, 856, 256]], float)
    cut = np.array([[240.0, 100, 256, 150]])  # tile 0 sees the cell cut at x = 256
    whole = np.array([[240.0, 100, 290, 150]])  # tile 1 sees it whole
    keep = drop_covered_truncated(
        [cut, whole, whole + [600, 0, 600, 0]],
        [np.array([1])] * 3,
        [np.array([True]), np.array([False]), np.array([False])],
        regions,
        overlapping_pairs(regions),
    )
    assert [k.tolist() for k in keep] == [[False], [True], [True]]


def test_covered_by_complete_only_flags_truncated_same_class():
    boxes = np.array([[240, 100, 256, 150], [240, 100, 256, 150], [0, 0, 10, 10]], float)
    truncated = np.array([True, True, False])
    others = np.array([[240, 100, 290, 150]], float)
    flagged = covered_by_complete(boxes, np.array([1, 0, 1]), truncated, others, np.array([1]))
    assert flagged.tolist() == [True, False, False]  # class 0 differs; box 2 is complete
    assert (
        covered_by_complete(boxes, np.zeros(3), truncated, np.zeros((0, 4)), np.zeros(0)).tolist()
        == [False] * 3
    )
