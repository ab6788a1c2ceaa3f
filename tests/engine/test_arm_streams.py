"""Two methods given the same SEED draw the same random numbers for their labelled images.

The protocol's null control (the unlabelled half forwarded, every unsupervised term off) must
then train what supervised training trains: under frozen BN, the only differences left are
the rounding of a larger backbone batch.
"""

import pytest
import torch
from dualalign_testing import dataset_opts, quick_schedule

from dualalign.benchmark.protocol import TERMS_OFF
from dualalign.engine.rng_state import seed_all
from dualalign.engine.setup import build_cfg
from dualalign.engine.trainer import Trainer

pytestmark = pytest.mark.slow


def _train(config, opts):
    trainer = Trainer(build_cfg(quick_schedule(config), opts))
    trainer.resume_or_load(resume=False)
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _opts(paths, out, tag, weights, seed, extra=()):
    return dataset_opts(
        paths, out, tag, MODEL__RESNETS__NORM="FrozenBN", MODEL__WEIGHTS=weights, SEED=seed,
        SOLVER__MAX_ITER=4, SOLVER__WARMUP_ITERS=0, SOLVER__BASE_LR=0.02, DATALOADER__NUM_WORKERS=0,
    ) + list(extra)  # fmt: skip


def _largest_difference(a, b):
    shared = [k for k in a if k in b and a[k].is_floating_point()]
    assert len(shared) > 50  # backbone, RPN and box head
    return max((a[k] - b[k]).abs().max().item() for k in shared)


def test_the_null_control_trains_what_supervised_training_trains(tiny_synthetic, tmp_path):
    start = Trainer(build_cfg(quick_schedule("supervised_R18_instant_test"), dataset_opts(
        tiny_synthetic, tmp_path / "init", "strinit")))  # fmt: skip
    weights = str(tmp_path / "init.pth")
    torch.save({"model": start.model.state_dict()}, weights)

    def arm(name, config, seed, extra=()):
        return _train(config, _opts(tiny_synthetic, tmp_path / name, "str" + name, weights,
                                    seed, extra))  # fmt: skip

    sup = arm("sup", "supervised_R18_instant_test", 3)
    null = arm("null", "dualalign_R18_instant_test", 3, TERMS_OFF)
    moved = _largest_difference(sup, start.model.state_dict())
    other_order = _largest_difference(sup, arm("sup4", "supervised_R18_instant_test", 4))
    same = _largest_difference(sup, null)
    assert moved > 1e-3 and other_order > 1e-4  # not vacuous: training moves the weights
    assert same < other_order / 100, (same, other_order)


def test_without_a_private_stream_the_unlabelled_draws_change_the_labelled_ones(
    tiny_synthetic, tmp_path, monkeypatch
):
    """What the private stream fixes: the unlabelled loader's augmentation draws from numpy's
    global generator, so the labelled images of a paired loader were augmented differently."""
    from dualalign.data.build import build_labeled_loader, build_paired_loader, training_records

    cfg = build_cfg(quick_schedule("dualalign_R18_instant_test"),
                    dataset_opts(tiny_synthetic, tmp_path, "strload", SEED=5,
                                 DATALOADER__NUM_WORKERS=0))  # fmt: skip
    labeled, unlabeled = training_records(cfg)

    def first_labelled(loader, steps=4):
        seed_all(0)
        it = iter(loader)
        out = [next(it) for _ in range(steps)]
        return [d["image"] for step in out for d in (step[0] if isinstance(step, tuple) else step)]

    alone = first_labelled(build_labeled_loader(cfg, labeled))
    paired = first_labelled(build_paired_loader(cfg, labeled, unlabeled))
    assert all(torch.equal(a, b) for a, b in zip(alone, paired))
    shared = build_paired_loader(cfg, labeled, unlabeled)
    monkeypatch.setattr(shared, "seed", None)  # the former loader: one stream for both halves
    assert not all(torch.equal(a, b) for a, b in zip(alone, first_labelled(shared)))
