"""The synthetic data set on disk: PNGs and COCO jsons per split, written once per seed."""

import json
import os
import re
from multiprocessing import get_context
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from ...utils.atomic import atomic_write_json
from .draw import render_patch
from .plan import CLASS_NAMES, GENERATOR_VERSION, SPLITS, UNLABELED_NEGATIVE_FRACTION

def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of image ``index`` of ``split``: independent of the other images."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def _write_image(task: Tuple[str, int, int, str, int, bool]) -> List[dict]:
    """Render and write image ``index`` of ``split``; its annotations (one pool task)."""
    image_root, seed, index, split, image_size, variation = task
    rng = image_rng(seed, split, index)
    num_abnormal = None
    if split == "unlabeled" and rng.random() < UNLABELED_NEGATIVE_FRACTION:
        num_abnormal = 0
    image, anns = render_patch(rng, image_size, variation, num_abnormal)
    path = os.path.join(image_root, f"{split}/{index:06d}.png")
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return anns


def _write_images(image_root, seed, counts, image_size, variation, jobs) -> Dict[str, list]:
    """Every split's images written, ``jobs`` processes at once; per split, each image's
    annotations in index order."""
    tasks = {
        split: [(image_root, seed, i, split, image_size, variation) for i in range(n)]
        for split, n in counts.items()
    }
    if jobs == 1:
        return {split: [_write_image(t) for t in ts] for split, ts in tasks.items()}
    # spawn, not fork: the caller may hold threads (torch, OpenCV) that a fork would copy
    with get_context("spawn").Pool(jobs) as pool:
        return {split: pool.map(_write_image, ts) for split, ts in tasks.items()}


def _coco(split: str, images: List[dict], annotations: List[dict], seed: int) -> dict:
    return {
        "info": {
            "description": f"dualalign synthetic Pap-smear patches, split {split}",
            "version": str(GENERATOR_VERSION),
            "seed": seed,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": n, "supercategory": "abnormal"} for i, n in enumerate(CLASS_NAMES)
        ],
    }


def _patient_counts(counts: Dict[str, int], num_patients: Optional[int]) -> Dict[str, int]:
    out = {}
    for split, n in counts.items():
        k = max(1, n // 4) if num_patients is None else max(1, int(num_patients))
        out[split] = min(k, n)
    return out


def _is_complete(out_dir: str, params: dict, paths: Dict[str, str]) -> bool:
    """True when the manifest matches ``params`` and every json and image is on disk."""
    manifest = os.path.join(out_dir, "manifest.json")
    try:
        with open(manifest) as f:
            if json.load(f).get("params") != params:
                return False
        for split in SPLITS + ("unlabeled_with_gt",):
            path = os.path.join(out_dir, f"{split}.json")
            with open(path) as f:
                images = json.load(f)["images"]
            if not all(
                os.path.isfile(os.path.join(paths["image_root"], im["file_name"])) for im in images
            ):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def generate_dataset(
    out_dir: str,
    *,
    seed: int = 0,
    image_size: int = 256,
    num_labeled: int = 60,
    num_unlabeled: int = 120,
    num_val: int = 20,
    num_test: int = 40,
    variation: bool = True,
    num_patients: Optional[int] = None,
    jobs: int = 1,
) -> Dict[str, str]:
    """Write the synthetic data set (PNGs and COCO jsons) under ``out_dir``.

    Layout: ``images/<split>/NNNNNN.png``, ``labeled.json``, ``unlabeled.json`` (images only),
    ``unlabeled_with_gt.json`` (the hidden boxes of the unlabelled pool, for diagnostics),
    ``val.json``, ``test.json`` and ``manifest.json``. Every image has a ``patient_id``
    ("P0007"); patients are disjoint across splits. About 20% of the unlabelled pool has no
    abnormal cell; every other image has 1-5.

    Args:
        out_dir: output folder (created).
        seed: seed of the whole set; image i of a split depends only on (seed, split, i).
        image_size: side of the square patches in pixels.
        num_labeled, num_unlabeled, num_val, num_test: images per split.
        variation: per-image stain / scale variation (see ``render_patch``).
        num_patients: patients per split; default max(1, images // 4) per split.
        jobs: processes rendering the images (the same files for any value).

    Returns:
        {"labeled", "unlabeled", "val", "test": json paths, "image_root": out_dir/images}.
        If ``manifest.json`` records the same parameters and all files exist, nothing is
        rewritten.
    """
    counts = {"labeled": num_labeled, "unlabeled": num_unlabeled, "val": num_val, "test": num_test}
    if min(counts.values()) < 0 or image_size < 32 or jobs < 1:
        raise ValueError(
            f"image counts must be >= 0, image_size >= 32 and jobs >= 1, got {counts}, "
            f"image_size={image_size}, jobs={jobs}"
        )
    params = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "image_size": int(image_size),
        **{k: int(v) for k, v in counts.items()},
        "variation": bool(variation),
        "num_patients": None if num_patients is None else int(num_patients),
    }
    image_root = os.path.join(out_dir, "images")
    paths = {split: os.path.join(out_dir, f"{split}.json") for split in SPLITS}
    paths["image_root"] = image_root
    if _is_complete(out_dir, params, paths):
        return paths

    manifest = os.path.join(out_dir, "manifest.json")
    if os.path.exists(manifest):
        os.remove(manifest)  # the set is incomplete until the manifest is written again
    patients = _patient_counts(counts, num_patients)
    for split in SPLITS:
        split_dir = os.path.join(image_root, split)
        os.makedirs(split_dir, exist_ok=True)
        for name in os.listdir(split_dir):  # stale images of an earlier, larger set
            if re.fullmatch(r"\d{6}\.png", name):
                os.remove(os.path.join(split_dir, name))
    rendered = _write_images(image_root, seed, counts, image_size, variation, jobs)
    first_patient = 0
    for split in SPLITS:
        images, annotations = [], []
        n, k = counts[split], patients[split]
        for i, anns in enumerate(rendered[split]):
            file_name = f"{split}/{i:06d}.png"
            images.append(
                {
                    "id": i + 1,
                    "file_name": file_name,
                    "width": image_size,
                    "height": image_size,
                    "patient_id": f"P{first_patient + i * k // n:04d}",
                }
            )
            for ann in anns:
                x, y, w, h = ann["bbox"]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": ann["category_id"],
                        "bbox": ann["bbox"],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        first_patient += k
        if split == "unlabeled":
            atomic_write_json(
                os.path.join(out_dir, "unlabeled_with_gt.json"),
                _coco(split, images, annotations, seed),
            )
            annotations = []
        atomic_write_json(paths[split], _coco(split, images, annotations, seed))
    atomic_write_json(
        manifest,
        {"params": params, "files": {k: os.path.relpath(v, out_dir) for k, v in paths.items()}},
    )
    return paths
