"""Tiny baseline models and synthetic input dicts (no dataset files), for tests/baselines."""

import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from dualalign.engine.setup import build_cfg

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 64

# Shrinks a synthetic config to a model that runs a step in about a second on one core. The
# dataset declarations are dropped: these tests build their inputs in memory.
TINY_OPTS = [
    "INPUT.MIN_SIZE_TRAIN",
    (SIZE,),
    "INPUT.MAX_SIZE_TRAIN",
    SIZE,
    "INPUT.MIN_SIZE_TEST",
    SIZE,
    "INPUT.MAX_SIZE_TEST",
    SIZE,
    "MODEL.FPN.OUT_CHANNELS",
    32,
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    64,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    200,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    50,
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    200,
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    50,
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    32,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    32,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    0.0,
    "TEST.DETECTIONS_PER_IMAGE",
    20,
    "DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE",
    16,
    "DUALALIGN.DATASETS.COCO",
    [],
    "DUALALIGN.DATASETS.UNLABELED",
    [],
    "DUALALIGN.DATASETS.TRAIN_UNLABELED",
    (),
    "DATASETS.TRAIN",
    (),
    "DATASETS.TEST",
    (),
]


@pytest.fixture(autouse=True)
def event_storage():
    """detectron2's training losses log to an EventStorage, as inside the trainer."""
    with EventStorage(0) as storage:
        yield storage


def config_path(name: str) -> str:
    return os.path.join(REPO_ROOT, "configs", "synthetic", name)


@pytest.fixture
def tiny_cfg():
    """``tiny_cfg(config_name, *opts)``: a frozen tiny CPU cfg from configs/synthetic."""

    def make(config_name: str, *opts):
        return build_cfg(config_path(config_name), TINY_OPTS + list(opts), device="cpu")

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
