"""What the inference scripts accept: image files, slide files and folders of them.

A file is handled by what it holds, not only by its name: ``open_slide`` asks OpenSlide first
(``detect_format``) and falls back to an in-memory reader, and ``input_kind`` then says how to
run it.

===============================================  ==========================================
file                                             kind
===============================================  ==========================================
read by OpenSlide with several levels, or a      ``"slide"``: tiled over ``--level``,
vendor format (.svs .ndpi .mrxs .scn .vms .vmu   overlay on a thumbnail
.bif)
image (or one-level TIFF) larger than 2 tiles    ``"large_image"``: tiled over level 0,
on its longer side                               overlay on a thumbnail
any other image                                  ``"image"``: one forward pass on the whole
                                                 image, overlay on the image
===============================================  ==========================================
"""

import os
from typing import Iterable, List, Tuple

from ..wsi.reader import SlideReader

__all__ = [
    "IMAGE_EXTENSIONS",
    "INPUT_EXTENSIONS",
    "SLIDE_EXTENSIONS",
    "expand_inputs",
    "input_kind",
    "unique_stems",
]

SLIDE_EXTENSIONS = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".tif", ".tiff")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
INPUT_EXTENSIONS = tuple(sorted(set(SLIDE_EXTENSIONS) | set(IMAGE_EXTENSIONS)))
_VENDOR_EXTENSIONS = tuple(e for e in SLIDE_EXTENSIONS if e not in (".tif", ".tiff"))


def expand_inputs(paths: Iterable[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Files to process, from files and folders (searched recursively).

    Args:
        paths (list[str]): files or folders as given on the command line.

    Returns:
        tuple: ``files`` (list[str], in the given order, folders' contents sorted, hidden
        entries skipped, duplicates removed) and ``errors`` (list of ``(path, reason)`` for
        paths that do not exist or folders with no image or slide file).
    """
    files, errors, seen = [], [], set()

    def add(path):
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for path in paths:
        if os.path.isdir(path):
            found = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(
                    os.path.join(root, n)
                    for n in sorted(names)
                    if not n.startswith(".") and n.lower().endswith(INPUT_EXTENSIONS)
                )
            if not found:
                errors.append((path, f"folder holds no {'/'.join(INPUT_EXTENSIONS)} file"))
            for f in found:
                add(f)
        elif os.path.isfile(path):
            add(path)
        else:
            errors.append((path, "no such file or folder"))
    return files, errors


def input_kind(reader: SlideReader, tile_size: int) -> str:
    """``"slide"``, ``"large_image"`` or ``"image"`` (see the module docstring)."""
    if reader.backend == "openslide" and (
        reader.level_count > 1 or reader.path.lower().endswith(_VENDOR_EXTENSIONS)
    ):
        return "slide"
    width, height = reader.level_dimensions[0]
    return "large_image" if max(width, height) > 2 * tile_size else "image"


def unique_stems(files: List[str]) -> List[str]:
    """File names without extension, made unique with ``_2``, ``_3``... suffixes, in order."""
    stems, used = [], set()
    for path in files:
        base = os.path.splitext(os.path.basename(path))[0] or "input"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        stems.append(name)
    return stems
