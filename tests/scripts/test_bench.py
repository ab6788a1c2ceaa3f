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


def test_setting_defaults_and_flag_overrides():
    sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
    import bench

    paper = bench.setting(bench.parse_args(["--device", "cpu"]))
    assert (paper["size"], paper["n_l"], paper["n_u"], paper["repeats"]) == (1200, 4, 4, 10)
    # the paper setting trains from random init, so it must not keep frozen BN
    assert paper["opts"] == ["MODEL.DEVICE", "cpu"] + bench.SETTINGS["paper"]["opts"]
    assert "BN" in paper["opts"] and "FREEZE_AT" in " ".join(paper["opts"])
    quick = bench.setting(
        bench.parse_args(["--quick", "--device", "cpu", "--repeats", "1", "--warmup", "0"])
    )
    assert (quick["size"], quick["repeats"], quick["warmup"], quick["large"]) == (256, 1, 0, 1024)
    assert quick["opts"] == ["MODEL.DEVICE", "cpu"]
    # the table itself is not modified by a call
    assert bench.SETTINGS["quick"]["repeats"] == 5 and bench.SETTINGS["paper"]["opts"][0] == (
        "MODEL.WEIGHTS"
    )
