"""Merging the detections of overlapping tiles, in time linear in the number of tiles.

A slide at level 0 has tens of thousands of tiles and up to millions of raw detections, too
many for one NMS over the whole slide (torchvision's CPU NMS compares every kept box with every
other: 110k boxes take ~10 s, a million hours). But a box lies inside its tile, so two boxes
can only overlap when their tiles do, and only inside the two tiles' common region. Both steps
below therefore compare boxes of one tile, or of two overlapping tiles near their common region:

1. ``drop_covered_truncated``: drop a box cut by its tile's inner edge when a box of the same
   class from an overlapping tile, not cut, covers most of it (``covered_by_complete``).
2. ``tiled_nms``: class-wise greedy NMS whose result equals ``merge_detections`` (one NMS over
   all boxes), computed from those local comparisons only.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = [
    "covered_by_complete",
    "drop_covered_truncated",
    "intersects",
    "overlapping_pairs",
    "tiled_nms",
]


def overlapping_pairs(regions: np.ndarray) -> np.ndarray:
    """Pairs of regions that overlap with positive area.

    Args:
        regions (np.ndarray[K, 4]): ``(x0, y0, x1, y1)`` squares of one side (tiles).

    Returns:
        np.ndarray[P, 2] int64: index pairs ``(a, b)`` with ``a < b``, sorted.
    """
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 4)
    if not len(regions):
        return np.zeros((0, 2), dtype=np.int64)
    side = float((regions[:, 2] - regions[:, 0]).max())
    cells = np.floor(regions[:, :2] / side).astype(np.int64)  # a tile overlaps only tiles
    buckets: Dict[Tuple[int, int], List[int]] = {}  # in its own or the 8 adjacent cells
    for k, (cx, cy) in enumerate(cells):
        buckets.setdefault((int(cx), int(cy)), []).append(k)
    pairs = []
    for k, (cx, cy) in enumerate(cells):
        near = [
            j
            for dx in (-1, 0, 1)
            for dy in (-1, 0, 1)
            for j in buckets.get((int(cx) + dx, int(cy) + dy), ())
            if j > k
        ]
        if not near:
            continue
        near = np.array(near)
        a, b = regions[k], regions[near]
        wide = np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0])
        high = np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1])
        pairs.extend((k, int(j)) for j in near[(wide > 0) & (high > 0)])
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def intersects(boxes: np.ndarray, region: Sequence[float]) -> np.ndarray:
    """Which XYXY boxes overlap a region with positive area (np.ndarray[N] bool)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (np.minimum(boxes[:, 2], region[2]) > np.maximum(boxes[:, 0], region[0])) & (
        np.minimum(boxes[:, 3], region[3]) > np.maximum(boxes[:, 1], region[1])
    )


def covered_by_complete(
    boxes: np.ndarray,
    classes: np.ndarray,
    truncated: np.ndarray,
    others: np.ndarray,
    other_classes: np.ndarray,
    min_coverage: float = 0.7,
) -> np.ndarray:
    """Which truncated boxes lie mostly inside a complete box of the same class.

    Args:
        boxes (np.ndarray[N, 4]): XYXY boxes of one tile, in slide coordinates.
        classes (np.ndarray[N]): their class ids.
        truncated (np.ndarray[N] bool): boxes cut by the tile's inner edge
            (``touches_inner_edge``); only these can be flagged.
        others (np.ndarray[M, 4]): complete (not truncated) XYXY boxes of overlapping tiles.
        other_classes (np.ndarray[M]): their class ids.
        min_coverage (float): flag a box when at least this fraction of its area is inside
            one complete box of its class.

    Returns:
        np.ndarray[N] bool: True for boxes to drop (a neighbour saw the cell whole).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    others = np.asarray(others, dtype=np.float64).reshape(-1, 4)
    truncated = np.asarray(truncated, dtype=bool).reshape(-1)
    flagged = np.zeros(len(boxes), dtype=bool)
    if not len(others) or not truncated.any():
        return flagged
    sub = np.flatnonzero(truncated)
    a = boxes[sub]
    lo = np.maximum(a[:, None, :2], others[None, :, :2])
    hi = np.minimum(a[:, None, 2:], others[None, :, 2:])
    wide, high = hi[..., 0] - lo[..., 0], hi[..., 1] - lo[..., 1]
    inter = np.clip(wide, 0, None) * np.clip(high, 0, None)  # [n, M]
    area = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    coverage = inter / np.maximum(area, 1e-9)[:, None]
    same = np.asarray(classes).reshape(-1)[sub, None] == np.asarray(other_classes).reshape(1, -1)
    flagged[sub] = ((coverage >= min_coverage) & same).any(axis=1)
    return flagged


def drop_covered_truncated(
    boxes: Sequence[np.ndarray],
    classes: Sequence[np.ndarray],
    truncated: Sequence[np.ndarray],
    regions: np.ndarray,
    pairs: np.ndarray,
    min_coverage: float = 0.7,
) -> List[np.ndarray]:
    """Step 1: keep-masks per tile, False for truncated boxes a neighbour saw whole.

    Args:
        boxes (list of np.ndarray[N_k, 4]): each tile's XYXY boxes, slide coordinates, inside
            the tile's region.
        classes (list of np.ndarray[N_k]): their class ids.
        truncated (list of np.ndarray[N_k] bool): cut by the tile's inner edge.
        regions (np.ndarray[K, 4]): each tile's region, slide coordinates.
        pairs (np.ndarray[P, 2]): overlapping tiles (``overlapping_pairs(regions)``).
        min_coverage (float): see ``covered_by_complete``.

    Returns:
        list of np.ndarray[N_k] bool.
    """
    keep = [np.ones(len(c), dtype=bool) for c in classes]
    for a, b in pairs:
        for p, q in ((a, b), (b, a)):
            cut = truncated[p] & intersects(boxes[p], regions[q])
            whole = ~truncated[q] & intersects(boxes[q], regions[p])
            if cut.any() and whole.any():
                keep[p] &= ~covered_by_complete(
                    boxes[p], classes[p], cut, boxes[q][whole], classes[q][whole], min_coverage
                )
    return keep


def tiled_nms(
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    classes: Sequence[np.ndarray],
    regions: np.ndarray,
    pairs: np.ndarray,
    iou_thresh: float = 0.5,
) -> List[np.ndarray]:
    """Step 2: class-wise greedy NMS over all tiles, comparing only boxes that can overlap.

    The result equals ``merge_detections`` on the concatenated boxes (up to the order of equal
    scores) whenever each tile's boxes lie inside its region and tiles outside ``pairs`` do not
    overlap.

    Args:
        boxes (list of np.ndarray[N_k, 4]): each tile's XYXY boxes, slide coordinates.
        scores (list of np.ndarray[N_k]): their scores.
        classes (list of np.ndarray[N_k]): their class ids.
        regions (np.ndarray[K, 4]): each tile's region, slide coordinates.
        pairs (np.ndarray[P, 2]): overlapping tiles (``overlapping_pairs(regions)``).
        iou_thresh (float): a box is suppressed by a kept box of its class with IoU above this.

    Returns:
        list of np.ndarray[N_k] bool: keep-masks per tile.
    """
    sizes = [len(s) for s in scores]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    total = int(offsets[-1])
    found = [np.zeros((0, 2), dtype=np.int64)]

    def add_pairs(p, sel_p, q, sel_q, same_tile):
        ip, iq = np.flatnonzero(sel_p), np.flatnonzero(sel_q)
        if not len(ip) or not len(iq):
            return
        iou = box_iou(
            torch.as_tensor(boxes[p][ip], dtype=torch.float64),
            torch.as_tensor(boxes[q][iq], dtype=torch.float64),
        ).numpy()
        hit = (iou > iou_thresh) & (classes[p][ip][:, None] == classes[q][iq][None, :])
        if same_tile:
            hit = np.triu(hit, k=1)
        u, v = np.nonzero(hit)
        found.append(np.stack([ip[u] + offsets[p], iq[v] + offsets[q]], axis=1))

    for k in range(len(sizes)):
        every = np.ones(sizes[k], dtype=bool)
        add_pairs(k, every, k, every, same_tile=True)
    for a, b in pairs:
        add_pairs(
            a,
            intersects(boxes[a], regions[b]),
            b,
            intersects(boxes[b], regions[a]),
            same_tile=False,
        )
    edges = np.concatenate(found)
    keep = _greedy(
        np.concatenate([np.asarray(s, np.float64) for s in scores]) if total else np.zeros(0),
        edges,
        total,
    )
    return [keep[offsets[k] : offsets[k + 1]] for k in range(len(sizes))]


def _greedy(scores: np.ndarray, edges: np.ndarray, total: int) -> np.ndarray:
    """Greedy NMS on a graph: visit boxes by decreasing score, a kept box suppresses its
    neighbours (``edges`` [E, 2]: pairs of boxes above the IoU threshold)."""
    both = np.concatenate([edges, edges[:, ::-1]])
    both = both[np.argsort(both[:, 0], kind="stable")]
    indptr = np.searchsorted(both[:, 0], np.arange(total + 1))
    neighbours = both[:, 1]
    suppressed = np.zeros(total, dtype=bool)
    keep = np.zeros(total, dtype=bool)
    for i in np.argsort(-scores, kind="stable"):
        if suppressed[i]:
            continue
        keep[i] = True
        if indptr[i + 1] > indptr[i]:
            suppressed[neighbours[indptr[i] : indptr[i + 1]]] = True
    return keep
