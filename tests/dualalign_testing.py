"""Helpers shared by the tests (imported by name: each test folder has its own conftest)."""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


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
