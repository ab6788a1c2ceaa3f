"""Pairwise IoU of two box sets, computed in column blocks: the values of detectron2's
``pairwise_iou``, bit for bit, at less cost for the (pseudo-boxes x anchors) matrices of the
unlabelled RPN loss (``DUALALIGN.PSEUDO.RPN_LOSS``).

detectron2 forms the intersection on (N, M, 2) tensors. On the CPU their last dimension of 2
is the inner loop of every elementwise op, and at N = 100 boxes x M = 16k anchors each
temporary is 13 MB (large enough for the allocator to map fresh pages). Here x and y are
separate (N, M) ops over a block of columns (contiguous inner loops, temporaries that stay in
cache). Each element is computed by the same float operations in the same order, so the
result is identical. The time saved is measured in ``docs/SPEED.md``.
"""

import torch
from detectron2.structures import Boxes

__all__ = ["pairwise_iou_blocked"]

# Columns per block on the CPU: 100 x 2048 float32 temporaries are 0.8 MB.
CPU_BLOCK = 2048


def _iou_block(
    t1: torch.Tensor, area1: torch.Tensor, t2: torch.Tensor, area2: torch.Tensor
) -> torch.Tensor:
    """IoU (Tensor[N, m]) of boxes ``t1`` (Tensor[N, 4], XYXY; areas ``area1``) against
    ``t2`` (Tensor[m, 4]; areas ``area2``), in detectron2's operation order."""
    width = torch.min(t1[:, None, 2], t2[:, 2]) - torch.max(t1[:, None, 0], t2[:, 0])
    height = torch.min(t1[:, None, 3], t2[:, 3]) - torch.max(t1[:, None, 1], t2[:, 1])
    inter = width.clamp_(min=0) * height.clamp_(min=0)
    return torch.where(
        inter > 0,
        inter / (area1[:, None] + area2 - inter),
        torch.zeros(1, dtype=inter.dtype, device=inter.device),
    )


def pairwise_iou_blocked(boxes1: Boxes, boxes2: Boxes, block: int = 0) -> torch.Tensor:
    """Intersection over union of every pair, as detectron2's ``pairwise_iou``.

    Args:
        boxes1 (Boxes[N]): XYXY boxes (here: the pseudo-boxes of one image).
        boxes2 (Boxes[M]): XYXY boxes (here: the anchors of all levels).
        block: columns of ``boxes2`` per block; 0 picks ``CPU_BLOCK`` on the CPU and one block
            (M) on other devices, where one large op is cheaper than many small ones.

    Returns:
        Tensor[N, M]: the IoU, 0 where the boxes do not overlap.
    """
    t1, t2 = boxes1.tensor, boxes2.tensor
    area1, area2 = boxes1.area(), boxes2.area()
    if block <= 0:
        block = CPU_BLOCK if t2.device.type == "cpu" else max(len(t2), 1)
    if len(t1) == 0 or len(t2) <= block:
        return _iou_block(t1, area1, t2, area2)
    blocks = [
        _iou_block(t1, area1, t2[i : i + block], area2[i : i + block])
        for i in range(0, len(t2), block)
    ]
    return torch.cat(blocks, 1)
