"""COCO-style box AP averaged over a custom IoU range (the paper's "mAP from AP10 to AP70").

The paper reports AP averaged over IoU thresholds 0.10, 0.20, ..., 0.70 instead of COCO's
0.50:0.95. We run plain pycocotools ``COCOeval`` with ``params.iouThrs`` set to that grid and
read ``cocoeval.eval["precision"]`` ourselves.

Why not ``COCOeval.summarize()``: it looks up IoU 0.5 and 0.75 in ``params.iouThrs`` by exact
float equality, so with a custom grid its AP50/AP75 come out as -1 (or NaN) and its printed
table is misleading. It also prints to stdout. Instead, from the precision array of shape
``[T, R, K, A, M]`` (IoU thresholds, 101 recall thresholds, classes, area ranges, maxDets) we
take area range "all" (index 0) and the last maxDets entry (``max_dets``), so that
``AP[t, k] = mean_r precision[t, r, k, 0, -1]``.

Averaging convention: pycocotools writes -1 for every ``(t, r)`` of a class with no ground
truth, and values >= 0 otherwise, so a class is either fully valid or fully invalid. Classes
without ground truth get NaN and are excluded from every mean. Then::

    per_class[k]  = mean_t AP[t, k]
    per_iou[t]    = mean over valid k of AP[t, k]
    mAP           = mean over valid k of per_class[k]

which equals COCO's convention (mean of all valid precision entries). All APs are in percent.
detectron2's fast COCO eval needs its compiled ``_C`` extension, so only pycocotools is used.
"""

import contextlib
import copy
import io
import json
import math
from typing import Any, Dict, List, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

__all__ = [
    "parse_iou_range",
    "iou_key",
    "coco_from_dict",
    "validate_predictions",
    "evaluate_coco_range",
    "matched_cocoeval",
    "format_ap_table",
    "to_jsonable",
    "dumps_result",
]


def parse_iou_range(spec: str) -> List[float]:
    """Parse an IoU threshold spec into a sorted list of thresholds.

    Args:
        spec: either ``"start:stop:step"`` (stop inclusive, e.g. ``"0.1:0.7:0.1"`` gives
            ``[0.1, 0.2, ..., 0.7]``) or a comma-separated list (``"0.1,0.3,0.5"``).

    Returns:
        Thresholds rounded to 10 decimals, sorted ascending, each in ``(0, 1]``.

    Raises:
        ValueError: on malformed specs, non-positive steps, duplicates or out-of-range values.
    """
    text = str(spec).strip()
    hint = "expected 'start:stop:step' (e.g. '0.1:0.7:0.1') or a list like '0.1,0.3,0.5'"
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
        else:
            parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"invalid IoU range {spec!r}: {hint}") from None
    if ":" in text:
        start, stop, step = parts
        if step <= 0 or stop < start:
            raise ValueError(f"invalid IoU range {spec!r}: need step > 0 and stop >= start")
        n = int(math.floor((stop - start) / step + 1e-9))
        values = [round(start + i * step, 10) for i in range(n + 1)]
    else:
        values = sorted(round(v, 10) for v in parts)
        if len(set(values)) != len(values):
            raise ValueError(f"invalid IoU range {spec!r}: duplicate thresholds")
    bad = [v for v in values if not 0.0 < v <= 1.0]
    if bad:
        raise ValueError(f"invalid IoU range {spec!r}: thresholds must be in (0, 1], got {bad}")
    return values


def iou_key(t: float) -> str:
    """Format an IoU threshold as a dict key: ``0.1 -> "0.10"``; finer values keep their digits."""
    return f"{t:.2f}" if abs(t - round(t, 2)) < 1e-9 else f"{t:g}"


def coco_from_dict(dataset: Dict[str, Any]) -> COCO:
    """Build an indexed pycocotools ``COCO`` from a COCO-format dict, without prints.

    Missing ``iscrowd`` (-> 0) and ``area`` (-> box w*h) fields of annotations are filled in,
    since ``COCOeval`` needs both. The input dict is not modified.

    Raises:
        ValueError: if ``images``, ``annotations`` or ``categories`` is missing or malformed.
    """
    if not isinstance(dataset, dict):
        raise ValueError("ground truth must be a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise ValueError(f"ground truth has no '{key}' list (COCO format required)")
    data = dict(dataset)
    anns = []
    for i, ann in enumerate(dataset["annotations"]):
        if not isinstance(ann, dict) or not {"image_id", "category_id", "bbox"} <= set(ann):
            raise ValueError(
                f"ground-truth annotation #{i} {ann!r} needs image_id, category_id and bbox"
            )
        ann = dict(ann)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        ann.setdefault("id", i + 1)
        anns.append(ann)
    data["annotations"] = anns
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def validate_predictions(coco_gt: COCO, predictions: Sequence[Dict[str, Any]]) -> None:
    """Check COCO result records against the ground truth.

    Raises:
        ValueError: naming the first bad record (index and content) and how to fix it.
    """
    img_ids = set(coco_gt.getImgIds())
    cat_ids = set(coco_gt.getCatIds())
    for i, p in enumerate(predictions):
        where = f"prediction #{i} {p!r}"
        if not isinstance(p, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(p):
            raise ValueError(f"{where}: each record needs image_id, category_id, bbox, score")
        box = p["bbox"]
        if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(map(_is_num, box)):
            raise ValueError(f"{where}: bbox must be 4 numbers [x, y, width, height]")
        if not _is_num(p["score"]):
            raise ValueError(f"{where}: score must be a number")
        if p["image_id"] not in img_ids:
            raise ValueError(
                f"{where}: image_id {p['image_id']!r} is not in the ground truth; "
                "use the image ids of the ground-truth 'images' list"
            )
        if p["category_id"] not in cat_ids:
            raise ValueError(
                f"{where}: category_id {p['category_id']!r} is not declared in the ground truth "
                f"(declared: {sorted(cat_ids)}); map predicted classes to dataset category ids"
            )


def _load_results(coco_gt: COCO, predictions: Sequence[Dict[str, Any]]) -> COCO:
    """``coco_gt.loadRes`` on copies of the records; also handles an empty list."""
    if len(predictions) == 0:  # loadRes indexes anns[0]: build an empty result set instead
        res = COCO()
        res.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset["categories"]),
            "annotations": [],
        }
        res.createIndex()
        return res
    anns = [
        {
            "image_id": p["image_id"],
            "category_id": p["category_id"],
            "bbox": [float(v) for v in p["bbox"]],
            "score": float(p["score"]),
        }
        for p in predictions
    ]
    return coco_gt.loadRes(anns)


def matched_cocoeval(
    coco_gt: COCO,
    predictions: Sequence[Dict[str, Any]],
    iou_thresholds: Sequence[float],
    max_dets: int = 200,
) -> COCOeval:
    """``COCOeval`` on the IoU grid after ``evaluate()``: the per-image matches, not yet
    accumulated (:func:`evaluate_coco_range` accumulates them; ``weighted_ap`` re-weights them).

    Raises:
        ValueError: bad thresholds / max_dets, or a prediction whose image_id or category_id
            is not in the ground truth.
    """
    thrs = [float(t) for t in iou_thresholds]
    if not thrs or any(not 0.0 < t <= 1.0 for t in thrs):
        raise ValueError(f"iou_thresholds must be a non-empty list in (0, 1], got {thrs}")
    if int(max_dets) < 1:
        raise ValueError(f"max_dets must be >= 1, got {max_dets}")
    validate_predictions(coco_gt, predictions)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = _load_results(coco_gt, predictions)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.iouThrs = np.asarray(thrs, dtype=np.float64)
        # evaluate() sorts maxDets: keep max_dets the largest so it is the last entry.
        ev.params.maxDets = sorted({d for d in (1, 10) if d < max_dets} | {int(max_dets)})
        ev.evaluate()
    return ev


def evaluate_coco_range(
    coco_gt: COCO,
    predictions: Sequence[Dict[str, Any]],
    iou_thresholds: Sequence[float],
    max_dets: int = 200,
) -> Dict[str, Any]:
    """Box AP per class and per IoU threshold, averaged over the threshold range.

    Args:
        coco_gt: ground truth; category ids need not be contiguous (e.g. 3, 7, 12).
        predictions: COCO result records ``{image_id, category_id, bbox: [x, y, w, h], score}``
            with dataset category ids. Not modified.
        iou_thresholds: T thresholds in (0, 1].
        max_dets: detections kept per image (highest scores first).

    Returns:
        ``{"mAP": float, "per_class": {name: AP}, "per_iou": {"0.10": AP, ...},
        "per_class_per_iou": {name: {"0.10": AP, ...}}}``, AP in percent. Classes without
        ground truth are NaN and excluded from ``mAP`` and ``per_iou`` (see module docstring).
        No predictions gives 0.0 for every class with ground truth.

    Raises:
        ValueError: bad thresholds / max_dets, or a prediction whose image_id or category_id
            is not in the ground truth.
    """
    thrs = [float(t) for t in iou_thresholds]
    ev = matched_cocoeval(coco_gt, predictions, thrs, max_dets)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # [T, R, K]
    valid = precision > -1
    with np.errstate(invalid="ignore"):
        sums = np.where(valid, precision, 0.0).sum(axis=1)
        ap = 100.0 * sums / valid.sum(axis=1)  # [T, K], NaN where class has no GT
    ap = np.round(ap, 10)  # drop pycocotools' eps noise (np.spacing(1)): 99.99999999999999 -> 100
    cat_ids = list(ev.params.catIds)
    names = [coco_gt.cats[c]["name"] for c in cat_ids]
    keys = [iou_key(t) for t in thrs]
    has_gt = ~np.isnan(ap).any(axis=0)  # [K]
    per_class = {n: float(ap[:, k].mean()) for k, n in enumerate(names)}
    per_iou = {
        key: float(ap[i, has_gt].mean()) if has_gt.any() else float("nan")
        for i, key in enumerate(keys)
    }
    valid_means = [per_class[n] for k, n in enumerate(names) if has_gt[k]]
    return {
        "mAP": float(np.mean(valid_means)) if valid_means else float("nan"),
        "per_class": per_class,
        "per_iou": per_iou,
        "per_class_per_iou": {
            n: {key: float(ap[i, k]) for i, key in enumerate(keys)} for k, n in enumerate(names)
        },
    }


def to_jsonable(obj: Any) -> Any:
    """Copy of ``obj`` with float NaN replaced by ``None`` (JSON null), recursively."""
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def format_ap_table(result: Dict[str, Any]) -> str:
    """Text table of a :func:`evaluate_coco_range` result.

    Rows are the classes then ``"mean"``; columns are the AP averaged over IoU thresholds
    followed by one column per threshold. Classes without ground truth show ``n/a``.
    """
    keys = list(result["per_iou"].keys())
    rows = [
        [name, result["per_class"][name]] + [result["per_class_per_iou"][name][k] for k in keys]
        for name in result["per_class"]
    ]
    rows.append(["mean", result["mAP"]] + [result["per_iou"][k] for k in keys])
    rows = to_jsonable(rows)
    headers = ["class", "AP"] + [f"AP@{k}" for k in keys]
    return tabulate(rows, headers=headers, floatfmt=".2f", missingval="n/a", tablefmt="pipe")


def dumps_result(result: Dict[str, Any], **kwargs: Any) -> str:
    """``json.dumps`` of a result with NaN written as null (strict JSON)."""
    return json.dumps(to_jsonable(result), allow_nan=False, **kwargs)
