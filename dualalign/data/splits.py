"""Labelled-fraction subsets: deterministic by seed, grouped by patient/slide, written to disk."""

import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)


def select_fraction(
    records: Sequence[dict], fraction: float, seed: int, group_key: str = "patient_id"
) -> Tuple[List[dict], List[dict]]:
    """Split records into (selected, remainder) with ``fraction`` of the images selected.

    Images that share a value of ``group_key`` (a patient or slide) are kept together, so one
    patient never spans both parts. Records without the key are their own group. Groups are
    shuffled with ``numpy.random.default_rng(seed)`` and taken until the selected image count
    reaches ``round(fraction * N)`` (at least one group).

    Args:
        records: detectron2 dataset dicts with an "image_id".
        fraction: in (0, 1].
        seed: seed of the shuffle.
        group_key: image field that groups images.

    Returns:
        (selected, remainder), each in the input order.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"labelled fraction must be in (0, 1], got {fraction}")
    groups: Dict[str, List[int]] = OrderedDict()
    for i, r in enumerate(records):
        key = r.get(group_key)
        key = f"image:{r['image_id']}" if key is None else f"group:{key}"
        groups.setdefault(key, []).append(i)
    if fraction >= 1:
        return list(records), []
    names = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    target = max(1, int(round(fraction * len(records))))
    chosen, count = set(), 0
    for j in order:
        if count >= target:
            break
        chosen.update(groups[names[j]])
        count += len(groups[names[j]])
    selected = [r for i, r in enumerate(records) if i in chosen]
    remainder = [r for i, r in enumerate(records) if i not in chosen]
    return selected, remainder


def write_split_file(path: str, selected: Sequence[dict], fraction: float, seed: int, group_key):
    """Write the chosen image ids (and the draw's parameters) as JSON, atomically."""
    payload = {
        "labeled_fraction": fraction,
        "seed": seed,
        "group_key": group_key,
        "num_images": len(selected),
        "image_ids": [r["image_id"] for r in selected],
    }
    atomic_write_text(path, json.dumps(payload, indent=1))
    logger.info(f"Labelled split ({len(selected)} images, fraction {fraction}) written to {path}")


def apply_split_file(path: str, records: Sequence[dict]) -> Tuple[List[dict], List[dict]]:
    """Re-create a split from a split file: (selected, remainder)."""
    with open(path) as f:
        ids = json.load(f)["image_ids"]
    known = {r["image_id"] for r in records}
    missing = [i for i in ids if i not in known]
    if missing:
        raise ValueError(
            f"{path}: image ids {missing[:5]} are not in the training set; the split file belongs "
            "to another dataset (delete it or point DUALALIGN.DATASETS.SPLIT_FILE elsewhere)"
        )
    wanted = set(ids)
    return [r for r in records if r["image_id"] in wanted], [
        r for r in records if r["image_id"] not in wanted
    ]


def labeled_subset(cfg, records: Sequence[dict]) -> Tuple[List[dict], List[dict]]:
    """The labelled subset a run trains on, per ``DUALALIGN.DATASETS`` (see config.py).

    An existing ``SPLIT_FILE`` is reused as it is; otherwise the draw is made and written
    (to ``OUTPUT_DIR/labeled_split.json`` when ``SPLIT_FILE`` is empty).
    """
    d = cfg.DUALALIGN.DATASETS
    if d.SPLIT_FILE and os.path.isfile(d.SPLIT_FILE):
        logger.info(f"Using the labelled split of {d.SPLIT_FILE}")
        return apply_split_file(d.SPLIT_FILE, records)
    selected, remainder = select_fraction(records, d.LABELED_FRACTION, d.SPLIT_SEED, d.GROUP_KEY)
    path = d.SPLIT_FILE or os.path.join(cfg.OUTPUT_DIR, "labeled_split.json")
    write_split_file(path, selected, d.LABELED_FRACTION, d.SPLIT_SEED, d.GROUP_KEY)
    return selected, remainder
