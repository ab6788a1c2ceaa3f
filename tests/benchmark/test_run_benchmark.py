"""The benchmark harness: grid, outputs, skipping finished runs and resuming a crashed one."""

import json
import os

import pytest
from dualalign_testing import INSTANT_TEST, quick_schedule_opts

import dualalign.benchmark.datasets as bench_datasets
from dualalign.benchmark import harness as run_benchmark
from dualalign.benchmark.report import mean_std, tables_markdown
from dualalign.benchmark.runs import collect, prune_checkpoints, read_run_ap

# The instant-test config's model and input sizes, for every run of the grid.
SHRINK = quick_schedule_opts(INSTANT_TEST, sections=("INPUT", "MODEL"))


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
    # Each run keeps its metrics.json beside its result.json, and the summary points to it.
    assert all(r["metrics_file"] == f"runs/{r['method']}_f1_s0/metrics.json" for r in runs)
    assert all((out / r["metrics_file"]).is_file() for r in runs)
    assert {r["evaluated"] for r in runs} <= {"detector", "student", "teacher"}
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
    prune_checkpoints(str(tmp_path))
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


def _write_ap(folder, name, mAP, model=None):
    record = {"mAP": mAP, "per_class": {"A": mAP, "B": None}, "per_iou": {"0.1": mAP}}
    if model is not None:
        record["model"] = model
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(record))


def test_result_records_the_evaluated_model_and_both_of_a_teacher_pair(tmp_path):
    plain = tmp_path / "plain"
    _write_ap(plain, "range_ap.json", 10.0)  # written before the "model" key existed
    assert read_run_ap(str(plain)) == {
        "evaluated": "detector",
        "mAP": 10.0,
        "per_class": {"A": 10.0, "B": None},
    }
    pair = tmp_path / "pair"
    _write_ap(pair, "range_ap.json", 12.0, model="teacher")
    _write_ap(pair, "range_ap_teacher.json", 12.0, model="teacher")
    _write_ap(pair, "range_ap_student.json", 11.0, model="student")
    ap = read_run_ap(str(pair))
    assert ap["evaluated"] == "teacher" and ap["mAP"] == 12.0
    assert ap["models"] == {
        "teacher": {"mAP": 12.0, "per_class": {"A": 12.0, "B": None}},
        "student": {"mAP": 11.0, "per_class": {"A": 11.0, "B": None}},
    }
    # One of the pair alone is not a pair.
    (pair / "range_ap_student.json").unlink()
    assert "models" not in read_run_ap(str(pair))


def test_summary_points_to_each_runs_metrics(tmp_path):
    for name, metrics in (("supervised_f1_s0", True), ("dualalign_f1_s0", False)):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps(_toy_run(name.split("_f")[0], 1.0, 0, 1.0)))
        if metrics:
            (run / "metrics.json").write_text('{"iteration": 0}\n')
    (tmp_path / "runs" / "csd_f1_s0").mkdir()  # unfinished: no result.json
    runs = collect(str(tmp_path))
    assert [r["method"] for r in runs] == ["dualalign", "supervised"]
    assert runs[0]["metrics_file"] is None
    assert runs[1]["metrics_file"] == "runs/supervised_f1_s0/metrics.json"


def test_gitignore_keeps_run_records_and_drops_checkpoints():
    import subprocess

    from dualalign.utils.paths import repo_root

    run = "results/synthetic/runs/dualalign_f1_s0/"
    paths = [run + n for n in ("result.json", "metrics.json", "model_final.pth", "log.txt")]
    paths.append(run + "inference/synthetic_test/coco_instances_results.json")
    res = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths],
        cwd=repo_root(),
        capture_output=True,
        text=True,
    )
    if res.returncode == 128:
        pytest.skip(f"not a git checkout: {res.stderr.strip()}")
    assert sorted(res.stdout.split()) == sorted(paths[2:])
