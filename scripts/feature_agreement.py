#!/usr/bin/env python
"""Would the labelled set, in the box head's feature space, overrule a model's confident
detections? Each rule of dualalign/evaluation/feature_agreement.py against the score threshold
that keeps as many right detections (a labeller diagnostic: is there a more precise pseudo-box
filter than a higher threshold?).

Usage (a teacher's checkpoint, e.g. a protocol burn-in; its run folder's config registers the
data sets; --split-file: the labelled split the model was trained on):
    python scripts/feature_agreement.py --config-file RUN/config.yaml \
        --weights RUN/model_final.pth --labeled my_train --split-file RUN/labeled_split.json \
        --eval my_val [--eval my_pool_truth] [--min-score 0.9] [--json out.json]
        [--held-out negatives]   # + the hard negatives of labelled images outside the split

Prints one table per --eval data set; never give it the test split. Bad input exits with code 2
and a one-line error.
"""

import argparse
import os
import sys
import warnings

import torch

warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import DatasetCatalog, DatasetMapper  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from dualalign.data.splits import apply_split_file  # noqa: E402
from dualalign.engine.setup import build_cfg  # noqa: E402
from dualalign.evaluation.feature_agreement import (  # noqa: E402
    RULES,
    agreement_report,
    collect,
    format_agreement_report,
    label_bank,
)
from dualalign.utils.atomic import atomic_write_json  # noqa: E402

THRESHOLDS = (0.92, 0.94, 0.96, 0.97, 0.98, 0.99, 0.995)
HARD_NEGATIVE_SCORE = 0.5


def _records(name: str, what: str):
    if name not in DatasetCatalog.list():
        raise ValueError(f"{what} {name!r} is not a data set of the config (registered: "
                         f"{', '.join(sorted(DatasetCatalog.list()))})")  # fmt: skip
    return DatasetCatalog.get(name)


def run(args) -> dict:
    """The reports per --eval data set; raises ValueError on bad input."""
    for path, flag in ((args.config_file, "--config-file"), (args.weights, "--weights"),
                       (args.split_file, "--split-file")):  # fmt: skip
        if path and not os.path.isfile(path):
            raise ValueError(f"{flag} {path}: no such file")
    if not 0 <= args.min_score < 1:
        raise ValueError(f"--min-score {args.min_score}: a score in [0, 1)")
    cfg = build_cfg(args.config_file, ["MODEL.WEIGHTS", args.weights or ""], device=args.device)
    if args.held_out != "none" and not args.split_file:
        raise ValueError(f"--held-out {args.held_out}: needs --split-file (the held-out images "
                         "are the --labeled images outside the split)")  # fmt: skip
    labeled, held_out = _records(args.labeled, "--labeled"), []
    if args.split_file:
        labeled, held_out = apply_split_file(args.split_file, labeled)
    evals = {name: _records(name, "--eval") for name in args.eval}
    model = build_model(cfg).eval()
    if args.weights:
        DetectionCheckpointer(model).load(args.weights)
    mapper = DatasetMapper(cfg, is_train=False)
    min_labeled = min(args.min_score, HARD_NEGATIVE_SCORE)
    bank = label_bank(collect(model, mapper, labeled, min_labeled), HARD_NEGATIVE_SCORE)
    if args.held_out != "none":  # labelled evidence the model never trained on
        extra = label_bank(collect(model, mapper, held_out, min_labeled), HARD_NEGATIVE_SCORE,
                           negatives_only=args.held_out == "negatives")  # fmt: skip
        bank = tuple(torch.cat(pair) for pair in zip(bank, extra))
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    out = {
        "labeled_images": len(labeled),
        "held_out": args.held_out,
        "held_out_images": len(held_out) if args.held_out != "none" else 0,
        "bank_true_boxes": int((bank[1] >= 0).sum()),
        "bank_hard_negatives": int((bank[1] < 0).sum()),
        "reports": {},
    }
    thresholds = sorted({args.min_score, *(t for t in THRESHOLDS if t > args.min_score)})
    for name, records in evals.items():
        images = collect(model, mapper, records, args.min_score)
        out["reports"][name] = agreement_report(bank, images, num_classes, args.min_score,
                                                thresholds)  # fmt: skip
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True, help="the model's config (its run folder's)")
    p.add_argument("--weights", default="", help="checkpoint (default: random init, for tests)")
    p.add_argument("--labeled", required=True, help="registered data set of the labelled images")
    p.add_argument("--split-file", default="", help="labeled_split.json of the model's run")
    p.add_argument("--eval", action="append", required=True, help="a data set with truth")
    p.add_argument("--min-score", type=float, default=0.9, help="the pipeline's box threshold")
    p.add_argument(
        "--held-out",
        choices=("none", "negatives", "all"),
        default="none",
        help="a diagnostic with labels the model's run did not have: the --labeled images "
        "outside --split-file add their hard negatives (negatives) or those and their true "
        "boxes (all) to the bank",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default="", help="also write the record to this file")
    args = p.parse_args(argv)
    try:
        out = run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_held = out["held_out_images"]
    held = f" + {n_held} held out ({args.held_out})" if n_held else ""
    print(f"labelled bank: {out['labeled_images']} images{held}, {out['bank_true_boxes']} true "
          f"boxes, {out['bank_hard_negatives']} hard negatives (detections >= "
          f"{HARD_NEGATIVE_SCORE} with no true box at IoU >= 0.1); rules: " + ", ".join(RULES))
    for name, report in out["reports"].items():
        print()
        print(format_agreement_report(name, report))
    if args.json:
        atomic_write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
