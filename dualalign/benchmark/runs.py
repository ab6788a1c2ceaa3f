"""One benchmark run's folder: its name, what it keeps, and the record read from it.

A run's folder ``<results>/<label>/runs/<method>_f<fraction>_s<seed>/`` is the OUTPUT_DIR of its
``train_net.py``. A finished run keeps ``result.json`` (written by the harness), ``metrics.json``
(detectron2's JSONWriter: every loss term, lambda, pseudo-label counts, bank fill) and
``model_final.pth``; its other checkpoints are removed.

The evaluated model's AP is read from ``inference/<test set>/range_ap.json``, whose ``"model"``
key says which model it is ("teacher", "student" or "detector"; "detector" when the key is
missing). A model with a teacher also leaves ``range_ap_teacher.json`` and
``range_ap_student.json`` beside it, in the same format.
"""

import json
import os
from typing import List, Sequence, Tuple

__all__ = ["collect", "prune_checkpoints", "read_run_ap", "run_name", "unfinished"]

AP_FILE = "range_ap.json"
MODEL_AP_FILES = {"teacher": "range_ap_teacher.json", "student": "range_ap_student.json"}


def run_name(method: str, fraction: float, seed: int) -> str:
    return f"{method}_f{fraction:g}_s{seed}"


def _read_ap(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def read_run_ap(inference_dir: str) -> dict:
    """The AP part of a run's ``result.json``, from the evaluator's files in ``inference_dir``.

    Returns:
        ``{"evaluated", "mAP", "per_class"}`` of the evaluated model, plus ``"models":
        {"teacher": {"mAP", "per_class"}, "student": {...}}`` when both per-model files exist.
    """
    ap = _read_ap(os.path.join(inference_dir, AP_FILE))
    out = {"evaluated": ap.get("model", "detector"), "mAP": ap["mAP"], "per_class": ap["per_class"]}
    paths = {m: os.path.join(inference_dir, name) for m, name in MODEL_AP_FILES.items()}
    if all(os.path.isfile(p) for p in paths.values()):
        out["models"] = {}
        for model, path in paths.items():
            model_ap = _read_ap(path)
            out["models"][model] = {"mAP": model_ap["mAP"], "per_class": model_ap["per_class"]}
    return out


def prune_checkpoints(run_dir: str) -> None:
    """A finished run keeps ``model_final.pth`` only: a grid of 48 would otherwise hold ~30 GB."""
    for name in os.listdir(run_dir):
        if name.startswith("model_") and name.endswith(".pth") and name != "model_final.pth":
            os.remove(os.path.join(run_dir, name))


def unfinished(grid: Sequence[Tuple[float, str, int]], out_dir: str) -> List[tuple]:
    """The ``(fraction, method, seed)`` cells of ``grid`` whose run has no ``result.json`` yet."""
    return [
        (f, m, s)
        for f, m, s in grid
        if not os.path.isfile(os.path.join(out_dir, "runs", run_name(m, f, s), "result.json"))
    ]


def collect(out_dir: str) -> List[dict]:
    """Every finished run's ``result.json`` under ``out_dir/runs``, sorted by run name.

    Each record gains ``"metrics_file"``: its ``metrics.json`` relative to ``out_dir`` (``None``
    when the run has none).
    """
    runs = []
    runs_dir = os.path.join(out_dir, "runs")
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        path = os.path.join(runs_dir, name, "result.json")
        if os.path.isfile(path):
            with open(path) as f:
                run = json.load(f)
            metrics = os.path.join("runs", name, "metrics.json")
            has_metrics = os.path.isfile(os.path.join(out_dir, metrics))
            run["metrics_file"] = metrics if has_metrics else None
            runs.append(run)
    return runs
