"""The benchmark harness (``scripts/run_benchmark.py``): every method x labelled fraction x seed.

Each run is ``train_net.py`` in its own process with the method's config and the shared
budget (iterations, batch, schedule, seed) of a preset. The harness is resumable: a run with a
``result.json`` is skipped, an interrupted run restarts from its last checkpoint (``--resume``).
Outputs, under ``<output>/<label>/``: ``results.json`` (every run, each pointing to its
``metrics.json``), ``tables.md`` (Tables 1 and 2, mean +- std over seeds),
``map_vs_fraction.png`` and ``runs/<run>/`` (see :mod:`dualalign.benchmark.runs`).
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

from ..utils.atomic import atomic_write_json
from ..utils.paths import repo_root
from .datasets import prepare_dataset
from .report import write_report
from .runs import collect, prune_checkpoints, read_run_ap, run_name, unfinished

__all__ = ["METHOD_CONFIGS", "PRESETS", "main", "parse_args", "run_env"]

METHOD_CONFIGS = {
    "supervised": "supervised_R18_cpu.yaml",
    "csd": "csd_R18_cpu.yaml",
    "mean_teacher": "mean_teacher_R18_cpu.yaml",
    "dualalign": "dualalign_R18_cpu.yaml",
    "dualalign_noproto": "dualalign_noproto_R18_cpu.yaml",
    "dualalign_noproposal": "dualalign_noproposal_R18_cpu.yaml",
}
GPU_CONFIGS = {k: v.replace("_R18_cpu", "_R101_FPN") for k, v in METHOD_CONFIGS.items()}

# Shared budgets. Every method of a preset gets exactly these settings.
PRESETS = {
    "cpu": {
        "config_dir": "configs/synthetic",
        "configs": METHOD_CONFIGS,
        # 48 runs (6 methods x 4 fractions x 2 seeds) in about 2 h on 2 cores with --jobs 2.
        "iters": 200,
        "opts": ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0"],
    },
    "gpu": {
        "config_dir": "configs/paper",
        "configs": GPU_CONFIGS,
        "iters": 90000,
        "opts": ["DATALOADER.NUM_WORKERS", "4"],
    },
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Reproduce the paper's Tables 1 and 2: every method x labelled fraction x seed"
    )
    p.add_argument("--dataset", required=True, choices=["synthetic", "cervix93"])
    p.add_argument(
        "--data-root", default="", help="dataset folder (cervix93: e.g. datasets/cervix93)"
    )
    p.add_argument("--class-agnostic", action="store_true", help="one class ('nucleus')")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument(
        "--methods", nargs="+", default=list(METHOD_CONFIGS), choices=list(METHOD_CONFIGS)
    )
    p.add_argument("--fractions", nargs="+", type=float, default=[0.25, 0.5, 0.75, 1.0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--iters", type=int, default=0, help="override the preset's iterations")
    p.add_argument("--output", default="results")
    p.add_argument("--num-gpus", type=int, default=1)
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once; each gets cores/jobs torch threads (2 single-thread runs use a"
        " 2-core CPU better than one 2-thread run; many runs can share one GPU)",
    )
    p.add_argument("--tag", default="", help="suffix of the results folder, for variants")
    p.add_argument("--report-only", action="store_true", help="rebuild tables from finished runs")
    p.add_argument(
        "opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config pairs for all runs"
    )
    return p.parse_args(argv)


def machine_description():
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    cpu = platform.processor() or platform.machine()
    return f"{platform.node()} ({cpu}, {os.cpu_count()} cores, {device})"


def run_env(jobs):
    """The environment of one run: with several runs at once, the cores are split between them."""
    env = dict(os.environ)
    if jobs > 1:
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


def run_one(args, preset, data, method, fraction, seed, run_dir, iters):
    config = os.path.join(repo_root(), preset["config_dir"], preset["configs"][method])
    opts = (
        preset["opts"]
        + data["opts"]
        + data["fraction_opts"](fraction)
        + [
            "OUTPUT_DIR",
            run_dir,
            "SEED",
            str(seed),
            "DUALALIGN.DATASETS.LABELED_FRACTION",
            str(fraction),
            "DUALALIGN.DATASETS.SPLIT_SEED",
            str(seed),
            "SOLVER.MAX_ITER",
            str(iters),
            "SOLVER.STEPS",
            f"({int(iters * 0.8)},)",
            "SOLVER.CHECKPOINT_PERIOD",
            str(max(50, iters // 4)),
            "TEST.EVAL_PERIOD",
            "0",
            "DUALALIGN.LOG_PERIOD",
            "20",
        ]
    )
    if args.preset == "cpu":
        ramp = str(iters // 2)
        opts += [
            "SOLVER.WARMUP_ITERS",
            str(min(100, iters // 5)),
            "DUALALIGN.RAMPUP_ITERS",
            ramp,
            "DUALALIGN.CSD.RAMPUP_ITERS",
            ramp,
            "DUALALIGN.CSD.RAMPDOWN_ITERS",
            str(iters // 6),
            "DUALALIGN.MEAN_TEACHER.RAMPUP_ITERS",
            ramp,
        ]
    opts += list(args.opts)  # last, so that a variant's opts win over the preset's
    resume = os.path.isfile(os.path.join(run_dir, "last_checkpoint"))
    cmd = (
        [
            sys.executable,
            os.path.join(repo_root(), "train_net.py"),
            "--config-file",
            config,
            "--num-gpus",
            str(args.num_gpus),
        ]
        + (["--resume"] if resume else [])
        + opts
    )
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "harness.log"), "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        start = time.time()
        proc = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=repo_root(), env=run_env(args.jobs)
        )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{run_dir}: train_net.py exited with {proc.returncode}; see harness.log"
        )
    return {
        "method": method,
        "labeled_fraction": fraction,
        "seed": seed,
        **read_run_ap(os.path.join(run_dir, "inference", data["test_name"])),
        "iterations": iters,
        "config": os.path.relpath(config, repo_root()),
        "date": datetime.date.today().isoformat(),
        "machine": machine_description(),
        "seconds": round(time.time() - start, 1),
        "resumed": resume,
        "jobs": args.jobs,
    }


def run_grid(args, preset, data, out_dir, label, todo, iters):
    """Run ``todo`` (``args.jobs`` at a time), writing each result and the report as runs end."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    failures = []
    with (
        ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool,
        tqdm(total=len(todo), desc=label, unit="run", dynamic_ncols=True) as bar,
    ):
        futures = {}
        for fraction, method, seed in todo:
            name = run_name(method, fraction, seed)
            run_dir = os.path.join(out_dir, "runs", name)
            args_ = (args, preset, data, method, fraction, seed, run_dir, iters)
            futures[pool.submit(run_one, *args_)] = (name, run_dir)
        for future in as_completed(futures):
            name, run_dir = futures[future]
            bar.update(1)
            try:
                result = future.result()
            except (RuntimeError, OSError) as e:
                failures.append(str(e))
                tqdm.write(f"FAILED {e}")
                continue
            atomic_write_json(os.path.join(run_dir, "result.json"), result)
            prune_checkpoints(run_dir)
            tqdm.write(f"{name}: mAP {result['mAP']:.1f} ({result['seconds']:.0f} s)")
            write_report(out_dir, collect(out_dir), label)
    return failures


def main(argv=None):
    """Run the grid of ``argv`` (see ``scripts/run_benchmark.py``); 0 when every run asked for
    has a result, else 1."""
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    iters = args.iters or preset["iters"]
    label = args.dataset + ("_agnostic" if args.class_agnostic else "")
    label += f"-{args.tag}" if args.tag else ""
    out_dir = os.path.join(args.output, label)
    data = prepare_dataset(args.dataset, args.data_root, args.class_agnostic, label)
    grid = [(f, m, s) for f in args.fractions for m in args.methods for s in args.seeds]
    todo = unfinished(grid, out_dir)
    print(
        f"{label}: {len(grid)} runs, {len(grid) - len(todo)} finished, {len(todo)} to go "
        f"({iters} iterations each)",
        flush=True,
    )
    if not args.report_only:
        failures = run_grid(args, preset, data, out_dir, label, todo, iters)
        if failures:
            print(f"{len(failures)} runs failed; rerun the same command to retry them")
    runs = collect(out_dir)
    write_report(out_dir, runs, label)
    print(f"wrote {out_dir}/results.json, tables.md, map_vs_fraction.png ({len(runs)} runs)")
    # The exit status speaks of the runs asked for, not of everything else in the folder.
    missing = [run_name(m, f, s) for f, m, s in unfinished(grid, out_dir)]
    if missing:
        print(f"{len(missing)} of the {len(grid)} runs asked for have no result: {missing}")
    return 1 if missing else 0

