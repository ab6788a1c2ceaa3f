"""bench.py runs end to end and reports every measurement (no timing is asserted)."""

import json
import os
import subprocess
import sys

import pytest
from dualalign_testing import REPO_ROOT


@pytest.mark.slow
def test_quick_bench_writes_results(tmp_path):
    cmd = [
        sys.executable,
        os.path.join(REPO_ROOT, "scripts", "bench.py"),
        "--quick",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--eval-images",
        "50",
        "--large",
        "512",
        "--machine",
        "test-machine",
        "--output",
        str(tmp_path),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    headline = json.loads(res.stdout.strip().splitlines()[-1])
    for key in (
        "step_ratio_vs_supervised_same_images",
        "step_ratio_vs_mean_teacher",
        "step_ratio_vs_backbone_only_same_images",
        "infer_ratio_vs_plain",
        "loader_ratio",
    ):
        assert headline[key] > 0
    result = json.loads((tmp_path / "test-machine-quick.json").read_text())
    assert set(result["steps"]) == {
        "a_supervised_labeled",
        "b0_backbone_only_same_images",
        "b_supervised_same_images",
        "c_dualalign",
        "d_csd",
        "e_mean_teacher",
    }
    assert "| c_dualalign |" in (tmp_path / "test-machine-quick.md").read_text()
