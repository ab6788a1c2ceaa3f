"""Describe a detection set: image and box counts per class and box-size quantiles.

Used by ``scripts/check_dataset.py`` to print what a set holds before training on it.
"""

from collections import Counter

import numpy as np
from detectron2.structures import BoxMode

__all__ = ["dataset_summary", "format_summary"]


def dataset_summary(records, thing_classes=()):
    """Count images and boxes and describe the box sizes.

    Args:
        records (list[dict]): detectron2 records (labelled or not).
        thing_classes (Sequence[str]): class names indexed by contiguous category id.

    Returns:
        dict: "images", "labeled" (whether any record has annotations),
        "images_without_boxes", "boxes", "boxes_per_class" and "images_per_class" (name ->
        count, every class listed), "box_width" and "box_height" (``{"min", "25%", "50%",
        "75%", "max"}`` in pixels, or None without boxes).
    """
    boxes, images = Counter(), Counter()
    widths, heights = [], []
    num_empty = 0
    for record in records:
        annotations = record.get("annotations") or []
        num_empty += not annotations
        for ann in annotations:
            x0, y0, x1, y1 = BoxMode.convert(
                list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS
            )
            widths.append(x1 - x0)
            heights.append(y1 - y0)
            boxes[ann["category_id"]] += 1
        for category in {ann["category_id"] for ann in annotations}:
            images[category] += 1

    def name(idx):
        return thing_classes[idx] if 0 <= idx < len(thing_classes) else f"<id {idx}>"

    ids = list(range(len(thing_classes))) + sorted(set(boxes) - set(range(len(thing_classes))))
    return {
        "images": len(records),
        "labeled": any("annotations" in r for r in records),
        "images_without_boxes": num_empty,
        "boxes": sum(boxes.values()),
        "boxes_per_class": {name(i): boxes[i] for i in ids},
        "images_per_class": {name(i): images[i] for i in ids},
        "box_width": _quantiles(widths),
        "box_height": _quantiles(heights),
    }


def format_summary(summary):
    """Render ``dataset_summary``'s dict as a few human-readable lines (no trailing newline)."""
    if not summary["labeled"]:
        return f"images: {summary['images']} (unlabelled)"
    lines = [
        f"images: {summary['images']} ({summary['images_without_boxes']} without boxes)",
        f"boxes: {summary['boxes']}",
    ]
    if summary["boxes_per_class"]:
        width = max(len("class"), *(len(n) for n in summary["boxes_per_class"]))
        lines.append(f"  {'class':<{width}}  {'boxes':>7}  {'images':>7}")
        for name, count in summary["boxes_per_class"].items():
            lines.append(f"  {name:<{width}}  {count:>7}  {summary['images_per_class'][name]:>7}")
    for key in ("box_width", "box_height"):
        q = summary[key]
        if q is not None:
            values = "  ".join(f"{k} {v:.1f}" for k, v in q.items())
            lines.append(f"{key.replace('_', ' ') + ' (px):':<17} {values}")
    return "\n".join(lines)


def _quantiles(values):
    if not values:
        return None
    q = np.percentile(np.asarray(values, dtype=np.float64), [0, 25, 50, 75, 100])
    return dict(zip(("min", "25%", "50%", "75%", "max"), (float(v) for v in q)))
