"""A protocol's settings (:class:`ProtocolSettings`), where its runs and summaries go, and how
each of its runs trains (``train_net.py`` in a subprocess, one per run)."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

from ..utils.paths import repo_root
from .protocol_arms import CONTRASTS

__all__ = [
    "ProtocolSettings",
    "burn_in_dir",
    "config_file",
    "eval_history",
    "fraction_opts",
    "load_json",
    "metrics_records",
    "run_train_net",
    "stage_b_dir",
    "summary_dir",
]

@dataclass
class ProtocolSettings:
    """The budget of one protocol (every arm and pair gets exactly this)."""

    config_dir: str = "configs/synthetic"
    suffix: str = "_R18_cpu"
    # stage A at the continued fractions (25 %): at 1200 iterations the val mAP still moved 1.38
    # points over the last fifth, at 2400 0.71 (split 0, 300 val patches; docs/RESULTS.md)
    burn_in_iters: int = 2400
    # stage A at the gate-only fractions (100 %: four times the labels, still moving 1.29 points
    # over the last fifth of 2400 iterations); 0: burn_in_iters
    gate_burn_in_iters: int = 3600
    burn_in_lr: float = 0.01
    # the lr drops (tenfold each), as fractions of stage A. (0.7, 0.8): the second drop, at the
    # start of the last fifth, as in detectron2's schedules. With one drop at 70 % (the record
    # of 2026-12-02 to 04) 5 of 11 burn-ins jittered by more than the plateau gate allows over
    # the last fifth (1.28-1.56); with two, 3 of 3 moved 0.05-0.43 (docs/RESULTS.md)
    burn_in_steps: Sequence[float] = (0.7, 0.8)
    # stage A's BN statistics at each evaluation and in its checkpoint (which stage B freezes):
    # 0, the running averages (batch 2, momentum 0.1: about the last 20 batches); N, the average
    # over N labelled batches (detectron2's PreciseBN; the weights are the same either way). At
    # fixed weights the running ones moved val mAP by 1.10 points, the precise ones by 0.18
    # (burn-in 13 of the two-drop record); with 200, the three pilot burn-ins moved 0.17-0.59
    # over the last fifth, where the same weights with running statistics moved 1.39 (split 13;
    # docs/RESULTS.md). The records before 2026-12-05 are read with 0.
    precise_bn_iters: int = 200
    continue_iters: int = 500
    continue_lr: float = 0.001
    fractions: Sequence[float] = (0.25, 1.0)  # burn-ins (the gates compare them)
    continue_fractions: Sequence[float] = (0.25,)  # stage B (the headline fraction)
    split_seeds: Sequence[int] = (0, 1)
    # the split seed of the gate-only burn-ins (100 %): every split seed selects the same images
    # there, so one burn-in serves the label-limited gate of every split, and a later session
    # adding split seeds (burn-ins do not reproduce across machines) does not retrain it
    gate_split_seed: int = 0
    order_seeds: Sequence[int] = (0, 1, 2, 3)
    arms: Sequence[str] = ("supervised", "null_control", "dualalign")
    contrasts: Sequence[Tuple[str, str]] = CONTRASTS  # (arm, reference) differences to summarise
    plateau_points: float = 1.0
    label_gap_points: float = 5.0
    bootstrap_samples: int = 1000
    target_half_width: float = 1.5  # the t-interval a one-point claim needs (sizes n)
    jobs: int = 1
    ignore_gates: bool = False  # continue even when a gate fails (pilots only; said in summary)
    diagnostics: bool = True  # stage B logs pseudo-label quality and gradient-norm ratios
    score_checkpoints: int = 3  # a run's score: the mean of its last this many test evaluations
    opts: List[str] = field(default_factory=lambda: ["MODEL.DEVICE", "cpu"])
    # "test": stage B is scored on the test split (a finished configuration, once); "val": on
    # the val split, for choosing an arm's hyper-parameters (runs in val_runs/, summary in
    # val_search/; the test split is never read).
    score_split: str = "test"
    tag: str = ""  # a search point's name: runs <arm>_..._<tag>, summary val_search/<tag>
    # A search point's summary also reads the runs of these other points (their arms named
    # ``<arm>@<tag>``), so that a contrast can pair the point with another point's reference
    # (e.g. ``self_training - teacher_null_control@ref``) on the pairs they share.
    reference_tags: Sequence[str] = ()


def _runs_dir(s: ProtocolSettings, out: str) -> str:
    return os.path.join(out, "runs" if s.score_split == "test" else "val_runs")


def summary_dir(s: ProtocolSettings, out: str) -> str:
    """Where summary.json and tables.md go: ``out``, or ``out/val_search/<tag>`` for a search."""
    return out if s.score_split == "test" else os.path.join(out, "val_search", s.tag or "default")


def _run_name(s: ProtocolSettings, arm: str, fraction: float, split: int, order: int) -> str:
    return f"{arm}_f{fraction:g}_split{split}_order{order}" + (f"_{s.tag}" if s.tag else "")


def burn_in_dir(out: str, fraction: float, split: int) -> str:
    """The folder of one stage A burn-in (its ``result.json`` marks it finished); every
    search point and score split of a record reads the same burn-ins."""
    return os.path.join(out, "burn_in", f"f{fraction:g}_split{split}")


def stage_b_dir(s: ProtocolSettings, out: str, arm: str, fraction: float, split: int, order: int):
    """The folder of one stage B run (its ``result.json`` marks it finished)."""
    return os.path.join(_runs_dir(s, out), _run_name(s, arm, fraction, split, order))


def fraction_opts(data: dict, fraction: float) -> List[str]:
    """A data set's opts that depend on the labelled fraction (Cervix93's unlabelled pool)."""
    return data["fraction_opts"](fraction) if data.get("fraction_opts") else []


def config_file(s: ProtocolSettings, method: str) -> str:
    return os.path.join(repo_root(), s.config_dir, f"{method}{s.suffix}.yaml")


def run_train_net(
    cfg_file: str,
    opts: List[str],
    out_dir: str,
    jobs: int,
    abort_if: Optional[Callable[[], Optional[str]]] = None,
    poll_seconds: float = 15.0,
) -> None:
    """One ``train_net.py`` process writing into ``out_dir`` (log in ``harness.log``).

    ``abort_if`` is called every ``poll_seconds`` while the process runs: a message stops the
    process, and the message is raised (``RuntimeError``) with the folder's name.
    """
    from .harness import run_env

    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, os.path.join(repo_root(), "train_net.py"), "--config-file", cfg_file]
    cmd += opts + ["OUTPUT_DIR", out_dir]
    with open(os.path.join(out_dir, "harness.log"), "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=run_env(jobs))
        while True:
            try:
                returncode = proc.wait(timeout=poll_seconds if abort_if else None)
                break
            except subprocess.TimeoutExpired:
                reason = abort_if()
                if reason:
                    proc.kill()
                    proc.wait()
                    raise RuntimeError(f"{out_dir}: train_net.py stopped: {reason}") from None
    if returncode != 0:
        raise RuntimeError(f"{out_dir}: train_net.py exited with {returncode}; see its log")


def metrics_records(metrics_file: str, live: bool = False) -> List[dict]:
    """The records of a run's metrics.json (one JSON object per line). ``live`` (a run still
    writing it): a file not there yet has none, and a line being written is skipped."""
    if live and not os.path.isfile(metrics_file):
        return []
    records = []
    with open(metrics_file) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                if not live:
                    raise
    return records


def eval_history(metrics_file: str) -> List[tuple]:
    """``[(iteration, bbox/mAP)]`` of the evaluations logged in a run's metrics.json."""
    records = metrics_records(metrics_file)
    return [(r["iteration"], r["bbox/mAP"]) for r in records if "bbox/mAP" in r]


def load_json(path: str):
    with open(path) as f:
        return json.load(f)
