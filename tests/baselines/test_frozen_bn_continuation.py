"""A checkpoint trained with BN continues with frozen BN: the statistics it learnt are kept.

The two-stage protocol continues every arm from a supervised burn-in with normalisation that
does not depend on what else is in the batch; ``MODEL.RESNETS.NORM FrozenBN`` on a BN-trained
checkpoint is that. These tests pin what the continuation relies on.
"""

import torch

from dualalign.engine.checkpoint import AtomicCheckpointer

FROZEN = ("MODEL.RESNETS.NORM", "FrozenBN")


def _stem_norm(model):
    return model.backbone.bottom_up.stem.conv1.norm


def test_bn_checkpoint_loads_into_frozen_bn_and_predicts_the_same(tiny_model, batch, tmp_path):
    trained, _ = tiny_model("csd_R18_cpu.yaml")
    trained.train()
    with torch.no_grad():  # BN statistics as a burn-in leaves them
        for _ in range(2):
            trained.backbone(trained.preprocess_image(batch[0] + batch[1]).tensor)
    path = tmp_path / "burn_in.pth"
    torch.save({"model": trained.state_dict()}, path)

    frozen, _ = tiny_model("csd_R18_cpu.yaml", *FROZEN)
    AtomicCheckpointer(frozen).load(str(path))
    norm = _stem_norm(frozen)
    assert type(norm).__name__ == "FrozenBatchNorm2d"
    assert torch.equal(norm.running_mean, _stem_norm(trained).running_mean)
    assert not any(p.requires_grad for p in norm.parameters())

    trained.eval()
    frozen.eval()
    with torch.no_grad():
        a = trained.backbone(trained.preprocess_image(batch[1]).tensor)
        b = frozen.backbone(frozen.preprocess_image(batch[1]).tensor)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-4), key


def test_frozen_bn_statistics_do_not_follow_the_batch(tiny_model, batch):
    model, _ = tiny_model("csd_R18_cpu.yaml", *FROZEN)
    model.train()
    before = _stem_norm(model).running_mean.clone()
    model(*batch)
    assert torch.equal(_stem_norm(model).running_mean, before)
