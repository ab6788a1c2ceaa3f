#!/usr/bin/env python
"""Time and peak memory of ``predict.py`` on a large synthetic pyramidal slide, with and without
``--report``.

Usage:
    python scripts/measure_slide.py [--size 40000] [--tile-size 1200] [--work DIR] [--keep]
        [--compare-with CHECKOUT]

Writes a ``--size`` x ``--size`` slide (4 levels, tile by tile, tissue on most of it and black
square "cells"), saves a randomly initialised R-18 checkpoint of the synthetic CPU config, then
runs ``scripts/predict.py`` on the slide twice in a fresh process each: the default outputs,
and the same with ``--report``. The detector runs at 128 px (the tiles are shrunk), so the
figures are those of the slide pipeline (reading, tissue mask, merging, outputs, galleries)
rather than of the model. ``--compare-with`` names another checkout of the repository (e.g.
``git worktree add /tmp/old <commit>``) whose ``predict.py`` and package run first, on the same
slide, with the same flags. Prints one line per run: seconds, peak resident memory of the
process (``ru_maxrss``), tiles run and detections. The work folder is deleted unless
``--keep``.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from dualalign.engine.checkpoint import AtomicCheckpointer
from dualalign.engine.setup import build_cfg
from dualalign.engine.trainer import Trainer
from dualalign.utils.paths import config_path, repo_root
from dualalign.wsi.synthetic_slide import write_large_synthetic_slide

CONFIG = config_path("synthetic", "supervised_R18_cpu.yaml")
# 128 px forward passes and few boxes per tile: the slide pipeline, not the model, is measured.
OPTS = ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128", "MODEL.DEVICE", "cpu"]
OPTS += ["MODEL.RPN.POST_NMS_TOPK_TEST", "50", "TEST.DETECTIONS_PER_IMAGE", "4"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size", type=int, default=40000, help="slide side, level-0 pixels")
    parser.add_argument("--tile-size", type=int, default=1200, help="predict.py --tile-size")
    parser.add_argument("--cells", type=int, default=2400, help="black squares on the tissue")
    parser.add_argument("--work", default=None, help="work folder (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the slide and the outputs")
    parser.add_argument(
        "--compare-with", default=None, metavar="CHECKOUT", help="another checkout to run first"
    )
    return parser.parse_args(argv)


def run_measured(argv, env=None):
    """Run a command; returns (seconds, peak RSS in bytes of that process, exit code)."""
    start = time.time()
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.stderr.write(stderr[-3000:])
    return time.time() - start, usage.ru_maxrss * 1024, proc.returncode


def main(argv=None) -> int:
    args = parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="measure_slide_")
    os.makedirs(work, exist_ok=True)
    try:
        rng = np.random.default_rng(0)
        size = args.size
        margin = size // 20
        tissue = [(margin, margin, size - margin, size - margin)]
        xy = rng.uniform(margin, size - margin - 40, size=(args.cells, 2))
        cells = np.concatenate([xy, xy + rng.uniform(12, 40, size=(args.cells, 1))], axis=1)
        start = time.time()
        slide = write_large_synthetic_slide(
            os.path.join(work, "slide.tif"), size, size, tissue, cells
        )
        print(f"slide {size} x {size}: written in {time.time() - start:.0f} s", flush=True)

        torch.manual_seed(0)
        model = Trainer.build_model(build_cfg(CONFIG, OPTS))
        AtomicCheckpointer(model, save_dir=work).save("random")
        flags = ["--config-file", CONFIG, "--weights", os.path.join(work, "random.pth")]
        flags += ["--input", slide, "--tile-size", str(args.tile_size), "--score-thresh", "0"]
        flags += ["--no-progress"]
        runs = [
            ("default outputs", repo_root(), []),
            ("with --report", repo_root(), ["--report"]),
        ]
        if args.compare_with:
            runs.insert(0, (f"{args.compare_with}, default outputs", args.compare_with, []))
        for k, (name, checkout, extra) in enumerate(runs):
            out = os.path.join(work, f"run{k}")
            env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}
            script = os.path.join(checkout, "scripts", "predict.py")
            argv = [sys.executable, script, *flags, "--output", out, *extra, *OPTS]
            seconds, rss, code = run_measured(argv, env)
            if code:
                print(f"{name}: predict.py exited with {code}", file=sys.stderr)
                return 1
            with open(os.path.join(out, "summary.json")) as f:
                entry = json.load(f)["slides"][0]
            print(
                f"{name}: {seconds:.0f} s, peak RSS {rss / 2**30:.2f} GiB, "
                f"{entry['tiles_run']} of {entry['tiles']} tiles run, {entry['total']} detections "
                f"({platform.machine()}, {os.cpu_count()} CPUs)",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
