"""Atomic writers for the inference scripts' outputs (csv, png; json: ``atomic_write_json``).

Each file is written to a temp file beside it and renamed into place (``atomic_open``), so a
crash leaves the previous complete file or none, never a half-written one.
"""

import csv
from typing import Iterable, Sequence

import cv2
import numpy as np

from ..utils.atomic import atomic_open
from ..utils.visualize import class_name

__all__ = ["class_counts", "write_csv", "write_png"]


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a CSV file with a header row."""
    with atomic_open(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_png(path: str, image_rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image_rgb[:, :, ::-1]))
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode a {image_rgb.shape} image as PNG")
    with atomic_open(path, "wb") as f:
        f.write(data.tobytes())


def class_counts(classes: np.ndarray, class_names: Sequence[str]) -> dict:
    """Detections per class name (every class listed, unknown ids as ``class_<i>``)."""
    counts = {name: 0 for name in class_names}
    for cls in np.asarray(classes, dtype=np.int64).reshape(-1):
        name = class_name(class_names, cls)
        counts[name] = counts.get(name, 0) + 1
    return counts
