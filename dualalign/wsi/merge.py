"""Merging the detections of overlapping tiles into slide detections.

Tiles overlap (``tiling.tile_grid``), so a cell near a tile border is detected by two or more
tiles. Each tile's boxes are mapped to level-0 slide coordinates (``offset_boxes``), then a
class-wise NMS over the whole slide keeps one box per cell.

A cell cut by a tile's border gives a truncated box there, whose IoU with the full box from the
neighbouring tile may fall below the NMS threshold. ``touches_inner_edge`` finds such boxes so
they can be dropped before the NMS: this is safe when the tile overlap is at least the largest
cell plus twice the margin, since every cell then lies, away from inner edges, inside some
tile. The two steps are independent; NMS alone is a valid (looser) merge.

``merge_detections`` is the NMS over all boxes at once. A slide at level 0 has tens of thousands
of tiles and up to millions of raw detections, too many for it (torchvision's CPU NMS compares
every kept box with every other: 110k boxes take ~10 s, a million hours). But a box lies inside
its tile, so two boxes can only overlap when their tiles do, and only inside the two tiles'
common region. The tile-pair steps therefore compare boxes of one tile, or of two overlapping
tiles (``overlapping_pairs``) near their common region, in time linear in the number of tiles:

1. ``drop_covered_truncated``: drop a box cut by its tile's inner edge when a box of the same
   class from an overlapping tile, not cut, covers most of it (``covered_by_complete``).
2. ``tiled_nms``: class-wise greedy NMS whose result equals ``merge_detections``, computed
   from those local comparisons only.
"""

from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from torchvision.ops import batched_nms, box_iou

__all__ = [
    "covered_by_complete",
    "drop_covered_truncated",
    "intersects",
    "merge_detections",
    "offset_boxes",
    "overlapping_pairs",
    "tiled_nms",
    "touches_inner_edge",
]

Array = Union[np.ndarray, torch.Tensor]


def offset_boxes(boxes: Array, x0: float, y0: float, scale: float = 1.0) -> Array:
    """Map tile-local boxes to level-0 slide coordinates.

    Args:
        boxes (np.ndarray or Tensor [N, 4]): ``(x1, y1, x2, y2)`` in the tile's pixels.
        x0 (float): tile's left edge in level-0 pixels (``tile_origins_level0``).
        y0 (float): tile's top edge in level-0 pixels.
        scale (float): level-0 pixels per tile pixel: the level's downsample, times any
            resize applied to the tile before the detector.

    Returns:
        np.ndarray or Tensor [N, 4]: same type as ``boxes``, floating point, level-0 XYXY.
    """
    if isinstance(boxes, torch.Tensor):
        out = boxes.to(torch.float64 if not boxes.is_floating_point() else boxes.dtype) * scale
    else:
        out = np.asarray(boxes, dtype=np.float64) * scale
    out[..., 0::2] += x0
    out[..., 1::2] += y0
    return out


def merge_detections(boxes: Array, scores: Array, classes: Array, iou_thresh: float = 0.5) -> Array:
    """Class-wise NMS over all tiles' detections in slide coordinates.

    Boxes of different classes never suppress each other (``torchvision.ops.batched_nms``).

    Args:
        boxes (np.ndarray or Tensor [N, 4]): XYXY in level-0 slide pixels.
        scores (np.ndarray or Tensor [N]): confidence.
        classes (np.ndarray or Tensor [N]): integer class ids.
        iou_thresh (float): boxes of one class with IoU above this are duplicates.

    Returns:
        np.ndarray or Tensor [K] int64: indices of the kept detections, by decreasing score;
        a Tensor if ``boxes`` is one, else a numpy array.
    """
    as_tensor = isinstance(boxes, torch.Tensor)
    # float64: slide coordinates reach 1e5 and batched_nms offsets them further by class.
    b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    c = torch.as_tensor(classes).reshape(-1).to(torch.int64)
    if not len(b) == len(s) == len(c):
        raise ValueError(f"boxes, scores, classes disagree in length: {len(b)}, {len(s)}, {len(c)}")
    keep = batched_nms(b.cpu(), s.cpu(), c.cpu(), iou_thresh)
    if as_tensor:
        return keep.to(boxes.device)
    return keep.numpy().astype(np.int64)


def touches_inner_edge(
    boxes: np.ndarray, tile: np.ndarray, width: int, height: int, margin: float = 2.0
) -> np.ndarray:
    """Which tile-local boxes reach a tile edge that a neighbouring tile covers.

    An edge on the level's border is not inner (no neighbour sees past it).

    Args:
        boxes (np.ndarray[N, 4]): XYXY in the tile's pixels (same level as ``tile``).
        tile (np.ndarray[4]): the tile's ``(x0, y0, x1, y1)`` in level pixels.
        width (int): level width in pixels.
        height (int): level height in pixels.
        margin (float): a box within this many pixels of an edge touches it.

    Returns:
        np.ndarray[N] bool: True for boxes to drop before ``merge_detections``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    tx0, ty0, tx1, ty1 = (float(v) for v in tile)
    size_x, size_y = tx1 - tx0, ty1 - ty0
    hit = np.zeros(len(boxes), dtype=bool)
    if tx0 > 0:
        hit |= boxes[:, 0] <= margin
    if ty0 > 0:
        hit |= boxes[:, 1] <= margin
    if tx1 < width:
        hit |= boxes[:, 2] >= size_x - margin
    if ty1 < height:
        hit |= boxes[:, 3] >= size_y - margin
    return hit


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
