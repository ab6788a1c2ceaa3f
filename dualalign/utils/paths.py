"""Where the repository's own files are: its root and its ``configs/`` folder.

The package is installed in place (``pip install -e .``), so the repository root is the folder
above ``dualalign/``. Scripts and tests use these instead of computing it from ``__file__``.
"""

import os

__all__ = ["config_path", "repo_root"]

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def repo_root() -> str:
    """The absolute path of the repository (the folder holding ``dualalign/`` and ``configs/``)."""
    return _REPO_ROOT


def config_path(*parts: str) -> str:
    """The absolute path of a file under ``configs/``.

    Args:
        parts: path components below ``configs/``, e.g. ``("synthetic", "dualalign_R18_cpu.yaml")``.

    Returns:
        ``<repo>/configs/<parts...>``; existence is not checked.
    """
    return os.path.join(_REPO_ROOT, "configs", *parts)
