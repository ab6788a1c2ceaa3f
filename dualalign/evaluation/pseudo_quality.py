"""Pseudo-label quality: precision and recall per class of a model's confident detections
against the hidden truth of the unlabelled pool (synthetic data keeps it aside).

A pseudo label is a detection whose score exceeds the method's threshold
(``DUALALIGN.PSEUDO.SCORE_THRESH``; with pseudo-boxes ``BOX_THRESH`` or, per class,
``BOX_THRESH_PER_CLASS``). It is right when it matches a true box of its class at
IoU >= 0.5 that no higher-scored pseudo label matched (greedy by score, as COCO matches). The
truth is read by the evaluator only; training never sees it.
"""

from typing import Dict, List

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

from ..modeling.pseudo_boxes import Thresh, detection_thresholds
from .pseudo_errors import error_kinds

__all__ = ["PseudoLabelQualityEvaluator", "match_counts", "precision_recall"]


def match_counts(
    pred_boxes: torch.Tensor,
    pred_classes: torch.Tensor,
    scores: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    num_classes: int,
    iou_thresh: float = 0.5,
) -> np.ndarray:
    """Per-class (true positives, false positives, false negatives) of one image: a true
    positive is a detection :func:`.pseudo_errors.error_kinds` calls ``correct`` (IoU >=
    ``iou_thresh`` with a true box of its class that no higher-scored detection took).

    Args:
        pred_boxes (Tensor[N, 4]), pred_classes (Tensor[N]), scores (Tensor[N]): the pseudo
            labels (XYXY, contiguous class ids).
        gt_boxes (Tensor[M, 4]), gt_classes (Tensor[M]): the true boxes.
        num_classes: C.
        iou_thresh: minimum IoU of a match.

    Returns:
        np.ndarray[C, 3] of int: columns tp, fp, fn.
    """
    counts = np.zeros((num_classes, 3), dtype=np.int64)
    kinds, _ = error_kinds(pred_boxes, pred_classes, scores, gt_boxes, gt_classes, iou_thresh)
    right = np.array([k == "correct" for k in kinds], dtype=bool)
    pred_cls = pred_classes.numpy()
    np.add.at(counts[:, 0], pred_cls[right], 1)
    np.add.at(counts[:, 1], pred_cls[~right], 1)
    # a right detection took a true box of its own class: the rest of that class is missed
    counts[:, 2] = np.bincount(gt_classes.numpy(), minlength=num_classes) - counts[:, 0]
    return counts


def precision_recall(counts: np.ndarray) -> Dict[str, float]:
    """``precision_c<k>``, ``recall_c<k>`` and the pooled ``precision``, ``recall`` in percent
    (NaN where there is nothing to divide: no pseudo label, or no true box)."""

    def ratio(num, den):
        return float(100.0 * num / den) if den else float("nan")

    out = {}
    for c, (tp, fp, fn) in enumerate(counts):
        out[f"precision_c{c}"] = ratio(tp, tp + fp)
        out[f"recall_c{c}"] = ratio(tp, tp + fn)
    tp, fp, fn = counts.sum(axis=0)
    out["precision"], out["recall"] = ratio(tp, tp + fp), ratio(tp, tp + fn)
    out["count"] = float(tp + fp)
    return out


class PseudoLabelQualityEvaluator(DatasetEvaluator):
    """:func:`precision_recall` of the detections above ``score_thresh`` over a data set whose
    registered annotations are the unlabelled pool's hidden truth.

    Args:
        dataset_name: a registered labelled set (e.g. the generator's
            ``unlabeled_with_gt.json``) over the images of the unlabelled pool.
        score_thresh: the method's pseudo-label threshold, or one per class.
        num_classes: C.
    """

    def __init__(self, dataset_name: str, score_thresh: Thresh, num_classes: int):
        self._thresh = score_thresh
        self._num_classes = num_classes
        self._truth = {}
        for rec in DatasetCatalog.get(dataset_name):
            anns = rec.get("annotations", [])
            boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
            self._truth[rec["image_id"]] = (
                torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                torch.tensor([a["category_id"] for a in anns], dtype=torch.long),
            )
        self.reset()

    def reset(self):
        self._counts = np.zeros((self._num_classes, 3), dtype=np.int64)

    def process(self, inputs: List[dict], outputs: List[dict]):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            keep = inst.scores > detection_thresholds(inst.pred_classes, self._thresh)
            gt_boxes, gt_classes = self._truth[inp["image_id"]]
            self._counts += match_counts(
                inst.pred_boxes.tensor[keep],
                inst.pred_classes[keep],
                inst.scores[keep],
                gt_boxes,
                gt_classes,
                self._num_classes,
            )

    def evaluate(self):
        gathered = comm.gather(self._counts, dst=0)
        if not comm.is_main_process():
            return {}
        return {"pseudo_quality": precision_recall(np.sum(gathered, axis=0))}
