#!/usr/bin/env python
"""Check a labelled COCO set and/or an unlabelled pool with the loaders training uses.

Examples::

    python scripts/check_dataset.py --json data/annotations_train.json --images data/images
    python scripts/check_dataset.py --unlabeled data/unlabelled_patches/
    python scripts/check_dataset.py --unlabeled pool.txt --check-images header

Exit status: 0 when every given set is valid (a summary is printed on stdout), 1 on the
first problem (``error: <file>: <record>: <problem>; <fix>`` on stderr), 2 on bad arguments.
Warnings, such as boxes clipped to their image, go to stderr.
"""

import argparse
import logging
import os
import sys
import warnings

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
# Importing detectron2 triggers torch's deprecation notice for torch.jit.script: noise here.
warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")

from dualalign.data.dataset_summary import dataset_summary, format_summary  # noqa: E402
from dualalign.data.image_io import ImageReadError  # noqa: E402
from dualalign.data.unlabeled_pool import load_unlabeled  # noqa: E402
from dualalign.data.validation import CHECK_IMAGES, DatasetError, load_coco_detection  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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


def main(argv=None):
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


if __name__ == "__main__":
    sys.exit(main())
