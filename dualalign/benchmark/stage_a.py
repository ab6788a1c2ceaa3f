"""Stage A of the protocol: the supervised burn-ins (trained, recorded, reused or rebuilt), and
the gates read from their val curves."""

import functools
import hashlib
import json
import math
import os
import shutil
from typing import Dict, List, Optional

from ..utils.atomic import atomic_write_json
from .protocol_settings import (
    ProtocolSettings,
    burn_in_dir,
    config_file,
    eval_history,
    fraction_opts,
    load_json,
    metrics_records,
    run_train_net,
    stage_b_dir,
)

__all__ = [
    "burn_in",
    "burn_in_cells",
    "burn_in_iters",
    "burn_in_lr_steps",
    "check_gates",
    "logged_losses",
    "loss_mismatch",
    "model_digest",
    "recorded_lr_steps",
]

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


def _train_burn_in(
    s: ProtocolSettings, data: dict, fraction: float, split: int, run_dir: str, abort_if=None
):
    """Trains stage A for (``fraction``, ``split``) into ``run_dir``; returns its checkpoint
    (``abort_if``: see :func:`run_train_net`)."""
    n = burn_in_iters(s, fraction)
    opts = s.opts + data["opts"] + fraction_opts(data, fraction) + [
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
    run_train_net(config_file(s, "supervised"), opts, run_dir, s.jobs, abort_if=abort_if)
    checkpoint = os.path.join(run_dir, "model_final.pth")
    last = os.path.join(run_dir, f"model_{n - 1:07d}.pth")  # the periodic copy of the final one
    if os.path.isfile(last) and os.path.isfile(checkpoint):
        os.remove(last)
    return checkpoint


def logged_losses(metrics_file: str) -> Dict[int, float]:
    """``{iteration: total_loss}`` of a run's metrics.json (empty if it does not exist yet; a
    line being written is skipped)."""
    records = metrics_records(metrics_file, live=True)
    return {r["iteration"]: r["total_loss"] for r in records if "total_loss" in r}


def loss_mismatch(recorded: Dict[int, float], new: Dict[int, float]) -> Optional[str]:
    """The first iteration logged in both (:func:`logged_losses`) whose ``total_loss`` differs,
    as a message (``None`` while they agree or share no iteration yet).

    A burn-in trained again from the same code, data and seed on a machine that reproduces it
    logs the same losses bit for bit; one that does not usually parts from the first log line,
    long before its final digest can be compared."""
    for it in sorted(set(recorded) & set(new)):
        if recorded[it] != new[it]:
            return f"total_loss at iteration {it} is {new[it]!r} here, {recorded[it]!r} recorded"
    return None


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
            r = load_json(path)
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

    @functools.lru_cache(maxsize=None)
    def dependent() -> List[str]:  # listed once, and only when a rebuild is needed or differs
        return _runs_from(out, record["fraction"], record["split_seed"], record["model_digest"])

    def not_reproduced(how: str) -> RuntimeError:
        runs = dependent()
        return RuntimeError(
            f"{run_dir}: the rebuilt burn-in ({rebuilt_dir}) {how}: this machine ({_machine()}) "
            f"does not reproduce stage A (recorded on "
            f"{record.get('machine', 'an unrecorded machine')}) bit for bit, so new stage B runs "
            f"would not be paired with the {len(runs)} committed ones continued from it "
            f"({', '.join(runs[:3])}, ...). Finish this burn-in's pairs on a machine that "
            "reproduces it; or leave split seed "
            f"{record['split_seed']} out and add new ones (--split-seeds N, whose burn-ins and "
            "every arm of their pairs, supervised-continue included, train here); or move the "
            "protocol folder aside to start a new record (nothing in it is overwritten)."
        )

    if not os.path.isfile(checkpoint):
        if os.path.isdir(rebuilt_dir):  # an interrupted rebuild: no checkpoint, nothing kept
            shutil.rmtree(rebuilt_dir)
        recorded = logged_losses(os.path.join(run_dir, "metrics.json"))  # read once
        new_metrics = os.path.join(rebuilt_dir, "metrics.json")

        def mismatch():
            return loss_mismatch(recorded, logged_losses(new_metrics))

        # with committed runs to pair with, stop at the first logged loss that differs
        abort_if = mismatch if dependent() else None
        try:
            _train_burn_in(
                s, data, record["fraction"], record["split_seed"], rebuilt_dir, abort_if=abort_if
            )
        except RuntimeError:
            reason = abort_if and abort_if()
            if reason:
                raise not_reproduced(f"was stopped early: its {reason}") from None
            raise
    digest = model_digest(checkpoint)
    if digest == record["model_digest"]:
        return dict(record, checkpoint=checkpoint, rebuilt=True)
    if dependent():
        raise not_reproduced(
            f"has model digest {digest[:12]}, the recorded one {record['model_digest'][:12]}"
        )
    replaced = {k: record.get(k) for k in ("model_digest", "val_mAP_history", "machine")}
    metrics = os.path.join(rebuilt_dir, "metrics.json")
    new = dict(
        {k: v for k, v in record.items() if k not in ("replaced", "rebuilt")},
        val_mAP_history=[list(h) for h in eval_history(metrics)],
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
    run_dir = burn_in_dir(out, fraction, split)
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
        "val_mAP_history": eval_history(os.path.join(run_dir, "metrics.json")),
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
    dirs = (stage_b_dir(s, out, arm, fraction, split, o) for arm in s.arms for o in s.order_seeds)
    return any(not os.path.isfile(os.path.join(d, "result.json")) for d in dirs)


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
        fix = "lengthen --burn-in-iters so that labels, not iterations, limit the detector"
        if gates["plateau"]:  # every curve is flat: more iterations will not open the gap
            fix = (
                "every burn-in has plateaued, so more iterations will not open the gap: at "
                f"{min(means) * 100:g} % the labels do not limit this detector on this data set "
                "(a smaller labelled fraction, or a harder task, would be label-limited)"
            )
        gates["messages"].append(
            f"label-limited gate failed: supervised gains {gap:.2f} points from the smallest to "
            f"the largest fraction (needed >= {s.label_gap_points}); {fix}"
        )
    return gates


def burn_in_cells(s: ProtocolSettings) -> List[tuple]:
    """The (fraction, split seed) burn-ins: every split seed at the continued fractions,
    ``gate_split_seed`` only at the others, which serve the label-limited gate alone (at 100 %
    every split seed selects the same images). Longest first, so that with several jobs the
    longest does not run alone at the end; among equal lengths, continued fractions first, so
    that stage B starts early."""
    cont = [(f, split) for f in s.fractions if f in s.continue_fractions for split in s.split_seeds]
    gate_only = [(f, s.gate_split_seed) for f in s.fractions if f not in s.continue_fractions]
    return sorted(cont + gate_only, key=lambda cell: -burn_in_iters(s, cell[0]))
