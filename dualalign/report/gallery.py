"""Cell galleries: the best-scoring detections of each class, cropped from the slide.

Crops are read one by one (``SlideReader.read_region``, level 0 for cells) once the slide's
detections are known, so a gallery costs a few small reads whatever the slide's size; the slide
itself is never held in memory.
"""

import os
from typing import Dict, List, Sequence

import cv2
import numpy as np

from ..inference.outputs import write_png
from ..utils.visualize import class_colour, class_name
from ..wsi.reader import SlideReader, best_level_for_downsample

__all__ = ["crop_detection", "top_per_class", "write_gallery"]

_CONTEXT = 0.5  # crop margin on each side, as a fraction of the box's larger side
_MIN_CROP = 64  # px, level 0: small cells get at least this much context
_MAX_CROP = 256  # px: larger crops are shrunk to this side for the page


def top_per_class(scores: np.ndarray, classes: np.ndarray, num_classes: int, n: int):
    """Indices of the ``n`` highest scores of each class, best first.

    Args:
        scores (np.ndarray[N]): confidences.
        classes (np.ndarray[N]): class ids in ``[0, num_classes)``.
        num_classes (int): number of classes.
        n (int): crops per class.

    Returns:
        list[np.ndarray[<=n] int64]: one array per class id (stable order for equal scores).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    return [order[classes[order] == c][:n] for c in range(num_classes)]


def crop_detection(reader: SlideReader, box: Sequence[float], colour) -> np.ndarray:
    """A square crop centred on a box, with the box outlined in ``colour``.

    Cells are read at level 0. A crop larger than ``_MAX_CROP`` level-0 pixels (a large box)
    is read from the coarsest level that still gives ``_MAX_CROP`` pixels, since it is shrunk
    to that size anyway: a crop never reads more than about (2 x ``_MAX_CROP``)^2 pixels.

    Args:
        reader (SlideReader): the slide.
        box (sequence[4]): XYXY in level-0 pixels.
        colour (tuple[3]): RGB outline colour.

    Returns:
        np.ndarray[s, s, 3] uint8 RGB: the box's larger side plus ``_CONTEXT`` of it on each
        side, at least ``_MIN_CROP`` level-0 pixels, shrunk to ``_MAX_CROP`` at most.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    side = int(np.ceil(max(_MIN_CROP, (1 + 2 * _CONTEXT) * max(x1 - x0, y1 - y0))))
    cx0 = int(np.floor((x0 + x1 - side) / 2))  # a square centred on the box, level 0
    cy0 = int(np.floor((y0 + y1 - side) / 2))
    level = best_level_for_downsample(reader.level_downsamples, max(1.0, side / _MAX_CROP))
    downsample = reader.level_downsamples[level]
    read = max(1, int(np.ceil(side / downsample)))
    crop = reader.read_region(cx0, cy0, level, read, read)
    if read > _MAX_CROP:
        crop = cv2.resize(crop, (_MAX_CROP, _MAX_CROP), interpolation=cv2.INTER_AREA)
    zoom = crop.shape[1] / side  # output pixels per level-0 pixel
    p0 = (int(round((x0 - cx0) * zoom)), int(round((y0 - cy0) * zoom)))
    p1 = (int(round((x1 - cx0) * zoom)), int(round((y1 - cy0) * zoom)))
    cv2.rectangle(crop, p0, p1, tuple(int(c) for c in colour), 2 if max(crop.shape) > 96 else 1)
    return crop


def write_gallery(
    reader: SlideReader,
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    class_names: Sequence[str],
    folder: str,
    prefix: str,
    n: int = 12,
) -> Dict[str, List[dict]]:
    """Write the top-``n`` crops of each class as PNGs and describe them.

    Args:
        reader (SlideReader): the slide the detections come from.
        boxes (np.ndarray[N, 4]): XYXY, level-0 pixels.
        scores (np.ndarray[N]): confidences.
        classes (np.ndarray[N]): 0-based class ids.
        class_names (list[str]): names by class id.
        folder (str): where the PNGs go (created).
        prefix (str): the folder as the report links to it (relative to the report).
        n (int): crops per class.

    Returns:
        dict: class name -> list of ``{"src", "score", "box"}`` (best first), every class
        listed, empty for a class without detections.
    """
    gallery = {}
    for cls, picked in enumerate(top_per_class(scores, classes, len(class_names), n)):
        name = class_name(class_names, cls)
        entries = []
        for rank, i in enumerate(picked):
            crop = crop_detection(reader, boxes[i], class_colour(cls))
            file_name = f"c{cls}_{rank:03d}.png"
            write_png(os.path.join(folder, file_name), crop)
            entries.append(
                {
                    "src": f"{prefix}/{file_name}",
                    "score": round(float(scores[i]), 4),
                    "box": [round(float(v), 1) for v in boxes[i]],
                }
            )
        gallery[name] = entries
    return gallery
