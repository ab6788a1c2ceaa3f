#!/usr/bin/env python
"""Per-class pseudo-box thresholds: precision / recall of a model's detections on a labelled
split at several score thresholds, and the lowest threshold reaching a target precision per class.
It also prints what the detections above each threshold are: right, duplicates, the wrong class
(beside a right label of the cell, or alone), badly localised, or background; and, at one
threshold (--errors-at), the same per predicted class with the true class of the cells that its
wrong-class detections label.

Usage (the teacher's checkpoint, on the val split; never the test split):
    python train_net.py --eval-only --config-file CFG MODEL.WEIGHTS TEACHER.pth \
        DATASETS.TEST "('my_val',)" OUTPUT_DIR out/val_eval
    python scripts/pseudo_thresholds.py --gt val.json \
        --pred out/val_eval/inference/my_val/coco_instances_results.json --min-precision 75

The last line printed is the config opt, e.g. ``DUALALIGN.PSEUDO.BOX_THRESH_PER_CLASS
[1.0,0.8,0.9,0.9]`` (classes in ascending category id; 1.0: the class gives no pseudo-box).
Bad input exits with code 2 and a one-line error.
"""

import argparse
import json
import sys
import warnings

warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")

from dualalign.evaluation.threshold_sweep import (  # noqa: E402
    format_class_errors,
    format_error_table,
    format_sweep_table,
    sweep,
)
from dualalign.utils.json_input import InputError, load_coco_inputs  # noqa: E402

DEFAULT_THRESHOLDS = "0.5,0.6,0.7,0.8,0.9,0.95,0.98"


def run(args: argparse.Namespace) -> dict:
    """Loads the files and sweeps; raises InputError on bad input."""
    try:
        thresholds = sorted(float(t) for t in args.thresholds.split(","))
    except ValueError:
        raise InputError(f"--thresholds {args.thresholds!r}: give numbers like 0.7,0.8,0.9")
    if not thresholds or any(not 0 <= t < 1 for t in thresholds):
        raise InputError(f"--thresholds {args.thresholds!r}: values in [0, 1)")
    if args.errors_at is not None and args.errors_at not in thresholds:
        raise InputError(f"--errors-at {args.errors_at:g}: one of --thresholds {args.thresholds}")
    if not 0 < args.min_precision <= 100:
        raise InputError(f"--min-precision {args.min_precision}: a percentage in (0, 100]")
    gt, _, preds = load_coco_inputs(args.gt, args.pred)  # the checks of scripts/evaluate.py
    try:
        return sweep(gt, preds, thresholds, args.min_precision)
    except ValueError as e:
        raise InputError(f"pred file {args.pred}: {e}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="COCO ground truth of a labelled split (val)")
    parser.add_argument("--pred", required=True, help="the model's COCO results on that split")
    parser.add_argument("--thresholds", default=DEFAULT_THRESHOLDS, help="comma-separated")
    parser.add_argument("--min-precision", type=float, default=75.0, help="percent")
    parser.add_argument(
        "--errors-at",
        type=float,
        default=None,
        help="one of --thresholds: the per-class error table's (default: the nearest to 0.9)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON record too")
    args = parser.parse_args(argv)
    try:
        out = run(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"precision / recall (%) above each threshold; chosen: >= {args.min_precision:g} %")
    print(format_sweep_table(out))
    print("\nwhat the detections above each threshold are (dualalign/evaluation/pseudo_errors.py)")
    print(format_error_table(out))
    # per class at one threshold: the given one, else the swept one nearest the pipeline's 0.9
    at = args.errors_at
    if at is None:
        at = min(out["thresholds"], key=lambda t: abs(t - 0.9))
    print()
    print(format_class_errors(out, at))
    if args.json:
        print(json.dumps(out))
    chosen = ",".join(f"{t:g}" for t in out["box_thresh_per_class"])
    print(f"DUALALIGN.PSEUDO.BOX_THRESH_PER_CLASS [{chosen}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
