"""The paired labelled + unlabelled loader and the resumable sampler under it.

Modelled on DensePose's ``test_combine_data_loader.py``: build the loader on a tiny data set,
draw a few steps, and check what each step holds.
"""

import uuid

import pytest
from detectron2.utils import comm
from dualalign_testing import INSTANT_TEST, quick_cfg

from dualalign.data.build import (
    PairedDataLoader,
    ResumableTrainingSampler,
    build_paired_loader,
    per_worker_batch,
    training_records,
    unlabeled_batch_size,
)


def _take(iterable, n):
    it = iter(iterable)
    return [next(it) for _ in range(n)]


def _cfg(paths, tmp_path, **overrides):
    return quick_cfg(INSTANT_TEST, paths, tmp_path, uuid.uuid4().hex[:8], **overrides)


def _names(batch):
    return [d["file_name"] for d in batch]


def test_each_step_pairs_a_labelled_and_an_unlabelled_batch(tiny_synthetic, tmp_path):
    overrides = dict(SOLVER__IMS_PER_BATCH=2, DUALALIGN__UNLABELED_IMS_PER_BATCH=3)
    cfg = _cfg(tiny_synthetic, tmp_path, **overrides)
    labeled, unlabeled = training_records(cfg)
    steps = _take(build_paired_loader(cfg, labeled, unlabeled), 4)
    for lab, unl in steps:
        assert len(lab) == 2 and len(unl) == 3
        assert all(d["instances"].gt_boxes.tensor.shape[1] == 4 for d in lab)
        assert not any("instances" in d or "annotations" in d for d in unl)
        assert all("/labeled/" in name for name in _names(lab))
        assert all("/unlabeled/" in name for name in _names(unl))
        assert all(d["image"].shape[1:] == (128, 128) for d in lab + unl)
    # Over 4 steps the 8 unlabelled images are drawn as an epoch: 12 draws cover them all.
    assert len({n for _, unl in steps for n in _names(unl)}) == len(unlabeled)


def test_unlabelled_batch_defaults_to_the_labelled_one(tiny_synthetic, tmp_path):
    cfg = _cfg(tiny_synthetic, tmp_path, SOLVER__IMS_PER_BATCH=2)
    assert cfg.DUALALIGN.UNLABELED_IMS_PER_BATCH == -1 and unlabeled_batch_size(cfg) == 2
    labeled, unlabeled = training_records(cfg)
    lab, unl = _take(build_paired_loader(cfg, labeled, unlabeled), 1)[0]
    assert len(lab) == len(unl) == 2


def test_resumed_loader_continues_both_streams(tiny_synthetic, tmp_path):
    cfg = _cfg(tiny_synthetic, tmp_path, SOLVER__IMS_PER_BATCH=2)
    labeled, unlabeled = training_records(cfg)
    straight = _take(build_paired_loader(cfg, labeled, unlabeled), 5)
    resumed = build_paired_loader(cfg, labeled, unlabeled, start_iter=3)
    moved = build_paired_loader(cfg, labeled, unlabeled)
    moved.set_start_iter(3)  # as the trainer does once it knows the resumed iteration
    for loader in (resumed, moved):
        again = _take(loader, 2)
        for (lab, unl), (lab0, unl0) in zip(again, straight[3:]):
            assert _names(lab) == _names(lab0) and _names(unl) == _names(unl0)


def test_pairs_stop_with_the_shorter_stream():
    class Stream(list):
        def set_start_iter(self, start_iter):
            self.start = start_iter

    labeled, unlabeled = Stream(["l0", "l1", "l2"]), Stream(["u0", "u1"])
    paired = PairedDataLoader(labeled, unlabeled)
    paired.set_start_iter(7)
    assert labeled.start == unlabeled.start == 7
    assert list(paired) == [("l0", "u0"), ("l1", "u1")]


def test_no_unlabelled_images_is_refused_with_the_fix(tiny_synthetic, tmp_path):
    cfg = _cfg(tiny_synthetic, tmp_path)
    labeled, _ = training_records(cfg)
    with pytest.raises(ValueError, match="TRAIN_UNLABELED"):
        build_paired_loader(cfg, labeled, [])


def test_batch_must_divide_over_the_workers(monkeypatch):
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    assert per_worker_batch(4, "SOLVER.IMS_PER_BATCH") == 2
    for total in (3, 0):
        with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH = .* cannot be divided over 2"):
            per_worker_batch(total, "SOLVER.IMS_PER_BATCH")


def _sampler(monkeypatch, rank, world, **kwargs):
    monkeypatch.setattr(comm, "get_rank", lambda: rank)
    monkeypatch.setattr(comm, "get_world_size", lambda: world)
    return ResumableTrainingSampler(20, shuffle=True, seed=3, **kwargs)


def test_sampler_shards_are_disjoint_and_resumable(monkeypatch):
    k = 10  # 2K = one full permutation of the 20 indices
    single = _take(_sampler(monkeypatch, 0, 1), 4 * k)
    shards = [_take(_sampler(monkeypatch, r, 2), 2 * k) for r in (0, 1)]
    assert set(shards[0][:k]).isdisjoint(shards[1][:k])
    assert sorted(shards[0][:k] + shards[1][:k]) == sorted(single[: 2 * k]) == list(range(20))
    # Rank r takes every second index of the single-process stream from r on, epoch after epoch.
    assert shards[0] == single[0::2] and shards[1] == single[1::2]
    for start in (1, 7, 13):
        for r in (0, 1):
            resumed = _take(_sampler(monkeypatch, r, 2, start=start), 5)
            assert resumed == shards[r][start : start + 5]
