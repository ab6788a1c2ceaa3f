"""Train/test loaders: a labelled loader, and the paired labelled + unlabelled loader."""

import itertools
import logging
import operator
import random
from typing import List, Tuple

import torch
import torch.utils.data as torchdata
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.data.build import trivial_batch_collator, worker_init_reset_seed
from detectron2.data.common import (
    AspectRatioGroupedDataset,
    DatasetFromList,
    ToIterableDataset,
)
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from ..engine.rng_state import private_rng, stream_seed
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

    The sampler is read lazily (at the first ``next``), so ``set_start_iter`` may be called
    after the trainer is built and before training starts, once the resumed iteration is known.
    """

    def __init__(self, loader, sampler: ResumableTrainingSampler, batch_per_worker: int, mapper):
        self.loader = loader
        self.sampler = sampler
        self.batch_per_worker = batch_per_worker
        self.mapper = mapper

    def set_start_iter(self, start_iter: int):
        self.sampler._start = start_iter * self.batch_per_worker

    def __iter__(self):
        return iter(self.loader)


class PairedDataLoader:
    """Yields ``(labeled_batch, unlabeled_batch)`` pairs from two infinite loaders.

    With ``seed`` (``SEED >= 0``), each unlabelled batch is drawn under :func:`private_rng`
    seeded from (``seed``, rank, step). With ``DATALOADER.NUM_WORKERS 0`` its augmentation then
    draws from its own stream, and the labelled batches (flips, colour jitter) are drawn from
    the global generators exactly as supervised training's labelled-only loader draws them:
    every method given the same SEED sees the same augmented labelled images, and a step's
    unlabelled batch is the same after a resume. Without ``seed`` both halves draw from the
    global generators in turn (restored by a resume with the rest).
    """

    def __init__(
        self, labeled: InfiniteLoader, unlabeled: InfiniteLoader, seed=None, start_iter: int = 0
    ):
        self.labeled = labeled
        self.unlabeled = unlabeled
        self.seed = seed
        self._start = start_iter  # the step of the first pair (both loaders already start there)

    def set_start_iter(self, start_iter: int):
        self.labeled.set_start_iter(start_iter)
        self.unlabeled.set_start_iter(start_iter)
        self._start = start_iter

    def __iter__(self):
        if self.seed is None:
            return zip(iter(self.labeled), iter(self.unlabeled))
        return self._private_unlabeled_stream()

    def _private_unlabeled_stream(self):
        labeled, unlabeled = iter(self.labeled), iter(self.unlabeled)
        rank = comm.get_rank()
        for step in itertools.count(self._start):
            try:
                batch_l = next(labeled)
                with private_rng(stream_seed(self.seed, rank, step)):
                    batch_u = next(unlabeled)
            except StopIteration:
                return
            yield batch_l, batch_u


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
    dataset = SkippingMapDataset(DatasetFromList(records, copy=False), mapper)
    loader = batch_loader(
        dataset,
        sampler,
        batch,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        seed=sampler._seed,
    )
    return InfiniteLoader(loader, sampler, batch, mapper)


class SkippingMapDataset(torchdata.Dataset):
    """Apply ``map_func``; when it returns None (a skipped image), map another random index.

    Replaces detectron2 v0.6's ``MapDataset``, whose fallback calls ``random.sample`` on a set
    (a TypeError since Python 3.11). Indices that failed once are not drawn again.
    """

    def __init__(self, dataset, map_func, seed: int = 42):
        self.dataset = dataset
        self.map_func = map_func
        self._rng = random.Random(seed)
        self._bad = set()

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, idx):
        for _ in range(len(self.dataset)):
            data = self.map_func(self.dataset[idx])
            if data is not None:
                return data
            self._bad.add(idx)
            if len(self._bad) >= len(self.dataset):
                break
            while idx in self._bad:
                idx = self._rng.randrange(len(self.dataset))
        raise RuntimeError(f"every one of the {len(self.dataset)} images failed to load")


def batch_loader(dataset, sampler, batch_per_worker, *, aspect_ratio_grouping, num_workers, seed):
    """detectron2's ``build_batch_data_loader`` with a DataLoader seeded by its own generator.

    detectron2 v0.6 lets the DataLoader draw its base seed from torch's *global* RNG when its
    iterator is created (lazily, at the first batch). A resumed run creates it at another point
    of the RNG stream than an uninterrupted one; a private generator makes worker seeds
    reproducible and keeps the global stream (proposal sampling) identical across a resume.
    """
    dataset = ToIterableDataset(dataset, sampler)
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    if aspect_ratio_grouping:
        loader = torchdata.DataLoader(
            dataset,
            num_workers=num_workers,
            collate_fn=operator.itemgetter(0),  # single dicts; grouped into batches below
            worker_init_fn=worker_init_reset_seed,
            generator=generator,
        )
        return AspectRatioGroupedDataset(loader, batch_per_worker)
    return torchdata.DataLoader(
        dataset,
        batch_size=batch_per_worker,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator,
        worker_init_fn=worker_init_reset_seed,
        generator=generator,
    )


def build_labeled_loader(cfg, records, start_iter: int = 0):
    """Infinite loader of augmented labelled batches (``SOLVER.IMS_PER_BATCH`` in total)."""
    mapper = CytologyDatasetMapper(build_train_augmentations(cfg), cfg.INPUT.FORMAT, True, True)
    return _loader(
        cfg, records, mapper, cfg.SOLVER.IMS_PER_BATCH, "SOLVER.IMS_PER_BATCH", start_iter
    )


def build_paired_loader(cfg, labeled_records, unlabeled_records, start_iter: int = 0):
    """The semi-supervised trainer's loader: labelled and unlabelled batches, drawn in pairs."""
    if not unlabeled_records:
        raise ValueError(
            "no unlabelled images: set DUALALIGN.DATASETS.TRAIN_UNLABELED (or "
            "REMAINDER_AS_UNLABELED=True), or train with DUALALIGN.METHOD supervised"
        )
    if cfg.DUALALIGN.DIAGNOSTICS.ORACLE_PSEUDO_BOXES:
        bare = next((r for r in unlabeled_records if "annotations" not in r), None)
        if bare is not None:
            raise ValueError(
                "DUALALIGN.DIAGNOSTICS.ORACLE_PSEUDO_BOXES reads the unlabelled images' truth, "
                f"but the unlabelled record {bare.get('file_name')} (image_id "
                f"{bare.get('image_id')}) has no annotations; put a set with the pool's truth in "
                "DUALALIGN.DATASETS.TRAIN_UNLABELED (and REMAINDER_AS_UNLABELED False), or set "
                "the key False"
            )
    mapper_u = CytologyDatasetMapper(
        build_train_augmentations(cfg),
        cfg.INPUT.FORMAT,
        is_train=True,
        # the oracle diagnostic reads the unlabelled images' truth (never a method)
        labeled=cfg.DUALALIGN.DIAGNOSTICS.ORACLE_PSEUDO_BOXES,
        read_errors=cfg.DUALALIGN.DATASETS.READ_ERRORS,
    )
    key_u = "DUALALIGN.UNLABELED_IMS_PER_BATCH"
    unlabeled = _loader(
        cfg, unlabeled_records, mapper_u, unlabeled_batch_size(cfg), key_u, start_iter
    )
    labeled = build_labeled_loader(cfg, labeled_records, start_iter)
    # SEED < 0 (a random run): one stream for both halves, restored by a resume with the rest
    return PairedDataLoader(
        labeled, unlabeled, seed=cfg.SEED if cfg.SEED >= 0 else None, start_iter=start_iter
    )


def build_test_loader(cfg, dataset_name: str):
    """Inference loader over a registered set, with the same image reader as training."""
    mapper = CytologyDatasetMapper(build_test_augmentations(cfg), cfg.INPUT.FORMAT, is_train=False)
    return build_detection_test_loader(cfg, dataset_name, mapper=mapper)
