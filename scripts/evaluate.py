#!/usr/bin/env python
"""Box AP averaged over an IoU range for a COCO results file.

Usage:
    python scripts/evaluate.py --gt GT.json --pred PRED.json [--iou 0.1:0.7:0.1]
        [--max-dets 200] [--json]

PRED is a COCO results file: a list of ``{image_id, category_id, bbox: [x, y, w, h], score}``
with the category ids of GT. Prints a table of AP (percent) per class and IoU threshold; with
``--json`` the last stdout line is ``{"mAP", "per_class", "per_iou"}`` (NaN written as null:
classes without ground truth). Bad input exits with code 2 and a one-line error.
"""

import argparse
import sys
import warnings

# Importing the package imports torch, whose deprecation notice would break the one-line errors.
warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")

from dualalign.evaluation.range_ap import (  # noqa: E402
    dumps_result,
    evaluate_coco_range,
    format_ap_table,
    parse_iou_range,
)
from dualalign.utils.json_input import InputError, load_coco_inputs  # noqa: E402


def run(args: argparse.Namespace) -> dict:
    """Load inputs and evaluate; raises InputError on bad input."""
    try:
        thresholds = parse_iou_range(args.iou)
    except ValueError as e:
        raise InputError(f"--iou: {e}") from None
    if args.max_dets < 1:
        raise InputError(f"--max-dets must be >= 1, got {args.max_dets}")
    _, coco_gt, preds = load_coco_inputs(args.gt, args.pred)
    try:
        return evaluate_coco_range(coco_gt, preds, thresholds, max_dets=args.max_dets)
    except ValueError as e:
        raise InputError(f"pred file {args.pred}: {e}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="COCO ground-truth JSON")
    parser.add_argument("--pred", required=True, help="COCO results JSON (list of detections)")
    parser.add_argument("--iou", default="0.1:0.7:0.1", help="start:stop:step or a,b,c")
    parser.add_argument("--max-dets", type=int, default=200, help="detections kept per image")
    parser.add_argument("--json", action="store_true", help="print a JSON summary last")
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_ap_table(result))
    if args.json:
        summary = {k: result[k] for k in ("mAP", "per_class", "per_iou")}
        print(dumps_result(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
