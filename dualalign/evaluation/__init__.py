"""Evaluation: COCO-style box AP averaged over an IoU range (the paper's AP10..AP70).

``RangeAPEvaluator`` is imported lazily so that the pure functions (and scripts/evaluate.py)
do not pay for importing torch/detectron2.
"""

from .range_ap import evaluate_coco_range, format_ap_table, parse_iou_range

__all__ = ["RangeAPEvaluator", "evaluate_coco_range", "format_ap_table", "parse_iou_range"]


def __getattr__(name):
    if name == "RangeAPEvaluator":
        from .evaluator import RangeAPEvaluator

        return RangeAPEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
