"""The optimizer of every shipped config: detectron2's (lr, weight decay) for every parameter but
the class proxies, which alone get ``DUALALIGN.PROXY.BASE_LR`` and no weight decay.

detectron2 merges parameters with equal hyper-parameters into one group, so a test that looks
only at "the proxies' group" passes while the whole network trains at the proxies' lr. These
tests compare parameter by parameter with ``detectron2.solver.build_optimizer``.
"""

import glob
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer as d2_build_optimizer

from dualalign.engine.setup import build_cfg
from dualalign.engine.trainer import Trainer, split_proxy_group
from dualalign.utils.paths import repo_root

REPO_ROOT = repo_root()
SHIPPED = sorted(
    os.path.relpath(p, REPO_ROOT)
    for p in glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)


def settings_by_param(optimizer):
    """{id(param): (lr, weight_decay)}, failing if a parameter sits in two groups."""
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in out, "a parameter is in two param groups"
            out[id(p)] = (group["lr"], group["weight_decay"])
    return out


def test_the_shipped_configs_are_all_checked():
    assert len(SHIPPED) >= 12, SHIPPED
    assert "configs/paper/dualalign_R101_FPN.yaml" in SHIPPED


@pytest.mark.parametrize("config", SHIPPED)
def test_every_parameter_gets_detectron2s_settings_except_the_proxies(config):
    cfg = build_cfg(os.path.join(REPO_ROOT, config), device="cpu")
    torch.manual_seed(0)
    model = build_model(cfg)
    ours = settings_by_param(Trainer.build_optimizer(cfg, model))
    reference = settings_by_param(d2_build_optimizer(cfg, model))
    proxies = getattr(model.roi_heads, "proxies", None)
    proxy_ids = {id(p) for p in proxies.parameters()} if proxies is not None else set()
    if cfg.DUALALIGN.METHOD == "dualalign" and not (
        cfg.DUALALIGN.LOSS.PML_LABELED or cfg.DUALALIGN.LOSS.PML_UNLABELED
    ):
        assert not any(p.requires_grad for p in proxies.parameters())  # nothing reads them
    assert set(ours) == set(reference), "the optimizer must hold exactly the trainable params"
    assert (proxies is not None) == (cfg.DUALALIGN.METHOD == "dualalign")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert {id(p) for _, p in trainable} == set(ours)
    for name, p in trainable:
        if id(p) in proxy_ids:
            assert ours[id(p)] == (cfg.DUALALIGN.PROXY.BASE_LR, 0.0), name
        else:
            assert ours[id(p)] == reference[id(p)], name
    # The network itself trains at SOLVER.BASE_LR, whatever the proxies' lr is.
    backbone_lr = {ours[id(p)][0] for p in model.backbone.parameters() if p.requires_grad}
    assert backbone_lr == {cfg.SOLVER.BASE_LR}


def test_the_proxies_group_holds_the_proxies_only():
    cfg = build_cfg(os.path.join(REPO_ROOT, "configs/paper/dualalign_R101_FPN.yaml"), device="cpu")
    model = build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    proxies = list(model.roi_heads.proxies.parameters())
    group = optimizer.param_groups[-1]
    assert [id(p) for p in group["params"]] == [id(p) for p in proxies]
    assert cfg.DUALALIGN.PROXY.BASE_LR != cfg.SOLVER.BASE_LR  # the case that went wrong
    assert all(g["lr"] == cfg.SOLVER.BASE_LR for g in optimizer.param_groups[:-1])


def test_split_proxy_group_keeps_other_groups_and_drops_emptied_ones():
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    optimizer = torch.optim.SGD(
        [{"params": [a, b], "weight_decay": 1e-4}, {"params": [c], "lr": 0.5}], lr=0.1
    )
    split_proxy_group(optimizer, [c], lr=0.01)
    groups = [
        ([id(p) for p in g["params"]], g["lr"], g["weight_decay"]) for g in optimizer.param_groups
    ]
    assert groups == [([id(a), id(b)], 0.1, 1e-4), ([id(c)], 0.01, 0.0)]
