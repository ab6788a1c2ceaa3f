"""The skeleton every method shares: a new method overrides ``semi_forward`` only and trains."""

import itertools

import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, build_model

from dualalign.baselines import CSDRCNN, MeanTeacherRCNN
from dualalign.engine.semi_trainer import SemiSupervisedTrainer, weighted_total
from dualalign.modeling import DualAlignRCNN, SemiSupervisedRCNN
from dualalign.modeling.detector_steps import supervised_losses_and_extra_features


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
