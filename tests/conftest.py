"""Shared pytest setup: small thread counts (CI has 2 cores) and paths to optional real data."""
import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


@pytest.fixture
def shared_data_dir():
    """Path to ../shared/data, or skip with a clear reason when it is not beside the repo."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared is absent in this checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small synthetic set (128 px patches) shared by the training tests of one session."""
    from dualalign.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    paths = generate_dataset(
        str(root), seed=0, image_size=128, num_labeled=8, num_unlabeled=8, num_val=2, num_test=4
    )
    return paths


def tiny_opts(paths, output_dir, tag, **overrides):
    """Command-line opts that shrink the synthetic CPU config to a few-second model.

    ``tag`` makes the dataset names unique, so several tests can register their own copies.
    """
    opts = {
        "OUTPUT_DIR": str(output_dir),
        "INPUT.MIN_SIZE_TRAIN": (128,),
        "INPUT.MAX_SIZE_TRAIN": 128,
        "INPUT.MIN_SIZE_TEST": 128,
        "INPUT.MAX_SIZE_TEST": 128,
        "MODEL.FPN.OUT_CHANNELS": 64,
        "MODEL.ROI_BOX_HEAD.FC_DIM": 128,
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE": 64,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64,
        "DUALALIGN.EMBED.HIDDEN_DIM": 64,
        "DUALALIGN.EMBED.DIM": 32,
        "DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE": 64,
        "SOLVER.MAX_ITER": 3,
        "SOLVER.WARMUP_ITERS": 1,
        "SOLVER.BASE_LR": 0.01,
        "SOLVER.CHECKPOINT_PERIOD": 1000,
        "DUALALIGN.LOG_PERIOD": 1,
        "TEST.DETECTIONS_PER_IMAGE": 150,
        "DATASETS.TRAIN": (f"lab_{tag}",),
        "DATASETS.TEST": (f"test_{tag}",),
        "DUALALIGN.DATASETS.COCO": [
            [f"lab_{tag}", paths["labeled"], paths["image_root"]],
            [f"test_{tag}", paths["test"], paths["image_root"]],
        ],
        "DUALALIGN.DATASETS.UNLABELED": [[f"unl_{tag}", paths["unlabeled"], paths["image_root"]]],
        "DUALALIGN.DATASETS.TRAIN_UNLABELED": (f"unl_{tag}",),
    }
    opts.update({k.replace("__", "."): v for k, v in overrides.items()})
    flat = []
    for key, value in opts.items():
        flat += [key, str(value) if not isinstance(value, str) else value]
    return flat
