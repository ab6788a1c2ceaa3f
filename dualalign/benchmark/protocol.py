"""The two-stage protocol: a benchmark that can see a one-point gain.

1. **Data.** The synthetic protocol set: a labelled pool of 120 patches (subsampled by the
   labelled fraction and the split seed), 960 unlabelled patches whose true boxes are kept aside
   (``unlabeled_with_gt.json``, read by the diagnostics only), 300 val and 500 test patches.
2. **Stage A**, a supervised burn-in per (fraction, split seed), its lr dropped tenfold at
   each of ``burn_in_steps`` (fractions of its iterations; by default at 70 %, before the last
   fifth, so that the plateau gate measures the low-lr phase, not the drop, and at 80 %, so that
   the whole last fifth runs at a hundredth of the lr), evaluated on the *val* split every tenth
   of its iterations.
3. **Gates** on stage A's val curves, written to the summary: *plateau* (mAP moves by less than
   ``plateau_points`` over the last fifth of every burn-in) and *label-limited* (supervised at
   the largest fraction is at least ``label_gap_points`` above the smallest). A failed gate
   stops the comparison and says what to lengthen.
4. **Stage B**, every arm continued from each burn-in with the same iterations, lr, data order
   (``SEED`` = the order seed) and labelled batches, with frozen BN (the normalisation then does
   not depend on what else is in the batch). The labelled batches' random draws (augmentation,
   proposal sampling) are the same in every arm too (:data:`RANDOM_STREAMS`): the null control
   then trains supervised-continue's weights up to rounding. Teachers start as the burn-in
   checkpoint.
5. **Score**: the mean of the run's last three test evaluations (``score_checkpoints``), one
   every tenth of stage B, made in the run (``DUALALIGN.EVAL.START_ITER``).
6. **Statistics**: per arm, paired differences against supervised-continue over (split seed,
   order seed) pairs with a Student-t 95 % interval (what the runs move the mean by), and a
   percentile bootstrap over test images of the mean difference of the pairs' last
   evaluations (what the test set alone moves it by; :mod:`.paired`). The ``contrasts`` get the
   same t-intervals between two other arms (e.g. self-training minus the teacher null control:
   what the unlabelled data adds beyond the EMA teacher).

Hyper-parameters of an arm are chosen with ``score_split="val"`` (``--select-on-val``): stage B
is then scored on the val split, in ``val_runs/`` and ``val_search/``, from the same burn-ins.
A search point's summary can read another point's runs (``reference_tags``, arms named
``<arm>@<tag>``), so that its contrasts pair it with that point's reference on the same pairs.

Everything is resumable: a run with ``result.json`` is skipped. Outputs under
``<output>/protocol/<dataset>/``: ``summary.json``, ``tables.md``, ``paired_deltas.png`` and
``runs/``.
"""

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from itertools import product
from typing import Dict, List, Optional, Sequence, Tuple

from ..utils.atomic import atomic_write_json, atomic_write_text
from ..utils.paths import repo_root
from ..data.synthetic import generate_dataset
from .paired import (
    bootstrap_mean_delta_interval,
    cluster_t_interval,
    paired_deltas,
    pairs_needed,
    t_interval,
)
from .protocol_diagnostics import DIAGNOSTIC_KEYS, arm_diagnostics, delta_per_iou
from .runs import read_run_ap

__all__ = [
    "ARMS",
    "CONTRASTS",
    "arm_contrasts",
    "ProtocolSettings",
    "check_gates",
    "prepare_synthetic",
    "burn_in_cells",
    "burn_in_iters",
    "model_digest",
    "run_protocol",
    "runs_left_out",
    "summarize",
    "summarize_finished",
    "split_arm_tag",
    "summary_dir",
]

# 300 val patches: on 60, a plateaued 25 % burn-in's three last-fifth evaluations spread by
# 1.0-1.6 points (max - min), the plateau gate's whole allowance. Image i of a split depends only
# on (seed, split, i), so the labelled, pool and test images are the same at any val size.
PROTOCOL_SIZES = dict(num_labeled=120, num_unlabeled=960, num_val=300, num_test=500)
TERMS_OFF = [
    "DUALALIGN.LOSS.PML_LABELED", "False", "DUALALIGN.LOSS.PML_UNLABELED", "False",
    "DUALALIGN.LOSS.PMB_LABELED", "False", "DUALALIGN.LOSS.PMB_UNLABELED", "False",
]  # fmt: skip
# The teacher pipeline's switches on their own (values before any val search: see
# docs/METHOD_NOTES.md). ProxyNCA++'s temperature is 1/9 on squared distances.
TEMPERED = [
    "DUALALIGN.PROXY.TEMPERATURE", "0.111", "DUALALIGN.PROXY.SQUARED_DISTANCE", "True",
    "DUALALIGN.PROXY.INCLUDE_POSITIVE", "True",
]  # fmt: skip
GRAD_SCALE = ["DUALALIGN.EMBED.GRAD_SCALE", "0.1"]
TEACHER = ["DUALALIGN.PSEUDO.SOURCE", "teacher"]
# Chosen on val (search point box09ign03): teacher detections scored above 0.9 are pseudo-boxes,
# those scored in (0.3, 0.9] ignore regions (their proposals are neither object nor background).
VAL_CHOSEN = ["DUALALIGN.PSEUDO.BOX_THRESH", "0.9", "DUALALIGN.PSEUDO.IGNORE_THRESH", "0.3"]
# arm: (method config, extra opts). The null control forwards the unlabelled half with every
# unsupervised term off: under frozen BN it must match supervised-continue. Teachers start as
# the burn-in checkpoint (START_ITER 0 with MODEL.WEIGHTS).
ARMS = {
    "supervised": ("supervised", []),
    "null_control": ("dualalign", TERMS_OFF),
    "dualalign": ("dualalign", []),
    "dualalign_noproto": ("dualalign_noproto", []),
    "dualalign_noproposal": ("dualalign_noproposal", []),
    "csd": ("csd", []),
    # CSD with a supervised-only tail: in the 500-iteration stage B its ramp-down runs over
    # 317-400 instead of 417-500, so the three scored evaluations (400, 450, 500) all come after
    # it. Val search point csdtail100 against csdref (docs/RESULTS.md, 2026-12-06).
    "csd_tail": ("csd", ["DUALALIGN.CSD.TAIL_ITERS", "100"]),
    "mean_teacher": ("mean_teacher", ["DUALALIGN.TEACHER.START_ITER", "0"]),
    # the teacher pipeline (issue: make the unlabelled data pay off)
    "self_training": ("self_training", []),
    # The teacher pipeline's null control: the same EMA teacher (evaluated, as in every teacher
    # arm) of a student trained on the labelled half only (no pseudo-label loss, no metric
    # term). A teacher arm minus this one is what the unlabelled data adds; a teacher arm minus
    # supervised-continue also holds what averaging the weights adds.
    "teacher_null_control": ("self_training", ["DUALALIGN.PSEUDO.CLS_LOSS", "False"]),
    "dualalign_teacher": ("dualalign_teacher", []),
    "switch_teacher_source": ("dualalign", TEACHER),
    "switch_pseudo_boxes": ("dualalign", TEACHER + ["DUALALIGN.PSEUDO.BOXES", "True"]),
    "switch_strong_view": ("dualalign", TEACHER + ["DUALALIGN.STRONG_AUG.ENABLED", "True"]),
    # the teacher labels the weak view and its mirror, fused (on the pseudo-boxes it needs)
    "switch_flip_fusion": (
        "dualalign",
        TEACHER + ["DUALALIGN.PSEUDO.BOXES", "True", "DUALALIGN.PSEUDO.FLIP_FUSION", "True"],
    ),
    # the classification loss on pseudo-boxes, with the teacher's class distribution as the
    # target of the unlabelled background rows (the loss it needs is part of the switch)
    "switch_soft_background": (
        "dualalign",
        TEACHER + ["DUALALIGN.PSEUDO.BOXES", "True", "DUALALIGN.PSEUDO.CLS_LOSS", "True",
                   "DUALALIGN.PSEUDO.SOFT_BACKGROUND", "True"],
    ),  # fmt: skip
    # the RPN's losses on the unlabelled images against the pseudo-boxes (that it needs)
    "switch_rpn_loss": (
        "dualalign",
        TEACHER + ["DUALALIGN.PSEUDO.BOXES", "True", "DUALALIGN.PSEUDO.RPN_LOSS", "True"],
    ),
    # the ROI heads' box regression on the unlabelled proposals matched to pseudo-boxes
    "switch_box_reg_loss": (
        "dualalign",
        TEACHER + ["DUALALIGN.PSEUDO.BOXES", "True", "DUALALIGN.PSEUDO.BOX_REG_LOSS", "True"],
    ),
    "switch_tempered": ("dualalign", TEMPERED),
    "switch_grad_scale": ("dualalign", GRAD_SCALE),
    "dualalign_all": ("dualalign_teacher", TEMPERED + GRAD_SCALE),
}
# Finished configurations: an arm with the pseudo-box thresholds chosen on val (search point
# box09ign03, docs/RESULTS.md), the only tuned teacher-pipeline arms scored on test (the
# switch_* arms were read on test at their pre-search values, as the switches' definitions).
ARMS.update(
    {f"{arm}_tuned": (ARMS[arm][0], ARMS[arm][1] + VAL_CHOSEN)
     for arm in ("self_training", "dualalign_all")}  # fmt: skip
)
# The tuned teacher arms with csd_tail's supervised-only tail (opt-in keys, not the paper): in
# the 500-iteration stage B lambda(t) ramps down over 317-400 (CSD's 83-iteration ramp-down) and
# stays at its floor over the last 100, so the three scored evaluations come after it. An
# evaluated teacher is an EMA (decay 0.999) of the student, so it carries the tail only in part.
# Chosen on val (search point datail100, docs/RESULTS.md 2026-12-06): dual alignment's tail arm
# is scored by its student, which has trained the whole tail (val 62.99 against the teacher's
# 62.91 over burn-in 15's orders 0-1). The self-training tail arm has had no val search.
TAIL = ["DUALALIGN.RAMPDOWN_ITERS", "83", "DUALALIGN.TAIL_ITERS", "100"]
TAIL_EXTRA = {
    "self_training_tuned": [],
    "dualalign_all_tuned": ["DUALALIGN.TEACHER.EVAL_TEACHER", "False"],
}
ARMS.update(
    {f"{arm}_tail": (ARMS[arm][0], ARMS[arm][1] + TAIL + extra)
     for arm, extra in TAIL_EXTRA.items()}  # fmt: skip
)
# Version of the random streams a stage B run trains with, kept in its result.json (none: 1).
# 2: every arm given the same SEED draws the same random numbers for its labelled images (the
# unlabelled batches come from a private stream, and training starts from a global RNG state
# that does not depend on the arm's model); the null control then trains supervised-continue's
# weights up to rounding. Under 1 it was a supervised run with other random draws.
RANDOM_STREAMS = 2
# (arm, reference) pairs summarised like the differences against supervised-continue (a pair of
# arms without a common (split, order) pair is skipped): a teacher arm minus the teacher null
# control is what the unlabelled images add; dual alignment minus self-training on the same
# pseudo-boxes is what the metric terms add (issue 14's second target).
CONTRASTS = (
    ("self_training", "teacher_null_control"),
    ("self_training_tuned", "teacher_null_control"),
    ("dualalign_all_tuned", "teacher_null_control"),
    ("dualalign_all_tuned", "self_training_tuned"),
    ("mean_teacher", "teacher_null_control"),
    ("csd_tail", "csd"),
    ("self_training_tuned_tail", "self_training_tuned"),
    ("dualalign_all_tuned_tail", "dualalign_all_tuned"),
)


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


def split_arm_tag(name: str) -> Tuple[str, str]:
    """``(arm, tag)`` of an arm name as contrasts and summaries spell it: ``<arm>`` (tag "")
    or ``<arm>@<tag>`` (the arm's runs of another search point, ``reference_tags``)."""
    arm, _, tag = name.partition("@")
    if arm not in ARMS or name.endswith("@"):
        raise ValueError(
            f"{name!r} names no protocol arm: use ARM or ARM@TAG with ARM one of {', '.join(ARMS)}"
        )
    return arm, tag


def _run_name(s: ProtocolSettings, arm: str, fraction: float, split: int, order: int) -> str:
    return f"{arm}_f{fraction:g}_split{split}_order{order}" + (f"_{s.tag}" if s.tag else "")


def _run_dir(s: ProtocolSettings, out: str, arm: str, fraction: float, split: int, order: int):
    """The folder of one stage B run (its ``result.json`` marks it finished)."""
    return os.path.join(_runs_dir(s, out), _run_name(s, arm, fraction, split, order))


def _scored_data(s: ProtocolSettings, data: dict) -> dict:
    """``data`` as stage B sees it: with ``score_split`` "val" its evaluations (and the
    summary's bootstrap) read the val split in place of the test split."""
    if s.score_split == "test":
        return data
    if s.score_split != "val":
        raise ValueError(f"score_split = {s.score_split!r}; allowed: test | val")
    out = dict(data, test_name=data["val_name"], test_json=data["val_json"])
    out["opts"] = data["opts"] + ["DATASETS.TEST", f"('{data['val_name']}',)"]
    return out


def prepare_synthetic(root: str, label: str = "protocol", **sizes) -> dict:
    """The synthetic protocol set (``PROTOCOL_SIZES`` unless ``sizes``), as config opts.

    Returns:
        ``{"opts", "val_name", "test_name", "test_json", "pool_truth_name"}``.
    """
    paths = generate_dataset(root, seed=0, **(sizes or PROTOCOL_SIZES))
    img = paths["image_root"]
    pool_truth = os.path.join(os.path.dirname(paths["unlabeled"]), "unlabeled_with_gt.json")
    coco = [
        [f"{label}_train", paths["labeled"], img],
        [f"{label}_val", paths["val"], img],
        [f"{label}_test", paths["test"], img],
        [f"{label}_pool_truth", pool_truth, img],  # read by the diagnostics only
    ]
    opts = [
        "DUALALIGN.DATASETS.COCO", str(coco),
        "DUALALIGN.DATASETS.UNLABELED", str([[f"{label}_pool", paths["unlabeled"], img]]),
        "DUALALIGN.DATASETS.TRAIN_UNLABELED", f"('{label}_pool',)",
        "DATASETS.TRAIN", f"('{label}_train',)", "DATASETS.TEST", f"('{label}_test',)",
        "DATALOADER.NUM_WORKERS", "0",
    ]  # fmt: skip
    return {
        "opts": opts,
        "val_name": f"{label}_val",
        "test_name": f"{label}_test",
        "test_json": paths["test"],
        "val_json": paths["val"],
        "pool_truth_name": f"{label}_pool_truth",
    }


def _fraction_opts(data: dict, fraction: float) -> List[str]:
    """A data set's opts that depend on the labelled fraction (Cervix93's unlabelled pool)."""
    return data["fraction_opts"](fraction) if data.get("fraction_opts") else []


def _config(s: ProtocolSettings, method: str) -> str:
    return os.path.join(repo_root(), s.config_dir, f"{method}{s.suffix}.yaml")


def _train(cfg_file: str, opts: List[str], out_dir: str, jobs: int) -> None:
    """One ``train_net.py`` process writing into ``out_dir`` (log in ``harness.log``)."""
    from .harness import run_env

    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, os.path.join(repo_root(), "train_net.py"), "--config-file", cfg_file]
    cmd += opts + ["OUTPUT_DIR", out_dir]
    with open(os.path.join(out_dir, "harness.log"), "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=run_env(jobs))
    if proc.returncode != 0:
        raise RuntimeError(f"{out_dir}: train_net.py exited with {proc.returncode}; see its log")


def _eval_history(metrics_file: str) -> List[tuple]:
    """``[(iteration, bbox/mAP)]`` of the evaluations logged in a run's metrics.json."""
    with open(metrics_file) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [(r["iteration"], r["bbox/mAP"]) for r in records if "bbox/mAP" in r]


def burn_in_iters(s: ProtocolSettings, fraction: float) -> int:
    """Stage A's length at ``fraction``: the gate-only fractions may need longer to plateau."""
    gate_only = fraction not in s.continue_fractions and s.gate_burn_in_iters
    return s.gate_burn_in_iters if gate_only else s.burn_in_iters


def burn_in_lr_steps(s: ProtocolSettings, fraction: float) -> List[int]:
    """The iterations at which stage A's lr drops tenfold (``SOLVER.STEPS``)."""
    n = burn_in_iters(s, fraction)
    steps = [int(n * f) for f in s.burn_in_steps]
    if not all(a < b for a, b in zip([0] + steps, steps + [n])):
        raise ValueError(
            f"burn_in_steps {tuple(s.burn_in_steps)}: the lr drops must be increasing fractions "
            f"strictly between 0 and 1 that fall on distinct iterations of the {n} of stage A "
            "(e.g. --burn-in-steps 0.7 0.8)"
        )
    return steps


# Where the plateau gate's window starts, as a fraction of stage A: its last fifth.
PLATEAU_WINDOW = 0.8


# Records written before a burn-in named its lr drops (2026-12-05) were all made with one drop
# at 70 % of stage A.
LEGACY_LR_STEP = 0.7


def recorded_lr_steps(record: dict) -> Optional[List[int]]:
    """The lr drops a burn-in record was made with (``LEGACY_LR_STEP`` for records that do not
    name them; ``None`` if the record has no length either)."""
    if record.get("lr_steps") is not None:
        return list(record["lr_steps"])
    n = record.get("iterations")
    return [int(n * LEGACY_LR_STEP)] if isinstance(n, int) else None


def model_digest(checkpoint: str) -> str:
    """sha256 of a checkpoint's model tensors (names, shapes, dtypes, values): two burn-ins
    with the same digest are the same starting point, whatever else the file holds."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = state.get("model", state)
    h = hashlib.sha256()
    for name in sorted(state):
        t = torch.as_tensor(state[name]).detach().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _machine() -> dict:
    """What a burn-in's bits depend on besides the code and the data: torch's build and the
    CPU kernels it picked (a burn-in is reproduced bit for bit on one machine, not across)."""
    import platform

    import torch

    cpu = platform.processor()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": cpu,
    }


def _count_images(coco_json: str) -> int:
    with open(coco_json) as f:
        return len(json.load(f)["images"])


def _train_burn_in(s: ProtocolSettings, data: dict, fraction: float, split: int, run_dir: str):
    """Trains stage A for (``fraction``, ``split``) into ``run_dir``; returns its checkpoint."""
    n = burn_in_iters(s, fraction)
    opts = s.opts + data["opts"] + _fraction_opts(data, fraction) + [
        "DATASETS.TEST", f"('{data['val_name']}',)",
        "DUALALIGN.DATASETS.LABELED_FRACTION", str(fraction),
        "DUALALIGN.DATASETS.SPLIT_SEED", str(split), "SEED", str(split),
        "SOLVER.MAX_ITER", str(n), "SOLVER.BASE_LR", str(s.burn_in_lr),
        "SOLVER.STEPS", str(tuple(burn_in_lr_steps(s, fraction))),
        "SOLVER.WARMUP_ITERS", str(min(100, n // 5)),
        "SOLVER.CHECKPOINT_PERIOD", str(n), "TEST.EVAL_PERIOD", str(max(1, n // 10)),
        "TEST.PRECISE_BN.ENABLED", str(s.precise_bn_iters > 0),
        "TEST.PRECISE_BN.NUM_ITER", str(max(1, s.precise_bn_iters)),
    ]  # fmt: skip
    _train(_config(s, "supervised"), opts, run_dir, s.jobs)
    checkpoint = os.path.join(run_dir, "model_final.pth")
    last = os.path.join(run_dir, f"model_{n - 1:07d}.pth")  # the periodic copy of the final one
    if os.path.isfile(last) and os.path.isfile(checkpoint):
        os.remove(last)
    return checkpoint


def _runs_from(out: str, fraction: float, split: int, digest: str) -> List[str]:
    """Stage B runs (test and val) of ``out`` continued from the (``fraction``, ``split``)
    burn-in with ``digest`` (or from an unrecorded one: runs made before digests were kept)."""
    found = []
    for runs_dir in ("runs", "val_runs"):
        root = os.path.join(out, runs_dir)
        for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            path = os.path.join(root, name, "result.json")
            if not os.path.isfile(path):
                continue
            r = _load_json(path)
            if (r.get("fraction"), r.get("split_seed")) == (fraction, split) and r.get(
                "burn_in_digest", digest
            ) == digest:
                found.append(os.path.join(runs_dir, name))
    return found


def _rebuild_checkpoint(s, data, record: dict, run_dir: str, out: str) -> dict:
    """A recorded burn-in whose checkpoint is not on this machine (checkpoints stay out of git)
    is trained again into ``run_dir/rebuilt``.

    Same ``model_digest``: the record stands, stage B continues from the rebuilt checkpoint.
    Another digest (the machine does not reproduce stage A bit for bit: another CPU's kernels
    round differently, and training amplifies it): if no stage B run continued from the recorded
    burn-in, the rebuilt one replaces it (the record keeps the replaced one's digest and val
    curve under ``replaced``; its ``metrics.json`` becomes the new one's); otherwise it is an
    error, since new runs would not be paired with the committed ones.
    """
    rebuilt_dir = os.path.join(run_dir, "rebuilt")
    checkpoint = os.path.join(rebuilt_dir, "model_final.pth")
    if not os.path.isfile(checkpoint):
        if os.path.isdir(rebuilt_dir):  # an interrupted rebuild: no checkpoint, nothing kept
            shutil.rmtree(rebuilt_dir)
        _train_burn_in(s, data, record["fraction"], record["split_seed"], rebuilt_dir)
    digest = model_digest(checkpoint)
    if digest == record["model_digest"]:
        return dict(record, checkpoint=checkpoint, rebuilt=True)
    dependent = _runs_from(out, record["fraction"], record["split_seed"], record["model_digest"])
    if dependent:
        raise RuntimeError(
            f"{run_dir}: the rebuilt burn-in ({checkpoint}) has model digest {digest[:12]}, the "
            f"recorded one {record['model_digest'][:12]}: this machine ({_machine()}) does not "
            f"reproduce stage A (recorded on {record.get('machine', 'an unrecorded machine')}) "
            f"bit for bit, so new stage B runs would not be paired with the {len(dependent)} "
            f"committed ones continued from it ({', '.join(dependent[:3])}, ...). Finish this "
            "burn-in's pairs on a machine that reproduces it, or move the protocol folder aside "
            "to start a new record (nothing in it is overwritten)."
        )
    replaced = {k: record.get(k) for k in ("model_digest", "val_mAP_history", "machine")}
    metrics = os.path.join(rebuilt_dir, "metrics.json")
    new = dict(
        {k: v for k, v in record.items() if k not in ("replaced", "rebuilt")},
        val_mAP_history=[list(h) for h in _eval_history(metrics)],
        checkpoint=checkpoint,
        model_digest=digest,
        machine=_machine(),
        replaced=dict(replaced, reason="not reproduced here; no stage B run continued from it"),
    )
    shutil.copyfile(metrics, os.path.join(run_dir, "metrics.json"))
    atomic_write_json(os.path.join(run_dir, "result.json"), new)
    return new


def burn_in(s: ProtocolSettings, data: dict, fraction: float, split: int, out: str) -> dict:
    """Stage A for one (fraction, split seed): supervised, evaluated on val every tenth.

    A finished burn-in is reused only if it was made with this length, lr drops and val split;
    otherwise it is an error (the folder is kept: move it aside to run it again, and compare
    its ``model_digest`` with the new one's: stage B runs continued from it stay valid if
    equal).
    A finished burn-in whose checkpoint is missing (a fresh checkout) is rebuilt; it must
    reproduce its recorded digest if stage B runs continued from it (:func:`_rebuild_checkpoint`).
    """
    run_dir = os.path.join(out, "burn_in", f"f{fraction:g}_split{split}")
    result = os.path.join(run_dir, "result.json")
    n = burn_in_iters(s, fraction)
    want = {
        "iterations": n,
        "lr_steps": burn_in_lr_steps(s, fraction),
        "precise_bn_iters": s.precise_bn_iters,
        "val_images": _count_images(data["val_json"]),
    }
    if os.path.isfile(result):
        with open(result) as f:
            record = json.load(f)
        made = dict(
            {k: record.get(k) for k in want},
            lr_steps=recorded_lr_steps(record),
            precise_bn_iters=record.get("precise_bn_iters", 0),  # records before it: running
        )
        if made != want:
            differ = {k for k in want if made[k] != want[k]}
            extend = ""
            if made["lr_steps"] and differ <= {"lr_steps", "precise_bn_iters"}:
                flags = []
                if "lr_steps" in differ:
                    fractions = " ".join(f"{i / made['iterations']:g}" for i in made["lr_steps"])
                    flags.append(f"--burn-in-steps {fractions}")
                if "precise_bn_iters" in differ:
                    flags.append(f"--precise-bn-iters {made['precise_bn_iters']}")
                extend = f" To extend its record instead, pass {' '.join(flags)}."
            raise ValueError(
                f"{result}: this burn-in was made with {made}, the protocol now asks for {want}. "
                f"Move {run_dir} aside (e.g. to {run_dir}_previous) to run it again; nothing "
                f"in it is overwritten.{extend}"
            )
        if not os.path.isfile(record["checkpoint"]) and _needs_checkpoint(s, fraction, split, out):
            record = _rebuild_checkpoint(s, data, record, run_dir, out)
        return record
    checkpoint = _train_burn_in(s, data, fraction, split, run_dir)
    record = {
        "fraction": fraction,
        "split_seed": split,
        **want,
        "val_mAP_history": _eval_history(os.path.join(run_dir, "metrics.json")),
        "checkpoint": checkpoint,
        "model_digest": model_digest(checkpoint),
        "machine": _machine(),
    }
    atomic_write_json(result, record)
    return record


def _needs_checkpoint(s: ProtocolSettings, fraction: float, split: int, out: str) -> bool:
    """Whether a stage B run of ``s`` still has to continue from this burn-in (the gates read
    only the recorded val curves; finished runs keep their records)."""
    if fraction not in s.continue_fractions:
        return False
    return any(
        not os.path.isfile(os.path.join(_run_dir(s, out, arm, fraction, split, o), "result.json"))
        for arm in s.arms
        for o in s.order_seeds
    )


def check_gates(burn_ins: List[dict], s: ProtocolSettings) -> dict:
    """The plateau and label-limited gates on stage A's val curves (see module docstring)."""
    moves = []
    for b in burn_ins:
        hist = b["val_mAP_history"]
        last_fifth = [m for it, m in hist if it >= PLATEAU_WINDOW * hist[-1][0] - 1]
        moves.append(max(last_fifth) - min(last_fifth) if len(last_fifth) > 1 else float("inf"))
    final = {}
    for b in burn_ins:
        final.setdefault(b["fraction"], []).append(b["val_mAP_history"][-1][1])
    means = {f: sum(v) / len(v) for f, v in final.items()}
    gap = means[max(means)] - means[min(means)] if len(means) > 1 else float("nan")
    gates = {
        "plateau": max(moves) < s.plateau_points,
        "largest_move_last_fifth": max(moves) if math.isfinite(max(moves)) else None,
        "label_limited": gap >= s.label_gap_points if len(means) > 1 else None,
        f"sup_{max(means):g}_minus_{min(means):g}": gap if len(means) > 1 else None,
        "burn_ins": [
            {"fraction": b["fraction"], "split_seed": b["split_seed"],
             "iterations": b.get("iterations"), "lr_steps": recorded_lr_steps(b),
             "precise_bn_iters": b.get("precise_bn_iters", 0), "val_images": b.get("val_images"),
             "move_last_fifth": m if math.isfinite(m) else None,
             "final_val_mAP": b["val_mAP_history"][-1][1]}
            for b, m in zip(burn_ins, moves)
        ],  # fmt: skip
        "messages": [],
    }
    for b, m in zip(burn_ins, moves):
        if not m < s.plateau_points:
            flag = "--burn-in-iters"
            if b["fraction"] not in s.continue_fractions and s.gate_burn_in_iters:
                flag = "--gate-burn-in-iters"
            what = f"moves {m:.2f} points of val mAP" if math.isfinite(m) else "has < 2 evaluations"
            again = ""
            if max(s.burn_in_steps) < PLATEAU_WINDOW:  # the window is not all at the lowest lr
                steps = " ".join(f"{f:g}" for f in (*s.burn_in_steps, PLATEAU_WINDOW))
                again = ", drop the lr again at the start of the last fifth (--burn-in-steps "
                again += f"{steps}) if it jitters"
            noise = "add val patches if the move is evaluation noise"
            if not b.get("precise_bn_iters"):
                noise = "average the BN statistics (--precise-bn-iters 200) or " + noise
            gates["messages"].append(
                f"plateau gate failed: the {b['fraction'] * 100:g} % burn-in (split "
                f"{b['split_seed']}) {what} over the last fifth of stage A (allowed < "
                f"{s.plateau_points}); lengthen {flag} if it still rises{again}, or {noise}"
            )
    if gates["label_limited"] is False:
        gates["messages"].append(
            f"label-limited gate failed: supervised gains {gap:.2f} points from the smallest to "
            f"the largest fraction (needed >= {s.label_gap_points}); lengthen --burn-in-iters "
            "so that labels, not iterations, limit the detector"
        )
    return gates


def _eval_schedule(s: ProtocolSettings) -> tuple:
    """Stage B's evaluation period and first evaluated iteration: the last
    ``score_checkpoints`` evaluations happen in the run, one every tenth of it."""
    period = max(1, s.continue_iters // 10)
    return period, s.continue_iters - (s.score_checkpoints - 1) * period


def _stage_b_budget(s: ProtocolSettings, burn_in: dict, order: int) -> list:
    """The opts of stage B that are the same in every arm and pair: iterations, lr, data order
    (``SEED``), frozen BN, the burn-in's weights and split."""
    n = s.continue_iters
    period, first_eval = _eval_schedule(s)
    return [
        "DUALALIGN.DATASETS.LABELED_FRACTION", str(burn_in["fraction"]),
        "DUALALIGN.DATASETS.SPLIT_SEED", str(burn_in["split_seed"]),
        "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.WEIGHTS", burn_in["checkpoint"],
        "SEED", str(order),
        "SOLVER.MAX_ITER", str(n), "SOLVER.BASE_LR", str(s.continue_lr), "SOLVER.STEPS", "()",
        "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", str(n),
        "TEST.EVAL_PERIOD", str(period), "DUALALIGN.EVAL.START_ITER", str(first_eval),
        "DUALALIGN.RAMPUP_ITERS", str(n // 5),
        "DUALALIGN.CSD.RAMPUP_ITERS", str(n // 5), "DUALALIGN.CSD.RAMPDOWN_ITERS", str(n // 6),
        "DUALALIGN.MEAN_TEACHER.RAMPUP_ITERS", str(n // 5),
    ]  # fmt: skip


def check_stage_b_opts(s: ProtocolSettings) -> None:
    """Refuses user opts (``s.opts``) that set a key of stage B's budget, which nothing
    overrides; :func:`run_protocol` calls it before stage A, so that the error does not wait
    for the burn-ins."""
    budget = _stage_b_budget(s, {"fraction": 0.0, "split_seed": 0, "checkpoint": ""}, 0)
    fixed = sorted(set(s.opts[::2]) & set(budget[::2]))
    if fixed:
        raise ValueError(
            f"the opts {' '.join(s.opts)} set {', '.join(fixed)}, which stage B fixes for every "
            "arm and pair (the protocol's budget); drop them, or change the budget through the "
            "protocol's flags (--continue-iters, --order-seeds, ...)"
        )


def stage_b_opts(s: ProtocolSettings, data: dict, arm: str, burn_in: dict, order: int) -> list:
    """The config opts of one stage B run, in the order they win (later overrides earlier):
    the data, the arm's opts, the user's ``s.opts`` (so that a search can change an arm's
    value, e.g. ``DUALALIGN.EMBED.GRAD_SCALE`` of ``dualalign_all``), then the protocol's budget
    (:func:`_stage_b_budget`), which nothing overrides (:func:`check_stage_b_opts`)."""
    check_stage_b_opts(s)
    arm_opts = ARMS[arm][1]
    data_opts = data["opts"] + _fraction_opts(data, burn_in["fraction"])
    return data_opts + arm_opts + s.opts + _stage_b_budget(s, burn_in, order)


def continue_run(s, data, arm, order, burn_in: dict, out) -> dict:
    """Stage B: ``arm`` continued from a burn-in (its record); scored by its last checkpoints."""
    fraction, split = burn_in["fraction"], burn_in["split_seed"]
    run_dir = _run_dir(s, out, arm, fraction, split, order)
    result = os.path.join(run_dir, "result.json")
    if os.path.isfile(result):
        with open(result) as f:
            return json.load(f)
    method = ARMS[arm][0]
    period, first_eval = _eval_schedule(s)
    opts = stage_b_opts(s, data, arm, burn_in, order)
    if s.diagnostics:
        opts += ["DUALALIGN.DIAGNOSTICS.GRAD_SHARE_PERIOD", str(period)]
        if data.get("pool_truth_name"):
            opts += [
                "DUALALIGN.DIAGNOSTICS.PSEUDO_DATASET", data["pool_truth_name"],
                "DUALALIGN.DIAGNOSTICS.PSEUDO_PERIOD", "0",
            ]  # fmt: skip
    start = time.time()
    _train(_config(s, method), opts, run_dir, s.jobs)
    history = _eval_history(os.path.join(run_dir, "metrics.json"))
    scores = [m for it, m in history if it + 1 >= first_eval][-s.score_checkpoints :]
    if len(scores) != s.score_checkpoints:
        raise RuntimeError(f"{run_dir}: expected {s.score_checkpoints} evaluations, got {history}")
    for name in os.listdir(run_dir):  # ~130 MB each: the predictions are what is kept
        if name.endswith(".pth"):
            os.remove(os.path.join(run_dir, name))
    inference = os.path.join(run_dir, "inference", data["test_name"])
    final_ap = read_run_ap(inference)
    record = {
        "arm": arm,
        "fraction": fraction,
        "split_seed": split,
        "order_seed": order,
        "burn_in_digest": burn_in["model_digest"],  # pairs continue from the same weights
        "random_streams": RANDOM_STREAMS,
        "final": final_ap,
        "mAP_last": scores,
        "mAP": sum(scores) / len(scores),
        "predictions": os.path.join(inference, "coco_instances_results.json"),
        "metrics_file": os.path.join(run_dir, "metrics.json"),
        "seconds": round(time.time() - start, 1),
    }
    atomic_write_json(result, record)
    return record


def _load_json(path: str):
    with open(path) as f:
        return json.load(f)


def _final_ap_file(run: dict) -> str:
    """The evaluator's ``range_ap.json`` of a run's last evaluation (kept in git)."""
    return os.path.join(os.path.dirname(run["predictions"]), "range_ap.json")


def _paired_entry(scores: Dict[tuple, float], reference: Dict[tuple, float]) -> tuple:
    """``(by_pair, entry)``: the paired differences of ``scores`` minus ``reference`` over the
    (split seed, order seed) pairs they share, and their t-interval over pairs and over burn-ins
    (pairs that continue from one burn-in share it)."""
    by_pair = paired_deltas(scores, reference)
    entry = t_interval(list(by_pair.values()))
    entry["by_burn_in"] = cluster_t_interval(by_pair, lambda k: k[0])
    return by_pair, entry


def arm_contrasts(
    scores: Dict[str, Dict[tuple, float]], contrasts: Sequence[Tuple[str, str]]
) -> Dict[str, dict]:
    """``{"<arm> - <reference>": entry}`` for each (arm, reference) of ``contrasts`` whose
    arms share at least one pair in ``scores`` (``{arm: {(split, order): mAP}}``); ``entry`` is
    :func:`_paired_entry`'s, plus ``per_pair`` (``{"split:order": difference}``)."""
    out = {}
    for arm, ref in contrasts:
        if not set(scores.get(arm, {})) & set(scores.get(ref, {})):
            continue
        by_pair, entry = _paired_entry(scores[arm], scores[ref])
        entry["per_pair"] = {f"{k[0]}:{k[1]}": d for k, d in by_pair.items()}
        out[f"{arm} - {ref}"] = entry
    return out


def summarize(runs: List[dict], gates: dict, test_json: str, s: ProtocolSettings) -> dict:
    """``summary.json``: gates, per fraction the arms' mean mAP and their paired differences."""
    from ..evaluation.evaluator import DEFAULT_IOU_THRESHOLDS

    with open(test_json) as f:
        gt = json.load(f)

    out = {"gates": gates, "settings": asdict(s), "fractions": {}}
    for fraction in sorted({r["fraction"] for r in runs}):
        by_arm: Dict[str, Dict[tuple, dict]] = {}
        for r in runs:
            if r["fraction"] == fraction:
                by_arm.setdefault(r["arm"], {})[(r["split_seed"], r["order_seed"])] = r
        arms = {
            a: {
                "mAP": sum(r["mAP"] for r in rs.values()) / len(rs),
                "n": len(rs),
                "pairs": [f"{split}:{order}" for split, order in sorted(rs)],
            }
            for a, rs in by_arm.items()
        }
        for a, rs in by_arm.items():
            # Teacher arms are scored by their teacher; the student is reported beside it.
            student = [r["final"]["models"]["student"]["mAP"] for r in rs.values()
                       if "student" in r.get("final", {}).get("models", {})]  # fmt: skip
            if student:
                arms[a]["student_final_mAP"] = sum(student) / len(student)
        scores = {a: {k: r["mAP"] for k, r in rs.items()} for a, rs in by_arm.items()}
        deltas = {}
        ref = by_arm.get("supervised", {})
        for arm, rs in by_arm.items():
            if arm == "supervised" or not set(rs) & set(ref):
                continue
            by_pair, entry = _paired_entry(scores[arm], scores["supervised"])
            common = list(by_pair)
            if entry["sd"] is not None:  # sizing n from the spread so far
                entry["pairs_for_half_width"] = {
                    "half_width": s.target_half_width,
                    "pairs": pairs_needed(entry["sd"], s.target_half_width),
                }
            # Predictions stay out of git: without them (a fresh checkout) no bootstrap.
            kept = [k for k in common if os.path.isfile(rs[k]["predictions"])]
            kept = [k for k in kept if os.path.isfile(ref[k]["predictions"])]
            if s.bootstrap_samples and kept:
                pairs = [(_load_json(rs[k]["predictions"]), _load_json(ref[k]["predictions"]))
                         for k in kept]  # fmt: skip
                boot = bootstrap_mean_delta_interval(
                    gt, pairs, DEFAULT_IOU_THRESHOLDS, s.bootstrap_samples
                )
                # Over the test images, of the pairs' last evaluations (their predictions).
                entry["bootstrap"] = {k: boot[k] for k in ("delta", "ci95", "pairs", "samples")}
            entry["final_ap_per_iou"] = delta_per_iou(
                [(_final_ap_file(rs[k]), _final_ap_file(ref[k])) for k in common]
            )
            deltas[arm] = entry
        out["fractions"][f"{fraction:g}"] = {
            "arms": arms,
            "delta_vs_supervised": deltas,
            "contrasts": arm_contrasts(scores, s.contrasts),
            "diagnostics": arm_diagnostics([r for rs in by_arm.values() for r in rs.values()]),
        }
    return out


def _fmt(entry: dict, unit: str = "") -> str:
    lo, hi = entry["ci95"]
    if lo is None:
        return f"{entry['mean']:+.2f} [no interval from one pair] (1)"
    return f"{entry['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}] ({entry['n']}{unit})"


def _fmt_burn_ins(entry: dict) -> str:
    b = entry.get("by_burn_in")
    return _fmt(b, " burn-ins") if b and b["ci95"][0] is not None else ""


def _fmt_boot(entry: dict) -> str:
    b = entry.get("bootstrap")
    if not b:
        return ""
    lo, hi = b["ci95"]
    return f"{b['delta']:+.2f} [{lo:+.2f}, {hi:+.2f}] ({b['pairs']})"


def _contrasts_table(block: dict) -> List[str]:
    """The ``contrasts`` of one fraction: each difference between two arms, per pair too."""
    contrasts = block.get("contrasts") or {}
    if not contrasts:
        return []
    lines = ["", "| arm - reference | mean [95 % t] (pairs) | the same over burn-ins "
             "| per pair (split:order difference) |", "|---|---|---|---|"]  # fmt: skip
    for name, d in contrasts.items():
        pairs = ", ".join(f"{k} {v:+.2f}" for k, v in d["per_pair"].items())
        lines.append(f"| {name} | {_fmt(d)} | {_fmt_burn_ins(d)} | {pairs} |")
    return lines


def _diagnostics_table(block: dict) -> List[str]:
    """Per arm: the final predictions' AP difference at IoU 0.1 / 0.5 / 0.7 and the runs'
    diagnostics (means over the arm's runs; blank where not logged)."""
    names = list(DIAGNOSTIC_KEYS)
    lines = ["", "| arm | dAP@0.1 | dAP@0.5 | dAP@0.7 | " + " | ".join(names) + " |"]
    lines.append("|---" * (4 + len(names)) + "|")
    diag = block.get("diagnostics", {})
    for arm in block["arms"]:
        d = block["delta_vs_supervised"].get(arm, {}).get("final_ap_per_iou", {})
        ious = [d.get(k) for k in ("0.10", "0.50", "0.70")]
        cells = [f"{v:+.2f}" if v is not None else "" for v in ious]
        cells += [f"{diag.get(arm, {})[n]:.3g}" if n in diag.get(arm, {}) else "" for n in names]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def write_tables(summary: dict, out_dir: str) -> None:
    """``tables.md``: gates, then per fraction each arm's mAP and paired difference."""
    g = summary["gates"]
    lines = ["# Two-stage protocol", "", "## Gates", ""]
    lines += [f"- {k}: {v}" for k, v in g.items() if k not in ("messages", "burn_ins")]
    lines += [f"- **{m}**" for m in g.get("messages", [])]
    if g.get("burn_ins"):
        lines += ["", "| burn-in | iterations | lr drops at | BN statistics | val patches | "
                  "max - min over last fifth | final val mAP |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for b in g["burn_ins"]:
            move = "" if b["move_last_fifth"] is None else f"{b['move_last_fifth']:.2f}"
            steps = ", ".join(map(str, b.get("lr_steps") or []))
            n = b.get("precise_bn_iters")
            stats = f"precise ({n} batches)" if n else "running"
            lines.append(
                f"| {b['fraction'] * 100:g} %, split {b['split_seed']} | {b['iterations']} | "
                f"{steps} | {stats} | {b['val_images']} | {move} | {b['final_val_mAP']:.2f} |"
            )
    split = summary.get("settings", {}).get("score_split", "test")
    for fraction, block in summary["fractions"].items():
        lines += ["", f"## {float(fraction) * 100:g} % labelled (scored on {split})", ""]
        lines += [
            "| arm | mAP (mean over pairs) | delta vs supervised: mean [95 % t] (n) "
            "| the same over burn-ins (each burn-in's mean of its pairs) "
            "| pairs for a +-half-width t-interval at this spread "
            f"| last evaluation: delta [95 % bootstrap over {split} images] (pairs) "
            "| student at the end (teacher arms) |"
        ]
        lines += ["|---|---|---|---|---|---|---|"]
        for arm, a in block["arms"].items():
            d = block["delta_vs_supervised"].get(arm) or {}
            size = d.get("pairs_for_half_width")
            size = f"{size['pairs']} for +-{size['half_width']:g}" if size else ""
            delta = _fmt(d) if d else ("reference" if arm == "supervised" else "no paired run")
            student = f"{a['student_final_mAP']:.2f}" if "student_final_mAP" in a else ""
            lines.append(
                f"| {arm} | {a['mAP']:.2f} | {delta} | {_fmt_burn_ins(d)} | {size} "
                f"| {_fmt_boot(d)} | {student} |"
            )
        lines += _contrasts_table(block)
        lines += _diagnostics_table(block)
    atomic_write_text(os.path.join(out_dir, "tables.md"), "\n".join(lines) + "\n")


def plot_deltas(summary: dict, out_dir: str) -> None:
    """``paired_deltas.png``: each arm's mean paired difference with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (f"{a} ({float(fr) * 100:g} %)", d)
        for fr, block in summary["fractions"].items()
        for a, d in block["delta_vs_supervised"].items()
    ]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(rows) + 1))
    for i, (_, d) in enumerate(rows):
        lo, hi = d["ci95"]
        if lo is not None:
            ax.plot([lo, hi], [i, i], color="tab:blue")
        ax.plot([d["mean"]], [i], "o", color="tab:blue")
    ax.axvline(0.0, color="grey", lw=1)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.set_xlabel("mAP[.1:.7] difference vs supervised-continue (95 % t interval)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "paired_deltas.png"), dpi=120)
    plt.close(fig)


def burn_in_cells(s: ProtocolSettings) -> List[tuple]:
    """The (fraction, split seed) burn-ins: every split seed at the continued fractions,
    ``gate_split_seed`` only at the others, which serve the label-limited gate alone (at 100 %
    every split seed selects the same images). Longest first, so that with several jobs the
    longest does not run alone at the end; among equal lengths, continued fractions first, so
    that stage B starts early."""
    cont = [(f, split) for f in s.fractions if f in s.continue_fractions for split in s.split_seeds]
    gate_only = [(f, s.gate_split_seed) for f in s.fractions if f not in s.continue_fractions]
    return sorted(cont + gate_only, key=lambda cell: -burn_in_iters(s, cell[0]))


def run_protocol(s: ProtocolSettings, data: dict, out_dir: str) -> dict:
    """Stages A and B, gates and statistics; returns the summary (also written to disk).

    ``s.jobs`` runs at a time. A continued fraction's stage B runs are queued as soon as its
    burn-in ends, so they share the cores with the burn-ins still running; once every burn-in
    has ended the gates are checked, and a failed gate (without ``ignore_gates``) cancels the
    queued runs and reports no comparison.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    if s.arms:
        check_stage_b_opts(s)
    os.makedirs(out_dir, exist_ok=True)
    data_b = _scored_data(s, data)
    cells = burn_in_cells(s)
    burn_ins, runs, gates, stopped = [], [], None, False
    with ThreadPoolExecutor(max_workers=max(1, s.jobs)) as pool:
        pending = {pool.submit(burn_in, s, data, f, split, out_dir): "A" for f, split in cells}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                stage = pending.pop(fut)
                if fut.cancelled():
                    continue
                if stage == "B":
                    runs.append(fut.result())
                    continue
                b = fut.result()
                burn_ins.append(b)
                if b["fraction"] in s.continue_fractions and not stopped:
                    for order in s.order_seeds:
                        for arm in s.arms:
                            args = (s, data_b, arm, order, b, out_dir)
                            pending[pool.submit(continue_run, *args)] = "B"
                if len(burn_ins) == len(cells):
                    gates = check_gates(burn_ins, s)
                    if gates["messages"] and not s.ignore_gates:
                        stopped = True
                        for message in gates["messages"]:
                            print(message, flush=True)
                        for other in pending:
                            other.cancel()
    gates["ignored"] = bool(gates["messages"]) and not stopped
    runs = runs if not stopped else []
    return write_summary(s, runs, gates, data_b["test_json"], out_dir, keep_fuller=True)


def check_random_streams(runs: List[dict]) -> None:
    """Refuses a record whose runs trained under different :data:`RANDOM_STREAMS`: their paired
    differences would mix two noise levels (under 1 the arms drew different random numbers)."""
    versions = {}
    for r in runs:
        versions.setdefault(r.get("random_streams", 1), []).append(r)
    if len(versions) > 1:
        old = min(versions)
        names = ", ".join(
            f"{r['arm']} (split {r['split_seed']}, order {r['order_seed']})"
            for r in versions[old][:3]
        )
        raise ValueError(
            f"the record mixes stage B runs of random streams {sorted(versions)}: {names}"
            f"{' ...' if len(versions[old]) > 3 else ''} trained under version {old}, other runs "
            f"under {max(versions)}. Summarise them apart: continue with today's code in a new "
            "--output folder (the burn-ins can be copied over), or summarise the old runs with "
            "the code they were trained with"
        )


def runs_left_out(old: dict, new: dict) -> List[str]:
    """What summary ``old`` holds that summary ``new`` does not: per fraction and arm, the
    ``split:order`` pairs it lacks (an arm it lacks altogether, or, for a summary written before
    the arms listed their pairs, one with fewer pairs). Empty when ``new`` covers ``old``."""
    lost = []
    for fraction, block in old.get("fractions", {}).items():
        arms = new.get("fractions", {}).get(fraction, {}).get("arms", {})
        for arm, entry in block.get("arms", {}).items():
            now = arms.get(arm)
            if now is None:
                lost.append(f"{arm} at {fraction}: all {entry['n']} pairs")
            elif "pairs" in entry and "pairs" in now:
                missing = [p for p in entry["pairs"] if p not in set(now["pairs"])]
                if missing:
                    lost.append(f"{arm} at {fraction}: {', '.join(missing)}")
            elif entry["n"] > now["n"]:
                lost.append(f"{arm} at {fraction}: {entry['n']} pairs, here {now['n']}")
    return lost


def write_summary(
    s: ProtocolSettings, runs, gates, test_json: str, out_dir: str, keep_fuller: bool = False
) -> dict:
    """``summary.json``, ``tables.md`` and ``paired_deltas.png`` of ``runs`` under ``gates``.

    ``keep_fuller`` (a call that ran some of a record's pairs): a summary already there that
    holds runs these do not (:func:`runs_left_out`) is left as it is, and this one goes to its
    ``partial/`` folder, with a message saying how to refresh the record's."""
    check_random_streams(runs)
    summary = summarize(runs, gates, test_json, s)
    out_dir = summary_dir(s, out_dir)
    existing = os.path.join(out_dir, "summary.json")
    if keep_fuller and os.path.isfile(existing):
        lost = runs_left_out(_load_json(existing), summary)
        if lost:
            partial = os.path.join(out_dir, "partial")
            print(
                f"{existing} summarises runs that this call did not ("
                f"{'; '.join(lost[:4])}{' ...' if len(lost) > 4 else ''}): left as it is; this "
                f"call's summary is in {partial}. To refresh the record's, run the script with "
                "--summarize-only and every split seed, order seed and arm of the record",
                flush=True,
            )
            out_dir = partial
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_json(os.path.join(out_dir, "summary.json"), summary)
    write_tables(summary, out_dir)
    plot_deltas(summary, out_dir)
    print(f"wrote {out_dir}/summary.json, tables.md, paired_deltas.png", flush=True)
    return summary


def summarize_finished(s: ProtocolSettings, data: dict, out_dir: str) -> dict:
    """The summary of the runs finished so far (a protocol still running, or stopped early):
    the burn-ins' gates if they have all ended, and every stage B run with a ``result.json``
    among ``s``'s arms, seeds and fractions; with ``s.reference_tags`` also those of the other
    search points, as arms ``<arm>@<tag>``."""
    burn_ins = []
    for f, split in burn_in_cells(s):
        path = os.path.join(out_dir, "burn_in", f"f{f:g}_split{split}", "result.json")
        if os.path.isfile(path):
            with open(path) as fh:
                burn_ins.append(json.load(fh))
    gates = check_gates(burn_ins, s) if burn_ins else {"messages": []}
    if len(burn_ins) < len(burn_in_cells(s)):
        gates["messages"].append(
            f"only {len(burn_ins)} of {len(burn_in_cells(s))} burn-ins ended: the gates above "
            "read those only"
        )
    gates["ignored"] = bool(gates["messages"])
    runs = []
    tags = (s.tag, *[t for t in s.reference_tags if t != s.tag])
    cells = product(tags, s.arms, s.continue_fractions, s.split_seeds, s.order_seeds)
    for tag, arm, f, split, order in cells:
        run_dir = _run_dir(replace(s, tag=tag), out_dir, arm, f, split, order)
        path = os.path.join(run_dir, "result.json")
        if os.path.isfile(path):
            run = _load_json(path)
            runs.append(run if tag == s.tag else dict(run, arm=f"{arm}@{tag}"))
    return write_summary(s, runs, gates, _scored_data(s, data)["test_json"], out_dir)
