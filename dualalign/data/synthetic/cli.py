"""``scripts/make_synthetic.py``: write the synthetic data set, or preview patches with boxes."""

import argparse
import json
import os
from collections import Counter

import cv2
import numpy as np

from .dataset import generate_dataset, image_rng
from .draw import render_patch
from .plan import CLASS_NAMES, SPLITS

__all__ = ["draw_boxes", "main", "preview", "summary"]

# RGB colour of each class's boxes in previews.
CLASS_COLOURS = ((255, 140, 0), (0, 150, 0), (220, 0, 0), (140, 0, 200))


def draw_boxes(image: np.ndarray, annotations) -> np.ndarray:
    """Copy of an RGB image with each annotation's box and class name drawn on it."""
    out = image.copy()
    scale = max(0.3, image.shape[0] / 800)
    for ann in annotations:
        x, y, w, h = (int(round(v)) for v in ann["bbox"])
        colour = CLASS_COLOURS[ann["category_id"] - 1]
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), colour, 1)
        cv2.putText(
            out,
            CLASS_NAMES[ann["category_id"] - 1],
            (x + 1, max(y - 2, 8)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            colour,
            1,
            cv2.LINE_AA,
        )
    return out


def preview(
    path: str,
    seed: int,
    image_size: int,
    grid: int,
    variation: bool,
    boxes: bool,
    palette: bool = False,
):
    """Save a grid x grid mosaic of the first labelled patches, with their boxes.

    With ``palette``, the PNG is quantised to 256 colours (about half the size, for docs).
    """
    tiles = []
    for i in range(grid * grid):
        image, anns = render_patch(image_rng(seed, "labeled", i), image_size, variation)
        tiles.append(draw_boxes(image, anns) if boxes else image)
    rows = [np.concatenate(tiles[r * grid : (r + 1) * grid], axis=1) for r in range(grid)]
    mosaic = np.concatenate(rows, axis=0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if palette:
        from PIL import Image

        Image.fromarray(mosaic).quantize(256, method=Image.Quantize.MEDIANCUT).save(
            path, optimize=True
        )
    else:
        cv2.imwrite(path, cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR))
    print(f"preview: {path}")


def summary(paths) -> None:
    """Print the written paths and per-split image / box counts."""
    root = os.path.dirname(paths["labeled"])
    print(f"image_root: {paths['image_root']}")
    for split in SPLITS:
        gt = os.path.join(root, "unlabeled_with_gt.json") if split == "unlabeled" else paths[split]
        with open(gt) as f:
            coco = json.load(f)
        per_class = Counter(a["category_id"] for a in coco["annotations"])
        with_box = {a["image_id"] for a in coco["annotations"]}
        classes = ", ".join(f"{n} {per_class.get(i + 1, 0)}" for i, n in enumerate(CLASS_NAMES))
        hidden = " (hidden: unlabeled_with_gt.json)" if split == "unlabeled" else ""
        print(
            f"{split}: {paths[split]}: {len(coco['images'])} images "
            f"({len(coco['images']) - len(with_box)} without boxes), "
            f"{len(coco['annotations'])} boxes{hidden} [{classes}]"
        )


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Write the built-in synthetic Pap-smear data set, or preview patches"
    )
    p.add_argument("--out", default="datasets/synthetic", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=256, help="patch side in pixels")
    p.add_argument("--num-labeled", type=int, default=60)
    p.add_argument("--num-unlabeled", type=int, default=120)
    p.add_argument("--num-val", type=int, default=20)
    p.add_argument("--num-test", type=int, default=40)
    p.add_argument(
        "--num-patients", type=int, default=None, help="patients per split (default: images // 4)"
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="processes rendering the images (same files for any)"
    )
    p.add_argument("--no-variation", action="store_true", help="fixed stain palette and cell scale")
    p.add_argument(
        "--preview",
        metavar="PNG",
        default=None,
        help="only save a mosaic of labelled patches with their boxes to PNG",
    )
    p.add_argument("--grid", type=int, default=2, help="preview mosaic is grid x grid")
    p.add_argument("--no-boxes", action="store_true", help="preview without boxes")
    p.add_argument(
        "--palette",
        action="store_true",
        help="save the preview as a 256-colour PNG (smaller, for docs)",
    )
    args = p.parse_args(argv)
    if args.preview:
        preview(
            args.preview,
            args.seed,
            args.image_size,
            args.grid,
            not args.no_variation,
            not args.no_boxes,
            args.palette,
        )
        return
    paths = generate_dataset(
        args.out,
        seed=args.seed,
        image_size=args.image_size,
        num_labeled=args.num_labeled,
        num_unlabeled=args.num_unlabeled,
        num_val=args.num_val,
        num_test=args.num_test,
        variation=not args.no_variation,
        num_patients=args.num_patients,
        jobs=args.jobs,
    )
    summary(paths)

