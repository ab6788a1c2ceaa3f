"""The tile-pair merge equals one NMS over the whole slide, and finds every overlapping pair."""

import numpy as np
import pytest

from dualalign.inference.tile_merge import (
    covered_by_complete,
    drop_covered_truncated,
    overlapping_pairs,
    tiled_nms,
)
from dualalign.wsi.merge import merge_detections
from dualalign.wsi.tiling import tile_grid


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
