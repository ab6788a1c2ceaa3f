"""Register the datasets that a config declares (``DUALALIGN.DATASETS.COCO`` / ``UNLABELED``).

Registration is lazy, as in detectron2: the json is parsed and validated (with the same code
as ``scripts/check_dataset.py``) when a dataset is first used.
"""

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .unlabeled_pool import load_unlabeled
from .validation import load_coco_detection

logger = logging.getLogger(__name__)


def _same_registration(name: str, **fields) -> bool:
    if name not in DatasetCatalog.list():
        return False
    meta = MetadataCatalog.get(name)
    return all(getattr(meta, k, None) == v for k, v in fields.items())


def register_coco(name: str, json_file: str, image_root: str, check_images: str = "header"):
    """Register a labelled COCO detection set under ``name`` (idempotent for the same files)."""
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
    if _same_registration(name, json_file=json_file, image_root=image_root):
        return
    if name in DatasetCatalog.list():
        raise ValueError(f"dataset name {name!r} is already registered with other files")

    def load():
        records, meta = load_coco_detection(json_file, image_root, check_images=check_images)
        MetadataCatalog.get(name).set(
            thing_classes=meta["thing_classes"],
            thing_dataset_id_to_contiguous_id=meta["thing_dataset_id_to_contiguous_id"],
        )
        return records

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="range_ap", labeled=True
    )


def register_unlabeled(name: str, source: str, image_root: str = "", check_images: str = "none"):
    """Register an unlabelled set: a folder of images, a COCO json, or a .txt list of paths.

    Image headers are not read at registration by default (``check_images="none"``): pools of
    hundreds of thousands of patches would take minutes; unreadable images are handled when
    they are loaded (``DUALALIGN.DATASETS.READ_ERRORS``).
    """
    source = os.path.abspath(source)
    root = os.path.abspath(image_root) if image_root else None
    if _same_registration(name, source=source, image_root=root):
        return
    if name in DatasetCatalog.list():
        raise ValueError(f"dataset name {name!r} is already registered with another source")
    DatasetCatalog.register(name, lambda: load_unlabeled(source, root, check_images=check_images))
    MetadataCatalog.get(name).set(source=source, image_root=root, labeled=False)


def register_from_config(cfg):
    """Register every dataset declared in ``cfg.DUALALIGN.DATASETS``."""
    for name, json_file, image_root in cfg.DUALALIGN.DATASETS.COCO:
        register_coco(name, json_file, image_root)
    for entry in cfg.DUALALIGN.DATASETS.UNLABELED:
        register_unlabeled(*entry)


def thing_classes_of(name: str):
    """Class names of a registered labelled set (loads it if needed)."""
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "thing_classes"):
        DatasetCatalog.get(name)
    return MetadataCatalog.get(name).thing_classes
