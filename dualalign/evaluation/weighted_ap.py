"""Box AP over the IoU range with a weight per image: the test-image bootstrap's fast path.

A bootstrap draw takes the N test images with replacement; an image drawn c times counts c
times. Re-running ``COCOeval`` on every draw (copying images, annotations and predictions)
costs a full evaluation per draw and model. It is not needed: ``COCOeval.evaluate()`` matches
detections to ground truth one image at a time, so the matches of a drawn image are those of
the original. Only ``accumulate()`` sees the draw, and for it c copies of an image are the
image with weight c:

    TP_t(s) = sum_i w_i * #{true positives of image i at IoU t with score >= s}
    FP_t(s) = likewise for false positives,    n_gt = sum_i w_i * #{non-ignored gt of image i}
    recall = TP / n_gt,    precision = TP / (TP + FP)

then pycocotools' interpolation (precision made non-increasing from the right, read at the 101
recall thresholds) and our averaging (:mod:`.range_ap`: mean over recall, IoU, then classes
with ground truth). With every weight 1 this is :func:`.range_ap.evaluate_coco_range`'s mAP.
The only difference from re-evaluating copies is the order of detections of equal score from
different images, which pycocotools leaves to its image order.

:func:`image_matches` runs ``evaluate()`` once; :func:`weighted_map` is then a weighted
cumulative sum per class, a few milliseconds per draw.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np
from pycocotools.coco import COCO

from .range_ap import matched_cocoeval

__all__ = ["ClassMatches", "ImageMatches", "image_matches", "weighted_map"]


@dataclass
class ClassMatches:
    """One class's detections over the test set, sorted by score (pycocotools' order)."""

    image: np.ndarray  # [D] index of each detection's image in ImageMatches.image_ids
    tp: np.ndarray  # [T, D] bool: matched and not ignored, at each IoU threshold
    fp: np.ndarray  # [T, D] bool: unmatched and not ignored
    gt_per_image: np.ndarray  # [N] non-ignored ground-truth boxes of this class per image


@dataclass
class ImageMatches:
    """The per-image matches of one model's predictions on one ground truth."""

    image_ids: List[Any]
    iou_thresholds: List[float]
    recall_thresholds: np.ndarray  # [R], pycocotools' 101 points
    classes: List[ClassMatches]


def image_matches(
    coco_gt: COCO,
    predictions: Sequence[Dict[str, Any]],
    iou_thresholds: Sequence[float],
    max_dets: int = 200,
) -> ImageMatches:
    """Match ``predictions`` to ``coco_gt`` once (pycocotools ``evaluate()``, area "all",
    the ``max_dets`` highest-scoring detections per image), for :func:`weighted_map`."""
    ev = matched_cocoeval(coco_gt, predictions, iou_thresholds, max_dets)
    p = ev.params
    n_img, n_area = len(p.imgIds), len(p.areaRng)
    index = {img: i for i, img in enumerate(p.imgIds)}
    t = len(p.iouThrs)
    classes = []
    for k in range(len(p.catIds)):
        records = [ev.evalImgs[k * n_area * n_img + i] for i in range(n_img)]  # area "all"
        records = [e for e in records if e is not None]
        gt_count = np.zeros(n_img, dtype=np.float64)
        for e in records:
            gt_count[index[e["image_id"]]] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
        if records:
            scores = np.concatenate([e["dtScores"][:max_dets] for e in records])
            image = np.concatenate(
                [np.full(len(e["dtScores"][:max_dets]), index[e["image_id"]]) for e in records]
            ).astype(np.int64)
            matched = np.concatenate([e["dtMatches"][:, :max_dets] for e in records], axis=1)
            ignored = np.concatenate([e["dtIgnore"][:, :max_dets] for e in records], axis=1)
        else:
            scores, image = np.zeros(0), np.zeros(0, dtype=np.int64)
            matched = ignored = np.zeros((t, 0))
        order = np.argsort(-scores, kind="mergesort")
        matched, ignored = matched[:, order] != 0, ignored[:, order] != 0
        classes.append(
            ClassMatches(
                image=image[order],
                tp=matched & ~ignored,
                fp=~matched & ~ignored,
                gt_per_image=gt_count,
            )
        )
    return ImageMatches(
        image_ids=list(p.imgIds),
        iou_thresholds=[float(x) for x in p.iouThrs],
        recall_thresholds=np.asarray(p.recThrs, dtype=np.float64),
        classes=classes,
    )


def _class_ap(c: ClassMatches, weights: np.ndarray, rec_thrs: np.ndarray) -> float:
    """AP (percent, mean over IoU thresholds) of one class under image ``weights``; NaN when
    the weighted ground truth is empty (the class is then left out, as in range_ap)."""
    n_gt = float(c.gt_per_image @ weights)
    if n_gt <= 0:
        return float("nan")
    w = weights[c.image]  # [D]
    tp = np.cumsum(c.tp * w, axis=1)  # [T, D]
    fp = np.cumsum(c.fp * w, axis=1)
    aps = []
    for tp_t, fp_t in zip(tp, fp):
        if tp_t.size == 0:
            aps.append(0.0)
            continue
        recall = tp_t / n_gt
        precision = tp_t / (tp_t + fp_t + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # pycocotools' interpolation
        at = np.searchsorted(recall, rec_thrs, side="left")
        q = np.where(at < precision.size, precision[np.minimum(at, precision.size - 1)], 0.0)
        aps.append(100.0 * float(q.mean()))
    return float(np.mean(aps))


def weighted_map(m: ImageMatches, weights: Sequence[float]) -> float:
    """mAP over the IoU range with image ``weights`` (aligned with ``m.image_ids``): the mean
    over classes with (weighted) ground truth of the mean AP over IoU thresholds."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(m.image_ids),):
        raise ValueError(f"weights has shape {w.shape}; expected ({len(m.image_ids)},)")
    aps = [_class_ap(c, w, m.recall_thresholds) for c in m.classes]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")
