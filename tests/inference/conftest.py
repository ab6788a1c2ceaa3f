"""Shared pieces of the inference tests: a fake detector and a tiny checkpoint."""

import cv2
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from dualalign.utils.paths import config_path, repo_root

REPO_ROOT = repo_root()
# The 128 px test size keeps a CPU forward pass well under a second.
CONFIG = config_path("quick_schedules", "supervised_R18_inference_test.yaml")
SMALL_OPTS = ["MODEL.DEVICE", "cpu"]
# Fewer proposals and detections per image: inference-only settings, the weights are the same.
FAST_OPTS = SMALL_OPTS + [
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    "100",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "50",
    "TEST.DETECTIONS_PER_IMAGE",
    "20",
]
CLASSES = ["ASC-US", "LSIL", "HSIL", "AGC"]


class MarkerDetector:
    """Fake predictor: a box per connected black blob (all channels < 30), score 0.9, class 2."""

    def __init__(self):
        self.seen = []  # shapes of the images it was given

    def predict(self, images):
        out = []
        for image in images:
            self.seen.append(image.shape)
            dark = np.all(image < 30, axis=2).astype(np.uint8)
            _, _, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
            boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:]]
            inst = Instances(image.shape[:2])
            inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            inst.scores = torch.full((len(boxes),), 0.9)
            inst.pred_classes = torch.full((len(boxes),), 2, dtype=torch.int64)
            out.append(inst)
        return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Path of a ``.pth`` of the randomly initialised CPU model, saved by the project's
    checkpointer (what ``train_net.py`` writes)."""
    from dualalign.engine.checkpoint import AtomicCheckpointer
    from dualalign.engine.setup import build_cfg
    from dualalign.engine.trainer import Trainer

    torch.manual_seed(0)
    cfg = build_cfg(CONFIG, SMALL_OPTS)
    model = Trainer.build_model(cfg)
    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    AtomicCheckpointer(model, save_dir=str(folder)).save("tiny")
    return str(folder / "tiny.pth")
