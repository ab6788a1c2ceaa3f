"""Helpers shared by the tests (imported by name: each test folder has its own conftest).

Tiny models come from the quick-schedule configs in ``configs/quick_schedules/``: YAMLs that
``_BASE_`` on a ``configs/synthetic`` config and shrink it. :func:`quick_cfg` builds one with a
test's data sets; :func:`tiny_opts` gives the same shrinking as command-line opts, for a test
that passes a full config file.
"""

import importlib.util
import os
import sys

import yaml

from dualalign.engine.setup import build_cfg
from dualalign.utils.paths import config_path, repo_root

REPO_ROOT = repo_root()
# The real data sets (cervix93/, ...): DUALALIGN_REAL_DATA, else the checkout's sibling folder.
SHARED_DATA = os.environ.get(
    "DUALALIGN_REAL_DATA", os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")
)
INSTANT_TEST = "dualalign_R18_instant_test.yaml"


def quick_schedule(name: str) -> str:
    """Path of ``configs/quick_schedules/<name>`` (``name`` with or without ``.yaml``)."""
    return config_path("quick_schedules", name if name.endswith(".yaml") else name + ".yaml")


def quick_schedule_opts(name: str = INSTANT_TEST, sections=None) -> list:
    """The keys a quick-schedule YAML sets itself (not its ``_BASE_``'s), as ``KEY VALUE`` opts.

    Args:
        name: the YAML under ``configs/quick_schedules/``.
        sections: top-level keys to keep (e.g. ``("INPUT", "MODEL")``); None keeps all.
    """
    with open(quick_schedule(name)) as f:
        tree = yaml.safe_load(f)
    flat = []

    def walk(prefix, node):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(prefix + key + ".", value)
            else:
                flat.extend([prefix + key, value if isinstance(value, str) else str(value)])

    walk("", {k: v for k, v in tree.items() if k != "_BASE_" and k in (sections or tree)})
    return flat


def dataset_opts(paths, output_dir, tag, **overrides):
    """Opts declaring a synthetic set's splits (names made unique by ``tag``) and OUTPUT_DIR.

    ``paths`` is :func:`generate_dataset`'s return value. ``overrides`` are extra keys with
    ``__`` for ``.`` (``SOLVER__MAX_ITER=4``); values that are not strings are ``str``-ed.
    """
    opts = {
        "OUTPUT_DIR": str(output_dir),
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
        flat += [key, value if isinstance(value, str) else str(value)]
    return flat


def quick_cfg(name, paths, output_dir, tag, **overrides):
    """The frozen cfg of quick schedule ``name`` with the data sets of :func:`dataset_opts`."""
    return build_cfg(quick_schedule(name), dataset_opts(paths, output_dir, tag, **overrides))


def tiny_opts(paths, output_dir, tag, **overrides):
    """Command-line opts that shrink a synthetic CPU config as the instant-test config does.

    ``tag`` makes the dataset names unique, so several tests can register their own copies.
    """
    return quick_schedule_opts(INSTANT_TEST) + dataset_opts(paths, output_dir, tag, **overrides)


def load_train_net():
    """``train_net.py`` (the repository's entry point, outside the package) as module
    ``train_net``, loaded once per process."""
    if "train_net" not in sys.modules:
        path = os.path.join(repo_root(), "train_net.py")
        spec = importlib.util.spec_from_file_location("train_net", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["train_net"] = module
        spec.loader.exec_module(module)
    return sys.modules["train_net"]
