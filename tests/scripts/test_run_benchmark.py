"""The benchmark harness: grid, outputs, skipping finished runs and resuming a crashed one."""

import json
import os
import sys

import pytest
from dualalign_testing import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
import run_benchmark  # noqa: E402

import dualalign.benchmark.datasets as bench_datasets  # noqa: E402
from dualalign.benchmark.report import mean_std, tables_markdown  # noqa: E402

SHRINK = [
    "INPUT.MIN_SIZE_TRAIN",
    "(128,)",
    "INPUT.MAX_SIZE_TRAIN",
    "128",
    "INPUT.MIN_SIZE_TEST",
    "128",
    "INPUT.MAX_SIZE_TEST",
    "128",
    "MODEL.FPN.OUT_CHANNELS",
    "64",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "128",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "64",
]


@pytest.mark.slow
def test_grid_outputs_skip_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        bench_datasets,
        "SYNTHETIC_SIZES",
        dict(num_labeled=8, num_unlabeled=16, num_val=2, num_test=4),
    )
    argv = [
        "--dataset",
        "synthetic",
        "--data-root",
        str(tmp_path / "data"),
        "--methods",
        "supervised",
        "dualalign",
        "--fractions",
        "1.0",
        "--seeds",
        "0",
        "--iters",
        "2",
        "--output",
        str(tmp_path / "results"),
    ] + SHRINK
    assert run_benchmark.main(argv) == 0
    out = tmp_path / "results" / "synthetic"
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert len(runs) == 2
    keys = {
        "method",
        "labeled_fraction",
        "seed",
        "mAP",
        "per_class",
        "iterations",
        "config",
        "date",
        "machine",
    }
    assert all(keys <= set(r) for r in runs)
    assert {r["method"] for r in runs} == {"supervised", "dualalign"}
    assert all(set(r["per_class"]) == {"ASC-US", "LSIL", "HSIL", "AGC"} for r in runs)
    tables = (out / "tables.md").read_text()
    assert "Table 1" in tables and "Table 2" in tables and "Ours" in tables
    assert (out / "map_vs_fraction.png").stat().st_size > 1000

    # Finished runs are skipped: their result files are not rewritten.
    done = out / "runs" / "dualalign_f1_s0" / "result.json"
    mtime = done.stat().st_mtime_ns
    assert run_benchmark.main(argv) == 0
    assert done.stat().st_mtime_ns == mtime

    # The exit status speaks of the runs asked for: a subset of a fuller folder is complete,
    # and a report over a seed that never ran is not.
    subset = list(argv)
    subset.remove("dualalign")
    assert run_benchmark.main(subset) == 0
    unrun = list(argv)
    unrun[unrun.index("--seeds") + 1] = "7"
    assert run_benchmark.main(["--report-only"] + unrun) == 1
    out_text = capsys.readouterr().out
    assert "2 of the 2 runs asked for have no result" in out_text
    assert "supervised_f1_s7" in out_text and "dualalign_f1_s7" in out_text

    # A crashed run (checkpoint, no result) restarts from its checkpoint with --resume.
    crashed = out / "runs" / "supervised_f1_s0"
    (crashed / "result.json").unlink()
    assert (crashed / "last_checkpoint").exists()
    assert run_benchmark.main(argv) == 0
    result = json.loads((crashed / "result.json").read_text())
    assert result["resumed"] is True
    assert "--resume" in (crashed / "harness.log").read_text()


def test_tables_mean_and_std():
    assert mean_std([10.0, 12.0]) == "11.0 ± 1.4"
    assert mean_std([3.0]) == "3.0"
    assert mean_std([]) == "n/a"
    runs = [
        {
            "method": m,
            "labeled_fraction": 0.25,
            "seed": s,
            "mAP": v,
            "per_class": {"A": v},
            "iterations": 5,
            "date": "2026-11-26",
            "machine": "test",
        }
        for m, s, v in [("supervised", 0, 10.0), ("supervised", 1, 12.0), ("dualalign", 0, 13.0)]
    ]
    md = tables_markdown(runs, "toy")
    assert "| 25% | Faster R-CNN (supervised) | 11.0 ± 1.4 | 11.0 ± 1.4 |" in md
    assert "| 25% | Ours | 13.0 | 13.0 |" in md


def _toy_run(method, fraction, seed, value):
    return {
        "method": method,
        "labeled_fraction": fraction,
        "seed": seed,
        "mAP": value,
        "per_class": {"A": value},
        "iterations": 5,
        "date": "2026-11-26",
        "machine": "test",
    }


def test_partial_grid_marks_missing_rows_and_picks_a_complete_table2_fraction():
    # 25 %: both methods; 100 %: supervised only (the rest was not run).
    runs = [_toy_run("supervised", 0.25, 0, 10.0), _toy_run("csd", 0.25, 0, 11.0)]
    runs += [_toy_run("dualalign", 0.25, 0, 12.0), _toy_run("supervised", 1.0, 0, 20.0)]
    md = tables_markdown(runs, "toy")
    assert "| 100% | Ours | not run | not run |" in md
    assert "| CSD | 11.0 | not run |" in md  # the summary: one column per fraction
    assert "## Table 2: all methods at 25% labelled" in md
    assert "not all finished" in md
    runs += [_toy_run("csd", 1.0, 0, 21.0), _toy_run("dualalign", 1.0, 0, 22.0)]
    md = tables_markdown(runs, "toy")
    assert "## Table 2: all methods at 100% labelled" in md and "not run" not in md


def test_jobs_split_the_cores_and_finished_runs_keep_final_weights_only(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert run_benchmark.run_env(4)["OMP_NUM_THREADS"] == "4"
    assert "OMP_NUM_THREADS" not in run_benchmark.run_env(1)
    for name in ("model_0000049.pth", "model_final.pth", "last_checkpoint", "log.txt"):
        (tmp_path / name).write_text("x")
    run_benchmark.prune_checkpoints(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last_checkpoint",
        "log.txt",
        "model_final.pth",
    ]


def test_cervix93_needs_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="data-root"):
        bench_datasets.prepare_dataset("cervix93", str(tmp_path), False, "cervix93")


def test_cervix93_opts(shared_data_dir):
    data = bench_datasets.prepare_dataset(
        "cervix93", os.path.join(shared_data_dir, "cervix93"), True, "c93_agnostic_test"
    )
    opts = dict(zip(data["opts"][::2], data["opts"][1::2]))
    assert opts["MODEL.ROI_HEADS.NUM_CLASSES"] == "1"
    assert "REMAINDER_AS_UNLABELED" in " ".join(data["fraction_opts"](0.25))
    assert "c93_agnostic_test_pool" in " ".join(data["fraction_opts"](1.0))
