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

Modules: the arms (:mod:`.protocol_arms`), the settings and run folders
(:mod:`.protocol_settings`), stage A and the gates (:mod:`.stage_a`), the statistics
(:mod:`.protocol_summary`, :mod:`.protocol_tables`); this one prepares the data, runs stage B
and sequences the stages.
"""

import os
import time
from dataclasses import replace
from itertools import product

from ..data.synthetic import generate_dataset
from ..utils.atomic import atomic_write_json
from .protocol_arms import ARMS, CONTRASTS, TERMS_OFF, split_arm_tag
from .protocol_settings import (
    ProtocolSettings,
    burn_in_dir,
    config_file,
    eval_history,
    fraction_opts,
    load_json,
    run_train_net,
    stage_b_dir,
    summary_dir,
)
from .protocol_summary import arm_contrasts, runs_left_out, summarize, write_summary
from .runs import read_run_ap
from .stage_a import burn_in, burn_in_cells, burn_in_iters, check_gates, model_digest

__all__ = [
    "ARMS",
    "CONTRASTS",
    "TERMS_OFF",
    "arm_contrasts",
    "ProtocolSettings",
    "check_gates",
    "prepare_synthetic",
    "burn_in",
    "burn_in_cells",
    "burn_in_iters",
    "model_digest",
    "run_protocol",
    "runs_left_out",
    "summarize",
    "summarize_finished",
    "split_arm_tag",
    "summary_dir",
    "write_summary",
]

# 300 val patches: on 60, a plateaued 25 % burn-in's three last-fifth evaluations spread by
# 1.0-1.6 points (max - min), the plateau gate's whole allowance. Image i of a split depends only
# on (seed, split, i), so the labelled, pool and test images are the same at any val size.
PROTOCOL_SIZES = dict(num_labeled=120, num_unlabeled=960, num_val=300, num_test=500)


# Version of the random streams a stage B run trains with, kept in its result.json (none: 1).
# 2: every arm given the same SEED draws the same random numbers for its labelled images (the
# unlabelled batches come from a private stream, and training starts from a global RNG state
# that does not depend on the arm's model); the null control then trains supervised-continue's
# weights up to rounding. Under 1 it was a supervised run with other random draws.
RANDOM_STREAMS = 2


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
    data_opts = data["opts"] + fraction_opts(data, burn_in["fraction"])
    return data_opts + arm_opts + s.opts + _stage_b_budget(s, burn_in, order)


def continue_run(s, data, arm, order, burn_in: dict, out) -> dict:
    """Stage B: ``arm`` continued from a burn-in (its record); scored by its last checkpoints."""
    fraction, split = burn_in["fraction"], burn_in["split_seed"]
    run_dir = stage_b_dir(s, out, arm, fraction, split, order)
    result = os.path.join(run_dir, "result.json")
    if os.path.isfile(result):
        return load_json(result)
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
    run_train_net(config_file(s, method), opts, run_dir, s.jobs)
    history = eval_history(os.path.join(run_dir, "metrics.json"))
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


def summarize_finished(s: ProtocolSettings, data: dict, out_dir: str) -> dict:
    """The summary of the runs finished so far (a protocol still running, or stopped early):
    the burn-ins' gates if they have all ended, and every stage B run with a ``result.json``
    among ``s``'s arms, seeds and fractions; with ``s.reference_tags`` also those of the other
    search points, as arms ``<arm>@<tag>``."""
    burn_ins = []
    for f, split in burn_in_cells(s):
        path = os.path.join(burn_in_dir(out_dir, f, split), "result.json")
        if os.path.isfile(path):
            burn_ins.append(load_json(path))
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
        run_dir = stage_b_dir(replace(s, tag=tag), out_dir, arm, f, split, order)
        path = os.path.join(run_dir, "result.json")
        if os.path.isfile(path):
            run = load_json(path)
            runs.append(run if tag == s.tag else dict(run, arm=f"{arm}@{tag}"))
    return write_summary(s, runs, gates, _scored_data(s, data)["test_json"], out_dir)
