"""Per-class pseudo-box thresholds from a labelled split (dualalign/evaluation/threshold_sweep.py,
scripts/pseudo_thresholds.py): counts by hand, the choice rule, the script's output and errors."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from dualalign.evaluation.threshold_sweep import class_thresholds, sweep_counts, sweep_errors
from dualalign.utils.paths import repo_root


def run_script(*args):
    script = os.path.join(repo_root(), "scripts", "pseudo_thresholds.py")
    cmd = [sys.executable, script, *map(str, args)]
    return subprocess.run(cmd, cwd=repo_root(), capture_output=True, text=True, timeout=120)

GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "categories": [{"id": 7, "name": "LSIL"}, {"id": 3, "name": "ASC-US"}],  # not in id order
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10]},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [50, 50, 10, 10]},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [20, 20, 10, 10]},
    ],
}
PREDS = [
    {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.95},  # ASC-US tp
    {"image_id": 1, "category_id": 3, "bbox": [50, 50, 10, 10], "score": 0.85},  # ASC-US on LSIL
    {"image_id": 2, "category_id": 3, "bbox": [70, 70, 10, 10], "score": 0.6},  # ASC-US fp
    {"image_id": 1, "category_id": 7, "bbox": [50, 50, 10, 10], "score": 0.75},  # LSIL tp
]


def test_sweep_counts_by_hand_in_category_id_order():
    counts = sweep_counts(GT, PREDS, [0.5, 0.8, 0.9])
    # class 0 = category 3 (ASC-US), class 1 = category 7 (LSIL); columns tp, fp, fn
    assert counts[0].tolist() == [[1, 2, 1], [1, 0, 0]]
    assert counts[1].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert counts[2].tolist() == [[1, 0, 1], [0, 0, 1]]


def test_sweep_errors_by_hand():
    # kinds: correct, duplicate, class_beside_right, class_only, localisation, background
    out = sweep_errors(GT, PREDS, [0.5, 0.8, 0.9])
    errors = out["per_class"].sum(axis=1)
    # per predicted class at > 0.5: ASC-US one right, one on the LSIL cell, one background
    assert out["per_class"][0].tolist() == [[1, 0, 1, 0, 0, 1], [1, 0, 0, 0, 0, 0]]
    assert out["confusion"][0].tolist() == [[0, 1], [0, 0]]  # ASC-US on an LSIL cell
    assert out["confusion"][2].tolist() == [[0, 0], [0, 0]]
    # > 0.5: the ASC-US box on the LSIL cell sits beside the LSIL detection that took the cell
    assert errors[0].tolist() == [2, 0, 1, 0, 0, 1]
    # > 0.8: that LSIL detection (0.75) is gone, so the cell's only label has the wrong class
    assert errors[1].tolist() == [1, 0, 0, 1, 0, 0]
    assert errors[2].tolist() == [1, 0, 0, 0, 0, 0]
    counts = sweep_counts(GT, PREDS, [0.5, 0.8, 0.9])  # the kinds split tp and fp exactly
    assert (errors[:, 0] == counts[:, :, 0].sum(axis=1)).all()
    assert (errors[:, 1:].sum(axis=1) == counts[:, :, 1].sum(axis=1)).all()


def test_class_thresholds_lowest_reaching_the_precision_else_one():
    counts = sweep_counts(GT, PREDS, [0.5, 0.8, 0.9])
    assert class_thresholds([0.5, 0.8, 0.9], counts, 50.0) == [0.8, 0.5]
    assert class_thresholds([0.5, 0.8, 0.9], counts, 100.0) == [0.9, 0.5]
    none = np.zeros((2, 1, 3), dtype=np.int64)  # no detection above any threshold
    assert class_thresholds([0.5, 0.9], none, 50.0) == [1.0]


@pytest.mark.parametrize(
    "record",
    [
        {"image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 0.9},  # unknown category
        {"image_id": 9, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.9},  # unknown image
        {"image_id": [1], "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, "1", 1], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 1], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": float("nan")},
        "not a record",
    ],
)
def test_bad_prediction_is_refused_with_the_record(record):
    with pytest.raises(ValueError, match="record #4"):
        sweep_counts(GT, PREDS + [record], [0.5])


def test_script_prints_the_table_and_the_config_opt(tmp_path):
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(GT))
    pred.write_text(json.dumps(PREDS))
    proc = run_script(
        "--gt", gt, "--pred", pred, "--thresholds", "0.9,0.5,0.8",
        "--min-precision", "50", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "DUALALIGN.PSEUDO.BOX_THRESH_PER_CLASS [0.8,0.5]"
    record = json.loads(lines[-2])
    assert record["classes"] == ["ASC-US", "LSIL"] and record["thresholds"] == [0.5, 0.8, 0.9]
    assert "| ASC-US | 33.3 / 50.0 | 50.0 / 50.0 | 100.0 / 50.0 | 0.8 |" in proc.stdout
    assert record["error_counts"] == [[2, 0, 1, 0, 0, 1], [1, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0]]
    assert "| class_only | 0 (0.0 %) | 1 (50.0 %) | 0 (0.0 %) |" in proc.stdout
    assert record["class_confusion"][1] == [[0, 1], [0, 0]]
    # per class at the swept threshold nearest 0.9
    assert "| above 0.9, predicted class |" in proc.stdout
    assert "| ASC-US | 1 | 0 | 0 | 0 | 0 | 0 | | 0 / 0 |" in proc.stdout


@pytest.mark.parametrize(
    "pred, args, message",
    [
        ("[{}]", [], "record #0"),
        ('{"a": 1}', [], "expected a JSON list"),
        ("not json", [], "not valid JSON"),
        ("[]", ["--thresholds", "0.5,1.2"], "values in \\[0, 1\\)"),
        ("[]", ["--min-precision", "0"], "percentage"),
        ("[]", ["--thresholds", "0.5,0.8", "--errors-at", "0.9"], "--errors-at 0.9: one of"),
    ],
)
def test_script_bad_input_is_one_line_with_exit_code_2(tmp_path, pred, args, message):
    gt, p = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(GT))
    p.write_text(pred)
    proc = run_script("--gt", gt, "--pred", p, *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
    assert re.search(message, proc.stderr)
