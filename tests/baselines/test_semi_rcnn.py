"""The skeleton every method shares: a new method overrides ``semi_forward`` only and trains."""

import itertools
import math

import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, build_model
from dualalign_testing import INSTANT_TEST, quick_cfg

from dualalign.baselines import CSDRCNN, MeanTeacherRCNN
from dualalign.engine.semi_trainer import SemiSupervisedTrainer, weighted_total
from dualalign.modeling import DualAlignRCNN, SemiSupervisedRCNN
from dualalign.modeling.detector_steps import supervised_losses_and_extra_features
from dualalign.modeling.rampup import sigmoid_rampup


@META_ARCH_REGISTRY.register()
class ToySemiRCNN(SemiSupervisedRCNN):
    """A made-up method: the mean feature of the unlabelled images, pulled towards 0."""

    semi_loss_names = ("loss_toy",)
    calls = []

    def semi_forward(self, labeled, unlabeled):
        losses, _, features = supervised_losses_and_extra_features(self, labeled, unlabeled)
        losses["loss_toy"] = sum(f.mean() ** 2 for f in features.values())
        return losses

    def after_step(self):
        super().after_step()
        self.calls.append("after_step")


def test_every_method_is_a_semi_supervised_rcnn():
    for cls in (DualAlignRCNN, CSDRCNN, MeanTeacherRCNN):
        assert issubclass(cls, SemiSupervisedRCNN) and cls.semi_loss_names
        assert "semi_forward" in vars(cls)  # each writes its own unsupervised step
        assert "forward" not in vars(cls)  # and none repeats the protocol's preamble


def test_weighted_total_scales_the_unsupervised_terms_only():
    terms = {"loss_cls": 1.0, "loss_toy": 2.0}
    assert weighted_total(terms, {"loss_toy"}, 0.5) == pytest.approx(2.0)
    tensors = {k: torch.tensor(v) for k, v in terms.items()}
    assert float(weighted_total(tensors, {"loss_toy"}, 0.25)) == pytest.approx(1.5)


def test_a_new_method_trains_with_the_shared_trainer(tiny_cfg, batch):
    cfg = tiny_cfg("csd_R18_cpu.yaml", "MODEL.META_ARCHITECTURE", "ToySemiRCNN")
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    assert model.semi_loss_weight(0) == pytest.approx(model.weight_schedule(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    trainer = SemiSupervisedTrainer(model, itertools.repeat(batch), optimizer)
    ToySemiRCNN.calls.clear()
    trainer.train(0, 2)
    assert ToySemiRCNN.calls == ["after_step", "after_step"]
    latest = trainer.storage.latest()
    assert "loss_toy" in latest and "loss_cls" in latest
    assert latest["lambda"][0] == pytest.approx(model.semi_loss_weight(1))


def test_a_plain_detector_has_no_unsupervised_part(tiny_cfg, batch):
    cfg = tiny_cfg(
        "csd_R18_cpu.yaml",
        "MODEL.META_ARCHITECTURE",
        "GeneralizedRCNN",
        "DUALALIGN.METHOD",
        "supervised",
    )
    model = build_model(cfg)
    assert type(model) is GeneralizedRCNN
    trainer = SemiSupervisedTrainer(
        model, itertools.repeat(batch[0]), torch.optim.SGD(model.parameters(), lr=0.0), paired=False
    )
    trainer.train(0, 1)
    assert trainer.method.semi_loss_names == ()


def test_gradient_diagnostics_are_logged_when_due(tiny_cfg, batch):
    cfg = tiny_cfg("csd_R18_cpu.yaml", "MODEL.META_ARCHITECTURE", "ToySemiRCNN")
    model = build_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    trainer = SemiSupervisedTrainer(model, itertools.repeat(batch), optimizer, grad_share_period=2)
    trainer.train(0, 2)
    history = trainer.storage.histories()
    for part in ("box_head", "backbone_last"):
        values = history[f"grad/{part}/unsup_over_sup"].values()
        assert [it for _, it in values] == [0]  # iteration 0 only: every 2 steps
        assert values[0][0] >= 0.0 and values[0][0] == values[0][0]  # finite, not NaN
    # The toy loss reads the backbone features only: nothing reaches the box head.
    assert history["grad/box_head/unsup_over_sup"].latest() == 0.0
    assert history["grad/backbone_last/unsup_over_sup"].latest() > 0.0


def dualalign_model(name, **overrides):
    """A dual-alignment instant-test model over 2000 iterations (ramp-up 500), as the synthetic
    CPU configs schedule it."""
    paths = {"labeled": "l.json", "unlabeled": "u.json", "test": "t.json", "image_root": "."}
    overrides = dict(SOLVER__MAX_ITER=2000, DUALALIGN__RAMPUP_ITERS=500, **overrides)
    cfg = quick_cfg(name, paths, "/tmp/unused", "ramp", **overrides)
    return build_model(cfg), cfg


def test_dual_alignment_ramp_down_and_tail_are_csds_schedule(tiny_model):
    # One schedule for every method: dual alignment's opt-in ramp-down and tail give lambda(t)
    # exactly CSD's weight with the same lengths; the default (no ramp-down) is the paper's.
    paper, cfg = dualalign_model(INSTANT_TEST)
    tail, _ = dualalign_model(INSTANT_TEST, DUALALIGN__RAMPDOWN_ITERS=333, DUALALIGN__TAIL_ITERS=300)
    csd, _ = tiny_model("csd_R18_cpu.yaml", "DUALALIGN.CSD.TAIL_ITERS", 300)
    assert (cfg.DUALALIGN.RAMPDOWN_ITERS, cfg.DUALALIGN.TAIL_ITERS) == (0, 0)
    assert paper.semi_loss_weight(2000) == cfg.DUALALIGN.LOSS_WEIGHT == 1.0
    for it in (0, 250, 1000, 1367, 1500, 1699, 1700, 1850, 2000):
        assert tail.semi_loss_weight(it) == pytest.approx(csd.semi_loss_weight(it))
        assert paper.semi_loss_weight(it) == pytest.approx(sigmoid_rampup(it, 500, 1.0))
    assert tail.semi_loss_weight(1850) == pytest.approx(math.exp(-12.5))


def test_the_tail_ends_at_max_iter_when_the_teacher_starts_late():
    # lambda(t) counts from the teacher's start; the tail is still the last TAIL_ITERS of
    # SOLVER.MAX_ITER.
    late, _ = dualalign_model(
        "dualalign_teacher_R18_instant_test.yaml", DUALALIGN__RAMPDOWN_ITERS=100,
        DUALALIGN__TAIL_ITERS=200, DUALALIGN__TEACHER__START_ITER=300,
    )  # fmt: skip
    w = late.semi_loss_weight
    assert late.start_iter == 300 and w(299) == 0.0
    assert w(300 + 500) == w(2000 - 200 - 100) == 1.0  # ramped up, ramp-down not begun
    assert w(1750) == pytest.approx(math.exp(-12.5 * 0.5**2))  # half-way down
    assert w(2000 - 200) == w(2000) == pytest.approx(math.exp(-12.5))


@pytest.mark.parametrize(
    "overrides",
    [
        {"DUALALIGN__TAIL_ITERS": 100},  # a tail without a ramp-down changes nothing
        {"DUALALIGN__RAMPDOWN_ITERS": 100, "DUALALIGN__TAIL_ITERS": 2000},
        {"DUALALIGN__RAMPDOWN_ITERS": -1},
    ],
)
def test_ramp_down_and_tail_refuse_settings_that_do_nothing_or_cannot_be(overrides):
    key = list(overrides)[-1].replace("__", ".")
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        dualalign_model(INSTANT_TEST, **overrides)
