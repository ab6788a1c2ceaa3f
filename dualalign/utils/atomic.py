"""Atomic file writes: a crash (even ``kill -9``) leaves either the old file or the new one."""

import json
import os
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_open(path: str, mode: str = "w"):
    """Open a temp file beside ``path``; on success fsync it and rename it over ``path``.

    On an exception the temp file is removed and ``path`` is left untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from other users
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str):
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str, obj, indent=1):
    """Write ``obj`` as JSON to ``path`` atomically, with a final newline.

    Args:
        path: the destination file; its folder is created if needed.
        obj: anything ``json.dump`` takes. NaN and infinity are refused (the files must be strict
            JSON), so convert them first (``None`` for a missing value).
        indent: ``json.dump``'s indent; ``None`` writes one line.
    """
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=indent, allow_nan=False)
        f.write("\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: str):
    # The rename itself is durable only once the directory entry is flushed.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
