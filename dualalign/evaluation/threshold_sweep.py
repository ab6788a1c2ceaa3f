"""Per-class pseudo-box thresholds from a labelled split: a precision sweep over score
thresholds of a model's detections (a COCO results file), and the lowest threshold at which
each class reaches a target precision (``DUALALIGN.PSEUDO.BOX_THRESH_PER_CLASS``).

Run it on the **val** split with the checkpoint that will be the teacher (the burn-in): a class
whose detections never reach the target precision at any swept threshold gets 1.0 (no
pseudo-box: its detections become ignore regions with ``DUALALIGN.PSEUDO.IGNORE_THRESH``).
Matching is :func:`.pseudo_errors.error_kinds` (IoU >= 0.5, same class, greedy by score), the
rule of :func:`.pseudo_quality.match_counts`, which the pseudo-label diagnostics use on the
unlabelled pool.
"""

import math
from typing import Dict, List, Sequence

import numpy as np
import torch

from .pseudo_errors import ERROR_KINDS, error_kinds
from .pseudo_quality import precision_recall

__all__ = [
    "class_thresholds",
    "format_class_errors",
    "format_error_table",
    "format_sweep_table",
    "sweep",
    "sweep_counts",
    "sweep_errors",
]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_key(v) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def _boxes_xyxy(records: List[dict]) -> torch.Tensor:
    xywh = torch.tensor([r["bbox"] for r in records], dtype=torch.float32).reshape(-1, 4)
    return torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)


def _images(gt: dict, preds: List[dict]):
    """Per image of ``gt``: the detections' XYXY boxes, contiguous classes and scores, then the
    true boxes and classes. Every prediction is checked (:func:`sweep_counts`'s ValueError)
    before the first image is given."""
    cat_ids = sorted(c["id"] for c in gt["categories"])
    index = {c: i for i, c in enumerate(cat_ids)}
    images = {im["id"] for im in gt["images"]}
    truth = {i: [] for i in images}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            truth.setdefault(a["image_id"], []).append(a)
    dets = {i: [] for i in images}
    for k, p in enumerate(preds):
        bad = not isinstance(p, dict) or not _is_number(p.get("score"))
        if not bad:
            bbox = p.get("bbox")
            bad = not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox)))
            bad = bad or not all(_is_key(p.get(k)) for k in ("image_id", "category_id"))
            bad = bad or p["image_id"] not in images or p["category_id"] not in index
        if bad:
            raise ValueError(
                f"record #{k} {p!r}: needs an image_id and a category_id of the ground truth, "
                "a bbox [x, y, w, h] and a score (COCO results format)"
            )
        dets[p["image_id"]].append(p)
    for image_id in sorted(images, key=str):
        gts, ds = truth.get(image_id, []), dets[image_id]
        yield (
            _boxes_xyxy(ds),
            torch.tensor([index[d["category_id"]] for d in ds], dtype=torch.long),
            torch.tensor([float(d["score"]) for d in ds], dtype=torch.float32),
            _boxes_xyxy(gts),
            torch.tensor([index[a["category_id"]] for a in gts], dtype=torch.long),
        )


def sweep_counts(gt: dict, preds: List[dict], thresholds: Sequence[float]) -> np.ndarray:
    """tp / fp / fn per threshold and class of the detections scored above each threshold.

    Args:
        gt: a COCO ground-truth dict (``images``, ``annotations``, ``categories``).
        preds: COCO results records ``{image_id, category_id, bbox: [x, y, w, h], score}``.
        thresholds: the score thresholds (a detection counts when its score is above one).

    Returns:
        int array ``[len(thresholds), C, 3]``; classes in ascending category id (detectron2's
        contiguous order, that of ``BOX_THRESH_PER_CLASS``).

    Raises:
        ValueError: naming the record, if a prediction has an unknown image or category, or no
            4-number bbox or score.
    """
    return _tp_fp_fn(sweep_errors(gt, preds, thresholds))


def _tp_fp_fn(errors: Dict[str, np.ndarray]) -> np.ndarray:
    """:func:`sweep_counts` from :func:`sweep_errors`: a ``correct`` detection is a true
    positive (:func:`.pseudo_quality.match_counts`), any other kind a false positive, and a
    true box no right detection took a false negative."""
    per_class = errors["per_class"]
    tp = per_class[:, :, ERROR_KINDS.index("correct")]
    return np.stack([tp, per_class.sum(axis=2) - tp, errors["truth"][None, :] - tp], axis=2)


def sweep_errors(gt: dict, preds: List[dict], thresholds: Sequence[float]) -> Dict[str, np.ndarray]:
    """What the detections above each threshold are (:func:`.pseudo_errors.error_kinds`).

    Returns:
        ``per_class``: int array ``[len(thresholds), C, len(ERROR_KINDS)]``, the detections of
        each predicted class and kind; ``confusion``: int array ``[len(thresholds), C, C]``,
        the detections of the wrong class (``class_beside_right`` and ``class_only``) by
        predicted class (rows) and the true class of the cell they label (columns);
        ``truth``: int array ``[C]``, the true boxes of each class.
    Raises as :func:`sweep_counts`.
    """
    num_classes = len(gt["categories"])
    per_class = np.zeros((len(thresholds), num_classes, len(ERROR_KINDS)), dtype=np.int64)
    confusion = np.zeros((len(thresholds), num_classes, num_classes), dtype=np.int64)
    truth = np.zeros(num_classes, dtype=np.int64)
    for boxes, classes, scores, gt_boxes, gt_classes in _images(gt, preds):
        truth += np.bincount(gt_classes.numpy(), minlength=num_classes)
        for t, thresh in enumerate(thresholds):
            keep = scores > thresh
            kinds, cells = error_kinds(
                boxes[keep], classes[keep], scores[keep], gt_boxes, gt_classes
            )
            for c, kind, cell in zip(classes[keep].tolist(), kinds, cells):
                per_class[t, c, ERROR_KINDS.index(kind)] += 1
                if cell >= 0:
                    confusion[t, c, cell] += 1
    return {"per_class": per_class, "confusion": confusion, "truth": truth}


def class_thresholds(
    thresholds: Sequence[float], counts: np.ndarray, min_precision: float
) -> List[float]:
    """Per class, the lowest of ``thresholds`` at which the precision (percent) of the
    detections above it is at least ``min_precision``; 1.0 (no pseudo-box) where none is."""
    by_thresh = sorted(zip(thresholds, map(precision_recall, counts)), key=lambda x: x[0])
    out = []
    for c in range(counts.shape[1]):
        reached = [t for t, pr in by_thresh if pr[f"precision_c{c}"] >= min_precision]  # NaN: no
        out.append(float(reached[0]) if reached else 1.0)
    return out


def sweep(gt: dict, preds: List[dict], thresholds: Sequence[float], min_precision: float) -> Dict:
    """The record of a sweep (what ``scripts/pseudo_thresholds.py --json`` prints): the classes'
    names, the thresholds, :func:`sweep_counts`, :func:`class_thresholds` and
    :func:`sweep_errors`."""
    errors = sweep_errors(gt, preds, thresholds)  # one pass; the counts follow from it
    counts = _tp_fp_fn(errors)
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    return {
        "min_precision": min_precision,
        "thresholds": list(thresholds),
        "classes": [c.get("name", str(c["id"])) for c in cats],
        "counts_tp_fp_fn": counts.tolist(),
        "box_thresh_per_class": class_thresholds(thresholds, counts, min_precision),
        "error_kinds": list(ERROR_KINDS),
        "error_counts": errors["per_class"].sum(axis=1).tolist(),
        "error_counts_per_class": errors["per_class"].tolist(),
        "class_confusion": errors["confusion"].tolist(),
    }


def format_sweep_table(record: Dict) -> str:
    """Markdown of a :func:`sweep` record: precision / recall (percent) per class and threshold,
    and the chosen value."""
    thresholds, chosen = record["thresholds"], record["box_thresh_per_class"]
    per_thresh = [precision_recall(np.asarray(c)) for c in record["counts_tp_fp_fn"]]
    lines = [
        "| class | " + " | ".join(f"> {t:g}" for t in thresholds) + " | chosen |",
        "|---" * (len(thresholds) + 2) + "|",
    ]
    for c, name in enumerate(record["classes"]):
        cells = [f"{pr[f'precision_c{c}']:.1f} / {pr[f'recall_c{c}']:.1f}" for pr in per_thresh]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {chosen[c]:g} |")
    return "\n".join(lines)


def format_error_table(record: Dict) -> str:
    """Markdown of a :func:`sweep` record's ``error_counts``: per kind and threshold, the
    detections of that kind (all classes) and their share (percent) of the detections above
    the threshold."""
    thresholds, counts = record["thresholds"], np.asarray(record["error_counts"])
    totals = counts.sum(axis=1)
    lines = [
        "| kind | " + " | ".join(f"> {t:g}" for t in thresholds) + " |",
        "|---" * (len(thresholds) + 1) + "|",
    ]
    for k, kind in enumerate(record["error_kinds"]):
        cells = [
            f"{n} ({100.0 * n / total:.1f} %)" if total else "0"
            for n, total in zip(counts[:, k], totals)
        ]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_class_errors(record: Dict, thresh: float) -> str:
    """Markdown of a :func:`sweep` record at one of its thresholds: per predicted class, its
    detections of each kind, then the true class of the cells its wrong-class detections
    label. Raises ValueError if ``thresh`` is not one of the record's thresholds."""
    if thresh not in record["thresholds"]:
        raise ValueError(f"{thresh:g} is not one of the swept thresholds {record['thresholds']}")
    t = record["thresholds"].index(thresh)
    names, kinds = record["classes"], record["error_kinds"]
    per_class, confusion = record["error_counts_per_class"][t], record["class_confusion"][t]
    lines = [
        f"| above {thresh:g}, predicted class | " + " | ".join(kinds)
        + " | | the wrong-class ones on cells of: " + " / ".join(names) + " |",
        "|---" * (len(kinds) + 3) + "|",
    ]
    for c, name in enumerate(names):
        row = " | ".join(str(n) for n in per_class[c])
        lines.append(f"| {name} | {row} | | " + " / ".join(str(n) for n in confusion[c]) + " |")
    return "\n".join(lines)
