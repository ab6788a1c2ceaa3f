#!/usr/bin/env python
"""Fail early, with a clear message, when a disk is too full for the next install step.

The torch wheels that ``make`` installs unpack to about 5.5 GB in the venv, and pip needs room
in its temporary directory while it unpacks them. A full disk otherwise surfaces as pip's
``OSError: [Errno 28] No space left on device`` half-way through, leaving a partial venv.

Usage: ``python scripts/check_free_space.py --need-gb 7 PATH [PATH ...]``. Each PATH (or its
nearest existing parent) must have ``--need-gb`` free; exit status 1 and a message naming the
path, what is free and how to fix it otherwise. Standard library only: it runs before the venv
has anything in it.
"""

import argparse
import os
import shutil
import sys
import tempfile

GIB = 1024**3


def existing_parent(path):
    """The path itself, or its nearest ancestor that exists (a venv may not be created yet)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def shortfalls(paths, need_bytes, disk_usage=None):
    """``[(path, free_bytes)]`` for every path whose filesystem has less than ``need_bytes`` free."""
    disk_usage = disk_usage or shutil.disk_usage
    short = []
    for path in paths:
        free = disk_usage(existing_parent(path)).free
        if free < need_bytes:
            short.append((path, free))
    return short


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="directories to check (default: temp dir)")
    parser.add_argument("--need-gb", type=float, required=True, help="free space needed, GiB")
    parser.add_argument("--what", default="the install", help="what needs the space")
    args = parser.parse_args(argv)
    paths = args.paths or [tempfile.gettempdir()]
    short = shortfalls(paths, args.need_gb * GIB)
    for path, free in short:
        print(
            f"error: {args.what} needs about {args.need_gb:g} GiB free at {os.path.abspath(path)}, "
            f"but only {free / GIB:.1f} GiB is free there. Free some space (old venvs, "
            f"checkpoints under results/*/runs/, pytest's {tempfile.gettempdir()}/pytest-of-*), "
            "or point VENV= / TMPDIR= at a larger disk, then run make again.",
            file=sys.stderr,
        )
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
