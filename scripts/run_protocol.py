#!/usr/bin/env python
"""The two-stage protocol (dualalign/benchmark/protocol.py): burn-ins, gates, continuations,
paired differences with 95 % intervals.

    python scripts/run_protocol.py --jobs 2                       # synthetic, CPU defaults
    python scripts/run_protocol.py --arms supervised null_control dualalign csd mean_teacher
    python scripts/run_protocol.py --pilot                        # 3 pairs, gates reported only
    python scripts/run_protocol.py --dataset cervix93 --data-root PATH/cervix93 --jobs 2
    python scripts/run_protocol.py --summarize-only               # the runs finished so far
    python scripts/run_protocol.py --stage-a-only --jobs 2        # burn-ins and gates only
    python scripts/run_protocol.py --select-on-val --arms supervised dualalign_teacher \
        --tag box0.8 DUALALIGN.PSEUDO.BOX_THRESH 0.8              # a val search point
    python scripts/run_protocol.py --select-on-val --summarize-only --tag box0.8 \
        --arms dualalign_teacher teacher_null_control --reference-tag ref \
        --contrast dualalign_teacher teacher_null_control@ref     # against another point's runs
"""

import argparse
import os
import sys

from dualalign.benchmark.datasets import CERVIX93_SHORT_SIDE, prepare_cervix93_protocol
from dualalign.benchmark.protocol import (
    ARMS,
    CONTRASTS,
    ProtocolSettings,
    prepare_synthetic,
    run_protocol,
    summarize_finished,
    split_arm_tag,
)


DATASETS = ("synthetic", "cervix93", "cervix93_agnostic")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="synthetic", choices=DATASETS)
    p.add_argument(
        "--data-root",
        default="",
        help="synthetic: where the set is generated (default datasets/synthetic_protocol); "
        "cervix93: the folder with annotations_{train,val,test}.json and images/",
    )
    p.add_argument(
        "--short-side",
        type=int,
        metavar="PX",
        help="cervix93: the 1280x960 frames' shorter side in pixels for training and test "
        f"(default {CERVIX93_SHORT_SIDE}; 320 halves the CPU step time); a 64 px nucleus box "
        "becomes 64 * PX / 960 px",
    )
    p.add_argument("--output", default="", help="default: results/protocol/<dataset>")
    p.add_argument("--arms", nargs="+", default=list(ProtocolSettings.arms), choices=list(ARMS))
    p.add_argument(
        "--burn-in-iters",
        type=int,
        default=ProtocolSettings.burn_in_iters,
        help="stage A at the continued fraction (25 %%)",
    )
    p.add_argument(
        "--gate-burn-in-iters",
        type=int,
        default=ProtocolSettings.gate_burn_in_iters,
        help="stage A at the gate-only fraction (100 %%); 0: --burn-in-iters",
    )
    p.add_argument(
        "--burn-in-steps",
        nargs="+",
        type=float,
        default=list(ProtocolSettings.burn_in_steps),
        metavar="FRACTION",
        help="stage A's tenfold lr drops, as fractions of its iterations (default: 0.7 0.8, "
        "the second at the start of the last fifth, which the plateau gate reads; 0.7: the "
        "one-drop record of 2026-12-02 to 04)",
    )
    p.add_argument(
        "--precise-bn-iters",
        type=int,
        default=ProtocolSettings.precise_bn_iters,
        metavar="N",
        help="stage A's BN statistics at each evaluation and in its checkpoint: the average over "
        "N labelled batches (detectron2's PreciseBN; the weights are the same), or 0 for the "
        "running averages: pass 0 to read or extend the records made before 2026-12-05 "
        "(one-drop and two-drop) (default: %(default)s)",
    )
    p.add_argument("--continue-iters", type=int, default=ProtocolSettings.continue_iters)
    p.add_argument("--split-seeds", nargs="+", type=int, default=list(ProtocolSettings.split_seeds))
    p.add_argument(
        "--gate-split-seed",
        type=int,
        default=ProtocolSettings.gate_split_seed,
        help="split seed of the gate-only (100 %%) burn-in, which serves every split seed",
    )
    p.add_argument("--order-seeds", nargs="+", type=int, default=list(ProtocolSettings.order_seeds))
    p.add_argument(
        "--contrast",
        nargs=2,
        action="append",
        metavar=("ARM", "REFERENCE"),
        help="summarise ARM minus REFERENCE over their common pairs (repeatable; replaces the "
        "default contrasts: " + ", ".join(f"{a} - {r}" for a, r in CONTRASTS) + "); an arm "
        "of a --reference-tag point is spelt ARM@TAG",
    )
    p.add_argument("--bootstrap-samples", type=int, default=ProtocolSettings.bootstrap_samples)
    p.add_argument("--jobs", type=int, default=1, help="cores are split between this many runs")
    p.add_argument("--pilot", action="store_true", help="3 pairs; continue past failed gates")
    p.add_argument(
        "--ignore-gates",
        action="store_true",
        help="continue past failed gates; the summary records them as failed and ignored",
    )
    p.add_argument(
        "--select-on-val",
        action="store_true",
        help="score stage B on the val split (a hyper-parameter search; never reads test)",
    )
    p.add_argument("--tag", default="", help="names a search point (its runs and summary)")
    p.add_argument(
        "--reference-tag",
        action="append",
        default=[],
        metavar="TAG",
        help="--select-on-val --summarize-only: also read the runs of the search point TAG, as "
        "arms ARM@TAG, e.g. --reference-tag ref --contrast self_training "
        "teacher_null_control@ref (repeatable)",
    )
    p.add_argument(
        "--stage-a-only",
        action="store_true",
        help="the burn-ins and the gates only (no stage B run is started)",
    )
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="train nothing: summarise the runs finished so far of the given seeds and arms "
        "(a protocol still running; this replaces the folder's summary). A call that trains "
        "leaves a summary holding runs it did not make as it is, and writes its own to partial/",
    )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="KEY VALUE config pairs for every run; in stage B they override the arm's own "
        "values, and the keys of stage B's budget (iterations, lr, seed, weights) are refused",
    )
    args = p.parse_args(argv)
    if args.short_side is not None and args.dataset == "synthetic":
        p.error("--short-side: Cervix93 only (the synthetic patches are 256 px)")
    if args.precise_bn_iters < 0:
        p.error(f"--precise-bn-iters {args.precise_bn_iters}: N >= 0 (0: the running averages)")
    for name in sum(args.contrast or [], []):
        try:
            arm, tag = split_arm_tag(name)
        except ValueError as e:
            p.error(f"--contrast: {e}")
        if tag and tag not in args.reference_tag:
            p.error(f"--contrast {name}: add --reference-tag {tag} (its runs are read only then)")
        if arm not in args.arms:  # else its runs are never read and the contrast is empty
            p.error(f"--contrast {name}: add {arm} to --arms (only those arms' runs are read, "
                    "in this point and in each --reference-tag point)")
    if args.reference_tag and not (args.select_on_val and args.summarize_only):
        p.error("--reference-tag reads other search points' runs: use it with --select-on-val "
                "--summarize-only")
    s = ProtocolSettings(
        burn_in_iters=args.burn_in_iters,
        gate_burn_in_iters=args.gate_burn_in_iters,
        burn_in_steps=tuple(args.burn_in_steps),
        precise_bn_iters=args.precise_bn_iters,
        continue_iters=args.continue_iters,
        split_seeds=tuple(args.split_seeds[:1] if args.pilot else args.split_seeds),
        gate_split_seed=args.gate_split_seed,
        order_seeds=tuple(args.order_seeds[:3] if args.pilot else args.order_seeds),
        arms=() if args.stage_a_only else tuple(args.arms),
        contrasts=tuple(map(tuple, args.contrast)) if args.contrast else CONTRASTS,
        bootstrap_samples=args.bootstrap_samples,
        jobs=args.jobs,
        ignore_gates=args.pilot or args.ignore_gates,
        opts=ProtocolSettings().opts + list(args.opts),
        score_split="val" if args.select_on_val else "test",
        tag=args.tag,
        reference_tags=tuple(args.reference_tag),
    )
    if args.dataset == "synthetic":
        data = prepare_synthetic(args.data_root or os.path.join("datasets", "synthetic_protocol"))
    else:
        agnostic = args.dataset == "cervix93_agnostic"
        label = args.dataset + "_protocol"
        side = CERVIX93_SHORT_SIDE if args.short_side is None else args.short_side
        try:
            data = prepare_cervix93_protocol(args.data_root, agnostic, label, side)
        except ValueError as e:  # a short side too small for the boxes
            p.error(f"--short-side: {e}")
    args.output = args.output or os.path.join("results", "protocol", args.dataset)
    if args.summarize_only:
        summary = summarize_finished(s, data, args.output)
    else:
        summary = run_protocol(s, data, args.output)
    return 1 if summary["gates"]["messages"] and not (args.pilot or args.ignore_gates) else 0


if __name__ == "__main__":
    sys.exit(main())
