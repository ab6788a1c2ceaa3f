"""Tiny baseline models and synthetic input dicts (no dataset files), for tests/baselines."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from dualalign_testing import quick_schedule

from dualalign.engine.setup import build_cfg

SIZE = 64  # side of the in-memory inputs below


@pytest.fixture(autouse=True)
def event_storage():
    """detectron2's training losses log to an EventStorage, as inside the trainer."""
    with EventStorage(0) as storage:
        yield storage


@pytest.fixture
def tiny_cfg():
    """``tiny_cfg(config_name, *opts)``: the frozen tiny CPU cfg of a configs/synthetic name.

    The tiny model is the config's unit-test quick schedule (``csd_R18_cpu.yaml`` ->
    ``configs/quick_schedules/csd_R18_unit_test.yaml``), which declares no data set.
    """

    def make(config_name: str, *opts):
        name = config_name.replace("_cpu.yaml", "_unit_test.yaml")
        return build_cfg(quick_schedule(name), list(opts), device="cpu")

    return make


@pytest.fixture
def tiny_model(tiny_cfg):
    """``tiny_model(config_name, *opts)``: (seeded model, cfg) from configs/synthetic."""

    def make(config_name: str, *opts):
        torch.manual_seed(0)
        cfg = tiny_cfg(config_name, *opts)
        return build_model(cfg), cfg

    return make


def labeled_input(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    inst = Instances((SIZE, SIZE))
    inst.gt_boxes = Boxes(torch.tensor([[8.0, 10.0, 28.0, 30.0], [36.0, 30.0, 56.0, 52.0]]))
    inst.gt_classes = torch.tensor([0, 2])
    image = torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    return {"image": image, "height": SIZE, "width": SIZE, "instances": inst, "file_name": "l"}


def unlabeled_input(seed: int) -> dict:
    g = torch.Generator().manual_seed(1000 + seed)
    image = torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    return {"image": image, "height": SIZE, "width": SIZE, "file_name": f"u{seed}"}


@pytest.fixture
def batch():
    """Two labelled and two unlabelled input dicts, as the paired loader yields them."""
    return [labeled_input(0), labeled_input(1)], [unlabeled_input(0), unlabeled_input(1)]
