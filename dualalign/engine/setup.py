"""Build and check the config of a run, as ``train_net.py`` and the scripts do."""

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_setup

from ..config import add_dualalign_config, validate_dualalign_config
from ..data.datasets import register_from_config


def build_cfg(config_file: str = "", opts=(), device: str = "auto"):
    """get_cfg + dualalign keys + a YAML file + command-line opts, validated and frozen.

    Args:
        config_file: YAML path (safe-loaded by detectron2's config loader); "" for defaults.
        opts: ``KEY VALUE`` pairs, as on the command line.
        device: "auto" keeps MODEL.DEVICE but falls back to the CPU when CUDA is absent.
    """
    cfg = get_cfg()
    add_dualalign_config(cfg)
    if config_file:
        if not config_file.endswith((".yaml", ".yml")):
            raise ValueError(f"{config_file}: configs are YAML files (.yaml); got another type")
        # detectron2 falls back to yaml.unsafe_load by default; a config must never run code.
        cfg.merge_from_file(config_file, allow_unsafe=False)
    cfg.merge_from_list(list(opts))
    if device == "auto":
        if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
            cfg.MODEL.DEVICE = "cpu"
    else:
        cfg.MODEL.DEVICE = device
    validate_dualalign_config(cfg)
    register_from_config(cfg)
    cfg.freeze()
    return cfg


def setup(args):
    """The usual detectron2 ``setup(args)``: cfg from ``args``, logging, output dir, seed."""
    cfg = build_cfg(args.config_file, args.opts)
    default_setup(cfg, args)
    return cfg
