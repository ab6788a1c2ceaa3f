"""Train/test loaders: a labelled loader, and the paired labelled + unlabelled loader."""
import itertools
import logging
from typing import List, Tuple

from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.data.build import build_batch_data_loader
from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from .augmentations import build_test_augmentations, build_train_augmentations
from .mapper import CytologyDatasetMapper
from .splits import labeled_subset

logger = logging.getLogger(__name__)


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's infinite, seeded, rank-sharded sampler that can start mid-stream.

    Every rank draws from the same seeded permutation stream and takes every
    ``world_size``-th index from its rank on, so shards are disjoint and deterministic.
    ``start`` skips the indices this rank consumed before a resume.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, start: int = 0):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self._start = start

    def __iter__(self):
        first = self._rank + self._start * self._world_size
        yield from itertools.islice(self._infinite_indices(), first, None, self._world_size)


class InfiniteLoader:
    """An infinite batched loader whose sampler can be moved to a resume point.

    Iteration starts lazily (at the first ``next``), so ``set_start_iter`` may be called after
    the trainer is built and before training starts, once the resumed iteration is known.
    """

    def __init__(self, loader, sampler: ResumableTrainingSampler, batch_per_worker: int):
        self.loader = loader
        self.sampler = sampler
        self.batch_per_worker = batch_per_worker

    def set_start_iter(self, start_iter: int):
        self.sampler._start = start_iter * self.batch_per_worker

    def __iter__(self):
        yield from self.loader


class PairedDataLoader:
    """Yields ``(labeled_batch, unlabeled_batch)`` pairs from two infinite loaders."""

    def __init__(self, labeled: InfiniteLoader, unlabeled: InfiniteLoader):
        self.labeled = labeled
        self.unlabeled = unlabeled

    def set_start_iter(self, start_iter: int):
        self.labeled.set_start_iter(start_iter)
        self.unlabeled.set_start_iter(start_iter)

    def __iter__(self):
        yield from zip(self.labeled, self.unlabeled)


def per_worker_batch(total: int, key: str) -> int:
    """``total`` images split evenly over the workers; refuse what cannot be divided."""
    world = comm.get_world_size()
    if total <= 0 or total % world != 0:
        raise ValueError(
            f"config error: {key} = {total} cannot be divided over {world} workers; "
            f"allowed: a positive multiple of {world}"
        )
    return total // world


def unlabeled_batch_size(cfg) -> int:
    """Unlabelled images per step over all workers (equal to the labelled batch by default)."""
    n = cfg.DUALALIGN.UNLABELED_IMS_PER_BATCH
    return cfg.SOLVER.IMS_PER_BATCH if n < 0 else n


def _concat(names) -> List[dict]:
    return list(itertools.chain.from_iterable(DatasetCatalog.get(n) for n in names))


def training_records(cfg) -> Tuple[List[dict], List[dict]]:
    """(labelled, unlabelled) dataset dicts of a run, after the labelled-fraction draw."""
    labeled, remainder = labeled_subset(cfg, _concat(cfg.DATASETS.TRAIN))
    unlabeled = _concat(cfg.DUALALIGN.DATASETS.TRAIN_UNLABELED)
    if cfg.DUALALIGN.DATASETS.REMAINDER_AS_UNLABELED:
        unlabeled += [{k: v for k, v in r.items() if k != "annotations"} for r in remainder]
    if not labeled:
        raise ValueError(f"no labelled training images in DATASETS.TRAIN = {cfg.DATASETS.TRAIN}")
    return labeled, unlabeled


def _loader(cfg, records, mapper, total_batch, key, start_iter) -> InfiniteLoader:
    batch = per_worker_batch(total_batch, key)
    sampler = ResumableTrainingSampler(
        len(records), shuffle=True, seed=cfg.SEED if cfg.SEED >= 0 else 0, start=start_iter * batch
    )
    dataset = MapDataset(DatasetFromList(records, copy=False), mapper)
    loader = build_batch_data_loader(
        dataset,
        sampler,
        total_batch,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    return InfiniteLoader(loader, sampler, batch)


def build_labeled_loader(cfg, records, start_iter: int = 0):
    """Infinite loader of augmented labelled batches (``SOLVER.IMS_PER_BATCH`` in total)."""
    mapper = CytologyDatasetMapper(build_train_augmentations(cfg), cfg.INPUT.FORMAT, True, True)
    return _loader(cfg, records, mapper, cfg.SOLVER.IMS_PER_BATCH, "SOLVER.IMS_PER_BATCH", start_iter)


def build_paired_loader(cfg, labeled_records, unlabeled_records, start_iter: int = 0):
    """The semi-supervised trainer's loader: labelled and unlabelled batches, drawn in pairs."""
    if not unlabeled_records:
        raise ValueError(
            "no unlabelled images: set DUALALIGN.DATASETS.TRAIN_UNLABELED (or "
            "REMAINDER_AS_UNLABELED=True), or train with DUALALIGN.METHOD supervised"
        )
    mapper_u = CytologyDatasetMapper(
        build_train_augmentations(cfg),
        cfg.INPUT.FORMAT,
        is_train=True,
        labeled=False,
        read_errors=cfg.DUALALIGN.DATASETS.READ_ERRORS,
    )
    key_u = "DUALALIGN.UNLABELED_IMS_PER_BATCH"
    unlabeled = _loader(cfg, unlabeled_records, mapper_u, unlabeled_batch_size(cfg), key_u, start_iter)
    return PairedDataLoader(build_labeled_loader(cfg, labeled_records, start_iter), unlabeled)


def build_test_loader(cfg, dataset_name: str):
    """Inference loader over a registered set, with the same image reader as training."""
    mapper = CytologyDatasetMapper(build_test_augmentations(cfg), cfg.INPUT.FORMAT, is_train=False)
    return build_detection_test_loader(cfg, dataset_name, mapper=mapper)
