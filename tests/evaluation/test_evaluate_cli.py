"""scripts/evaluate.py run as a subprocess: JSON summary on the last line, exit 2 on bad input."""

import json
import os
import subprocess
import sys

import pytest

from dualalign.utils.paths import repo_root

SCRIPT = os.path.join(repo_root(), "scripts", "evaluate.py")

GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "categories": [{"id": 3, "name": "A"}, {"id": 7, "name": "B"}, {"id": 12, "name": "C"}],
    "annotations": [
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10]},
        {"image_id": 2, "category_id": 7, "bbox": [20, 20, 10, 10]},
    ],
}
# A: IoU 0.55 -> TP at 0.1..0.5, FP at 0.6, 0.7 (AP 100 x5, 0 x2); B: exact (AP 100).
PREDS = [
    {"image_id": 1, "category_id": 3, "bbox": [0, 0, 5.5, 10], "score": 0.9},
    {"image_id": 2, "category_id": 7, "bbox": [20, 20, 10, 10], "score": 0.8},
]


def _write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def _run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        cwd=cwd or repo_root(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_json_summary(tmp_path):
    gt, pred = _write(tmp_path / "gt.json", GT), _write(tmp_path / "pred.json", PREDS)
    proc = _run("--gt", gt, "--pred", pred, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == {"mAP", "per_class", "per_iou"}
    assert out["per_class"]["A"] == pytest.approx(500 / 7, abs=1e-6)
    assert out["per_class"]["B"] == pytest.approx(100.0, abs=1e-6)
    assert out["per_class"]["C"] is None
    assert out["mAP"] == pytest.approx((500 / 7 + 100) / 2, abs=1e-6)
    assert list(out["per_iou"]) == ["0.10", "0.20", "0.30", "0.40", "0.50", "0.60", "0.70"]
    assert out["per_iou"]["0.70"] == pytest.approx(50.0, abs=1e-6)
    assert "mean" in proc.stdout


def test_cli_custom_iou_and_empty_predictions(tmp_path):
    gt, pred = _write(tmp_path / "gt.json", GT), _write(tmp_path / "pred.json", [])
    proc = _run("--gt", gt, "--pred", pred, "--iou", "0.5,0.75", "--json", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["mAP"] == 0.0 and list(out["per_iou"]) == ["0.50", "0.75"]


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing", "nope.json"),
        ("invalid", "pred.json"),
        ("bad_category", "category_id 5"),
        ("bad_image", "image_id 42"),
        ("bad_iou", "--iou"),
    ],
)
def test_cli_bad_input_exits_2(tmp_path, case, needle):
    gt = _write(tmp_path / "gt.json", GT)
    pred = _write(tmp_path / "pred.json", PREDS)
    iou = "0.1:0.7:0.1"
    if case == "missing":
        pred = str(tmp_path / "nope.json")
    elif case == "invalid":
        _write(tmp_path / "pred.json", "[{oops")
    elif case == "bad_category":
        _write(tmp_path / "pred.json", [dict(PREDS[0], category_id=5)])
    elif case == "bad_image":
        _write(tmp_path / "pred.json", [dict(PREDS[0], image_id=42)])
    else:
        iou = "0.1-0.7"
    proc = _run("--gt", gt, "--pred", pred, "--iou", iou, "--json")
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    if case in ("invalid", "bad_category", "bad_image"):
        assert "pred.json" in proc.stderr
