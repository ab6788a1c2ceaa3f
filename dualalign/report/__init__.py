"""The run report of ``scripts/predict.py --report``: slide triage, cell galleries, one page."""

from .gallery import crop_detection, top_per_class, write_gallery
from .html import render_report, write_report
from .triage import TRIAGE_MODES, TriageRule, describe_triage, triage_score

__all__ = [
    "TRIAGE_MODES",
    "TriageRule",
    "crop_detection",
    "describe_triage",
    "render_report",
    "top_per_class",
    "triage_score",
    "write_gallery",
    "write_report",
]
