"""What explains a protocol arm's paired difference: its runs' diagnostics and AP per IoU.

Per run, from its ``metrics.json``: the pseudo-label precision and recall against the pool's
hidden truth at the end of the run (``pseudo_quality/*``), the mean gradient-norm share of the
unsupervised terms at the box-head features and the last backbone stage over the run
(``grad/*/unsup_over_sup``), the memory bank's age at the end (``bank/age``) and the mean number
of pseudo-labelled proposals per step (``pseudo/count_c*``). Per pair, from the evaluator's
``range_ap.json`` of the last evaluation of the arm and of supervised-continue: the AP
difference at each IoU threshold (where a difference lands: classification shows at IoU 0.1,
localisation at 0.7).
"""

import json
import math
from typing import Dict, List

from .protocol_settings import metrics_records

__all__ = ["DIAGNOSTIC_KEYS", "arm_diagnostics", "delta_per_iou", "run_diagnostics"]

# summary name: (metrics.json key or key prefix, how the run's values are reduced)
DIAGNOSTIC_KEYS = {
    "pseudo_precision": ("pseudo_quality/precision", "last"),
    "pseudo_recall": ("pseudo_quality/recall", "last"),
    "grad_share_box_head": ("grad/box_head/unsup_over_sup", "mean"),
    "grad_share_backbone_last": ("grad/backbone_last/unsup_over_sup", "mean"),
    "bank_age": ("bank/age", "last"),
    "pseudo_per_step": ("pseudo/count_c", "mean_of_sum"),
}


def _finite(values: List[float]) -> List[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def run_diagnostics(metrics_file: str) -> Dict[str, float]:
    """The :data:`DIAGNOSTIC_KEYS` of one run (absent where the run logged none)."""
    records = metrics_records(metrics_file)
    out = {}
    for name, (key, how) in DIAGNOSTIC_KEYS.items():
        if how == "mean_of_sum":
            sums = [
                sum(v for k, v in r.items() if k.startswith(key))
                for r in records
                if any(k.startswith(key) for k in r)
            ]
            values = _finite(sums)
        else:
            values = _finite([r[key] for r in records if key in r])
        if values:
            out[name] = values[-1] if how == "last" else sum(values) / len(values)
    return out


def arm_diagnostics(runs: List[dict]) -> Dict[str, Dict[str, float]]:
    """``{arm: {diagnostic: mean over the arm's runs}}`` from each run's ``metrics_file``."""
    per_arm: Dict[str, Dict[str, List[float]]] = {}
    for r in runs:
        diag = run_diagnostics(r["metrics_file"])
        for k, v in diag.items():
            per_arm.setdefault(r["arm"], {}).setdefault(k, []).append(v)
    return {
        arm: {k: sum(v) / len(v) for k, v in d.items()} for arm, d in sorted(per_arm.items())
    }


def delta_per_iou(pairs: List[tuple]) -> Dict[str, float]:
    """Mean over pairs of (arm - reference) AP at each IoU threshold of the final models.

    Args:
        pairs: ``[(arm's range_ap.json, reference's range_ap.json)]``: the evaluator's files of
            the last evaluation of each run (``per_iou``: ``{"0.10": AP, ...}``).
    """
    sums: Dict[str, float] = {}
    for arm_file, ref_file in pairs:
        with open(arm_file) as f:
            a = json.load(f)["per_iou"]
        with open(ref_file) as f:
            b = json.load(f)["per_iou"]
        for k in a:
            if a[k] is not None and b.get(k) is not None:
                sums[k] = sums.get(k, 0.0) + a[k] - b[k]
    return {k: v / len(pairs) for k, v in sums.items()} if pairs else {}
