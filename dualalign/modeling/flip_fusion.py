"""A two-view labeller: the teacher's detections on an image and on its horizontal mirror, fused.

With ``DUALALIGN.PSEUDO.FLIP_FUSION`` the teacher labels each weak view twice, as it is and
mirrored left-right, and the two sets of detections (the mirror's mapped back with the
baselines' :func:`~dualalign.baselines.consistency.flip_boxes`) are fused by
:func:`fuse_two_views`, weighted-box-fusion style:

* a detection of one view matches the detection of the other view with the same class and
  IoU >= ``iou_thresh`` (0.5), greedily by the pair's summed score, each used once;
* a matched pair becomes one box, the score-weighted mean of the two, scored by the mean of the
  two scores;
* an unmatched detection keeps its box and gets half its score (the mean with the view that
  missed it, which scored it 0).

So a pseudo-box above a threshold t > 0.5 needs both views to find it, with a mean score above
t: a detection the teacher makes in one view only (the kind a small change of the input
removes) can at most be an ignore region (``IGNORE_THRESH`` below 0.5). Cells have no left or
right, so the mirror is an equally valid view of every patch. The student's views are not
changed, and neither is inference: the fusion is what the teacher *labels* with, measured by the
pseudo-label diagnostics (``DUALALIGN.DIAGNOSTICS``), never what is scored.
"""

import torch
from detectron2.structures import Boxes, Instances, pairwise_iou

__all__ = ["fuse_two_views"]


def _greedy_pairs(iou: torch.Tensor, pair_score: torch.Tensor, iou_thresh: float):
    """Index pairs (i, j) with ``iou[i, j] >= iou_thresh``, taken by decreasing
    ``pair_score[i, j]``, each row and each column at most once."""
    rows, cols = torch.nonzero(iou >= iou_thresh, as_tuple=True)
    order = torch.argsort(pair_score[rows, cols], descending=True, stable=True)
    used_a, used_b, pairs = set(), set(), []
    for i, j in zip(rows[order].tolist(), cols[order].tolist()):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return pairs


@torch.no_grad()
def fuse_two_views(a: Instances, b: Instances, iou_thresh: float = 0.5) -> Instances:
    """Fuse two views' detections of one image, both in the image's frame (see the module
    docstring).

    Args:
        a, b: ``pred_boxes``, ``scores``, ``pred_classes`` of the same image seen two ways.
        iou_thresh: the IoU at or above which two same-class detections are one object.

    Returns:
        ``Instances`` of ``a.image_size`` with the fused ``pred_boxes``, ``scores`` (mean of the
        two views' scores, 0 for a view without the box) and ``pred_classes``, by decreasing
        score.
    """
    boxes_a, boxes_b = a.pred_boxes.tensor, b.pred_boxes.tensor
    iou = pairwise_iou(a.pred_boxes, b.pred_boxes)
    iou[a.pred_classes[:, None] != b.pred_classes[None, :]] = 0.0
    pairs = _greedy_pairs(iou, a.scores[:, None] + b.scores[None, :], iou_thresh)
    ia = torch.tensor([p[0] for p in pairs], dtype=torch.long, device=boxes_a.device)
    ib = torch.tensor([p[1] for p in pairs], dtype=torch.long, device=boxes_a.device)
    sa, sb = a.scores[ia], b.scores[ib]
    weights = torch.stack([sa, sb], dim=1) / (sa + sb).clamp(min=1e-12)[:, None]
    fused = weights[:, :1] * boxes_a[ia] + weights[:, 1:] * boxes_b[ib]
    only_a = torch.ones(len(a), dtype=torch.bool, device=boxes_a.device)
    only_b = torch.ones(len(b), dtype=torch.bool, device=boxes_a.device)
    only_a[ia], only_b[ib] = False, False

    boxes = torch.cat([fused, boxes_a[only_a], boxes_b[only_b]])
    scores = torch.cat([(sa + sb) / 2, a.scores[only_a] / 2, b.scores[only_b] / 2])
    classes = torch.cat([a.pred_classes[ia], a.pred_classes[only_a], b.pred_classes[only_b]])
    order = torch.argsort(scores, descending=True, stable=True)
    out = Instances(a.image_size)
    out.pred_boxes = Boxes(boxes[order])
    out.scores = scores[order]
    out.pred_classes = classes[order]
    return out
