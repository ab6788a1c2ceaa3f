"""``scripts/check_dataset.py``: check a labelled COCO set and/or an unlabelled pool.

The checks are the loaders training uses (:func:`load_coco_detection`, :func:`load_unlabeled`);
this module only turns their errors into one line on stderr and an exit status: 0 when every
given set is valid (a summary is printed on stdout), 1 on the first problem, 2 on bad arguments.
Warnings, such as boxes clipped to their image, go to stderr.
"""

import argparse
import logging
import sys

from .dataset_summary import dataset_summary, format_summary
from .image_io import ImageReadError
from .unlabeled_pool import load_unlabeled
from .validation import CHECK_IMAGES, DatasetError, load_coco_detection

__all__ = ["main", "parse_args"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Check a labelled COCO set and/or an unlabelled pool with the training loaders"
    )
    parser.add_argument("--json", help="labelled COCO detection json")
    parser.add_argument("--images", help="folder the json's file_name entries are relative to")
    parser.add_argument(
        "--unlabeled",
        help="unlabelled pool: a folder of images, a COCO json or a .txt list of image paths",
    )
    parser.add_argument(
        "--unlabeled-root",
        help="folder relative paths of an --unlabeled json / list refer to (default: its folder)",
    )
    parser.add_argument(
        "--check-images",
        choices=CHECK_IMAGES,
        default="full",
        help="none: skip image files; header: open headers (fast); full: decode every image "
        "(catches truncated files; default)",
    )
    args = parser.parse_args(argv)
    if args.json is None and args.unlabeled is None:
        parser.error("give --json and --images, and/or --unlabeled")
    if (args.json is None) != (args.images is None):
        parser.error("--json and --images go together")
    if args.unlabeled_root is not None and args.unlabeled is None:
        parser.error("--unlabeled-root needs --unlabeled")
    return args


def main(argv=None) -> int:
    """Check the sets of ``argv``; return the exit status (0: valid, 1: a problem; 2: argparse)."""
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log = logging.getLogger("dualalign.data")
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False
    try:
        if args.json is not None:
            records, meta = load_coco_detection(
                args.json, args.images, check_images=args.check_images
            )
            print(f"labelled set {args.json} (images in {args.images}): OK")
            print(format_summary(dataset_summary(records, meta["thing_classes"])))
            print(f"classes (category id -> name): {_class_table(meta)}")
        if args.unlabeled is not None:
            records = load_unlabeled(
                args.unlabeled, args.unlabeled_root, check_images=args.check_images
            )
            print(f"unlabelled set {args.unlabeled}: OK")
            print(format_summary(dataset_summary(records)))
    except (DatasetError, ImageReadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
    return 0


def _class_table(meta):
    id_map, names = meta["thing_dataset_id_to_contiguous_id"], meta["thing_classes"]
    return ", ".join(f"{cid} -> {names[idx]}" for cid, idx in id_map.items())

