"""What a model's wrong pseudo-labels are: each confident detection sorted into one kind against
the truth of a labelled split (or the synthetic pool's hidden truth).

The kinds, tried in this order (IoU with the true boxes; greedy by score, as COCO matches). This
is the one home of that matching: :func:`.pseudo_quality.match_counts` counts the ``correct``
detections as its true positives and the other kinds as its false positives.

- ``correct``: IoU >= 0.5 with a true box of its class that no higher-scored detection took;
- ``duplicate``: IoU >= 0.5 with a true box of its class, already taken;
- ``class_beside_right``: IoU >= 0.5 only with true boxes of other classes, one of which a
  detection of the right class took (the cell is labelled twice, once wrongly: NMS across
  classes would drop whichever scored lower);
- ``class_only``: IoU >= 0.5 only with true boxes of other classes, none taken by the right
  class (the cell's only pseudo-label has the wrong class);
- ``localisation``: no true box at IoU >= 0.5, one at IoU >= 0.1;
- ``background``: no true box at IoU >= 0.1.
"""

from typing import List, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes, pairwise_iou

__all__ = ["ERROR_KINDS", "error_kinds"]

ERROR_KINDS = (
    "correct",
    "duplicate",
    "class_beside_right",
    "class_only",
    "localisation",
    "background",
)


def error_kinds(
    pred_boxes: torch.Tensor,
    pred_classes: torch.Tensor,
    scores: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    iou_thresh: float = 0.5,
    background_iou: float = 0.1,
) -> Tuple[List[str], List[int]]:
    """The kind (one of :data:`ERROR_KINDS`) of each detection of one image, and for a
    detection of the wrong class the true class of the cell it labels.

    Args:
        pred_boxes (Tensor[N, 4]), pred_classes (Tensor[N]), scores (Tensor[N]): the
            detections (XYXY, contiguous class ids).
        gt_boxes (Tensor[M, 4]), gt_classes (Tensor[M]): the true boxes.
        iou_thresh: the IoU of a match.
        background_iou: below this IoU with every true box, a detection is background.

    Returns:
        ``(kinds, cell_classes)``: N kinds, in the detections' order, and N classes: for
        ``class_beside_right`` and ``class_only`` the class of the true box it overlaps most,
        -1 for the other kinds.
    """
    n = len(pred_boxes)
    cell_classes = [-1] * n
    if len(gt_boxes) == 0:
        return ["background"] * n, cell_classes
    iou = pairwise_iou(Boxes(pred_boxes.float()), Boxes(gt_boxes.float())).numpy()
    gt_cls = gt_classes.numpy()
    taken = np.zeros(len(gt_boxes), dtype=bool)
    kinds: List[str] = [""] * n
    other_class = []  # (detection, the other-class true boxes it overlaps), decided at the end
    for i in torch.argsort(scores, descending=True).tolist():
        same = gt_cls == int(pred_classes[i])
        free = np.where(same & ~taken)[0]
        best = max(free, key=lambda j: iou[i, j], default=None)
        if best is not None and iou[i, best] >= iou_thresh:
            taken[best] = True
            kinds[i] = "correct"
        elif (iou[i][same] >= iou_thresh).any():
            kinds[i] = "duplicate"
        elif (iou[i] >= iou_thresh).any():
            other_class.append((i, np.where(iou[i] >= iou_thresh)[0]))
        elif iou[i].max() >= background_iou:
            kinds[i] = "localisation"
        else:
            kinds[i] = "background"
    for i, cells in other_class:  # ``taken`` is final: the right class labelled the cell?
        kinds[i] = "class_beside_right" if taken[cells].any() else "class_only"
        cell_classes[i] = int(gt_cls[cells[np.argmax(iou[i, cells])]])
    return kinds, cell_classes
