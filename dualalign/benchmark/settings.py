"""The settings the speed benchmark runs at: sizes, the steps it compares, and their configs.

Two sizes: ``quick`` (CPU, R-18 at 256 px, 2 + 2 images) and ``paper`` (R-101-FPN at 1200 px,
4 + 4 images, from random init). The steps (a) to (g) are defined in :data:`STEP_KEYS`.
"""

import os

import torch

from ..engine.setup import build_cfg
from ..utils.paths import repo_root
from . import speed
from .protocol import ARMS

__all__ = ["SETTINGS", "STEP_KEYS", "SWITCH_STEP_KEYS", "cfg_for", "machine_name", "setting"]

# key: (config, paired, forward override)
STEP_KEYS = {
    "a_supervised_labeled": ("supervised", False, None),
    "b0_backbone_only_same_images": ("same_images", True, None),
    "b_supervised_same_images": ("same_images", True, speed.forward_same_images),
    "c_dualalign": ("dualalign", True, None),
    "d_csd": ("csd", True, None),
    "e_mean_teacher": ("mean_teacher", True, None),
    # The teacher pipeline: pseudo-boxes of the EMA teacher, strong view, loss_cls_u; with and
    # without the metric terms.
    "f_self_training": ("self_training", True, None),
    "g_dualalign_teacher": ("dualalign_teacher", True, None),
}
# Each switch of the teacher pipeline on its own, on the paper's method (the protocol's
# ``switch_*`` arms: config and opts), against (c) (target: at most 1.3x). Timed only when named
# in ``--steps``, so that a full run keeps its length.
SWITCH_STEP_KEYS = {f"h_{arm}": (arm, True, None) for arm in ARMS if arm.startswith("switch_")}

# The two sizes bench.py runs at. warmup / repeats / rounds / large are defaults that the flags
# override. Each of the ``rounds`` interleaved rounds times ``repeats`` steps of every method.
SETTINGS = {
    "quick": dict(
        config_dir="configs/synthetic",
        suffix="_R18_cpu",
        size=256,
        n_l=2,
        n_u=2,
        warmup=2,
        repeats=5,
        rounds=6,
        infer_images=8,
        infer_batch=2,
        large=1024,
        opts=[],
    ),
    "paper": dict(
        config_dir="configs/paper",
        suffix="_R101_FPN",
        size=1200,
        n_l=4,
        n_u=4,
        warmup=3,
        repeats=10,
        rounds=3,
        infer_images=32,
        infer_batch=8,
        large=4800,
        # Random init as the reference numbers (environment.md): BN, nothing frozen.
        opts=["MODEL.WEIGHTS", "", "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "0"],
    ),
}


def setting(args) -> dict:
    """The setting of one benchmark run: ``SETTINGS`` of its size, with the flags applied.

    Args:
        args: parsed flags with ``quick``, ``device`` ("auto", "cpu", "cuda"), ``warmup`` (< 0:
            the default), ``repeats``, ``rounds`` and ``large`` (0: the default),
            ``eval_images``.

    Returns:
        A new dict (``SETTINGS`` is not modified) with the resolved device and the config opts.
    """
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    s = dict(SETTINGS["quick" if args.quick else "paper"])
    s.update(
        device=device,
        warmup=args.warmup if args.warmup >= 0 else s["warmup"],
        repeats=args.repeats or s["repeats"],
        rounds=getattr(args, "rounds", 0) or s["rounds"],
        large=args.large or s["large"],
        eval_images=args.eval_images,
        opts=["MODEL.DEVICE", device] + s["opts"],
    )
    return s


def cfg_for(s: dict, method: str):
    """The frozen cfg of ``method`` (a config name, "same_images" for (b), or a protocol
    ``switch_*`` arm: its config with its opts) at setting ``s``.

    No datasets are declared: the benchmark feeds fixed in-memory batches.
    """
    if method.startswith("switch_"):
        name, arm_opts = ARMS[method]
    else:
        name, arm_opts = {"same_images": "dualalign"}.get(method, method), []
    opts = list(s["opts"]) + list(arm_opts) + [
        "DATASETS.TRAIN",
        "()",
        "DATASETS.TEST",
        "()",
        "DUALALIGN.DATASETS.COCO",
        "[]",
        "DUALALIGN.DATASETS.UNLABELED",
        "[]",
        "DUALALIGN.DATASETS.TRAIN_UNLABELED",
        "()",
        # Worst case for dual alignment: every unlabelled proposal is
        # pseudo-labelled (a random-init model scores none above 0.5).
        "DUALALIGN.PSEUDO.SCORE_THRESH",
        "0.0",
        # Likewise every teacher detection is a pseudo-box (the teacher pipeline's worst case).
        "DUALALIGN.PSEUDO.BOX_THRESH",
        "0.0",
    ]
    if method == "same_images":
        opts += [
            "DUALALIGN.LOSS.PML_LABELED",
            "False",
            "DUALALIGN.LOSS.PML_UNLABELED",
            "False",
            "DUALALIGN.LOSS.PMB_LABELED",
            "False",
            "DUALALIGN.LOSS.PMB_UNLABELED",
            "False",
        ]
    path = os.path.join(repo_root(), s["config_dir"], f"{name}{s['suffix']}.yaml")
    return build_cfg(path, opts, device=s["device"])


def machine_name(s: dict) -> str:
    """The results file's name: the GPU's name, or ``cpu-<cores>core``."""
    if s["device"] == "cuda":
        return torch.cuda.get_device_name(0).lower().replace(" ", "-")
    return f"cpu-{os.cpu_count()}core"
