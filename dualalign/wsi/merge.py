"""Merging tile detections into slide detections.

Tiles overlap (``tiling.tile_grid``), so a cell near a tile border is detected by two or more
tiles. Each tile's boxes are mapped to level-0 slide coordinates (``offset_boxes``), then a
class-wise NMS over the whole slide (``merge_detections``) keeps one box per cell.

A cell cut by a tile's border gives a truncated box there, whose IoU with the full box from the
neighbouring tile may fall below the NMS threshold. ``touches_inner_edge`` finds such boxes so
the caller can drop them before the NMS: this is safe when the tile overlap is at least the
largest cell plus twice the margin, since every cell then lies, away from inner edges, inside
some tile. The two steps are independent; NMS alone is a valid (looser) merge.
"""

from typing import Union

import numpy as np
import torch
from torchvision.ops import batched_nms

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
