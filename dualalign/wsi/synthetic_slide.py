"""Small synthetic slides for tests and demos: an RGB image and a pyramidal TIFF writer.

The TIFF layout is the one OpenSlide's ``generic-tiff`` driver reads as a pyramid: each level a
separate page (not a SubIFD), tiled, lossless zlib, reduced levels flagged ``subfiletype=1``.
"""

import os
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import tifffile

# Papanicolaou stain colours (RGB): cyanophilic and eosinophilic cytoplasm, orange keratin.
_CYTOPLASM_COLOURS = ((120, 185, 190), (225, 140, 165), (230, 165, 110))
_NUCLEUS_COLOUR = (60, 50, 120)


def make_synthetic_slide(
    rng: np.random.Generator,
    width: int,
    height: int,
    tissue_boxes: Sequence[Tuple[int, int, int, int]],
) -> np.ndarray:
    """White glass with textured, stained rectangles where the tissue is.

    Args:
        rng (np.random.Generator): randomness (texture, colours, nuclei).
        width (int): image width in pixels.
        height (int): image height in pixels.
        tissue_boxes (list of (x0, y0, x1, y1)): tissue regions in pixels; each is filled
            completely, so the union of the boxes is the exact ground-truth tissue mask.

    Returns:
        np.ndarray[height, width, 3] uint8 RGB: glass is near-white grey noise (235..255,
        unsaturated); tissue is a stain colour modulated by smooth noise, with dark nuclei.
    """
    glass = rng.integers(235, 256, size=(height, width, 1), dtype=np.uint8)
    image = np.repeat(glass, 3, axis=2)
    for x0, y0, x1, y1 in tissue_boxes:
        w, h = x1 - x0, y1 - y0
        colour = np.array(_CYTOPLASM_COLOURS[rng.integers(len(_CYTOPLASM_COLOURS))], np.float32)
        coarse = rng.uniform(0.8, 1.1, size=(max(2, h // 32), max(2, w // 32))).astype(np.float32)
        shading = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
        grain = rng.normal(0.0, 6.0, size=(h, w, 3)).astype(np.float32)
        patch = np.clip(colour * shading + grain, 0, 255).astype(np.uint8)
        for _ in range(max(1, w * h // 4000)):  # nuclei, a few pixels across
            centre = (int(rng.integers(w)), int(rng.integers(h)))
            cv2.circle(patch, centre, int(rng.integers(3, 7)), _NUCLEUS_COLOUR, thickness=-1)
        image[y0:y1, x0:x1] = patch
    return image


def write_pyramidal_tiff(
    path: Union[str, os.PathLike],
    image_rgb: np.ndarray,
    levels: int = 3,
    tile: int = 256,
    mpp: Optional[float] = 0.25,
) -> str:
    """Write an RGB image as a tiled pyramidal TIFF that OpenSlide opens (``generic-tiff``).

    Args:
        path (str): output file (``.tif``).
        image_rgb (np.ndarray[H, W, 3] uint8): level 0.
        levels (int): number of levels; level ``k`` is level ``k-1`` halved (cv2.INTER_AREA,
            sizes floored).
        tile (int): tile side in pixels, a multiple of 16 (TIFF requirement).
        mpp (float or None): microns per pixel at level 0, stored as X/YResolution in pixels
            per centimetre (OpenSlide reports it as ``openslide.mpp-x``); None stores none.

    Returns:
        str: ``path``.
    """
    if tile % 16:
        raise ValueError(f"TIFF tile size must be a multiple of 16, got {tile}")
    path = os.fspath(path)
    level = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    with tifffile.TiffWriter(path, bigtiff=level.nbytes > 2**31) as tif:
        for index in range(levels):
            extra = {}
            if mpp:
                per_cm = 1e4 / (mpp * 2**index)
                extra = dict(resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
            tif.write(
                level,
                tile=(tile, tile),
                compression="zlib",
                photometric="rgb",
                subfiletype=1 if index else 0,
                metadata=None,
                **extra,
            )
            if index + 1 < levels:
                h, w = level.shape[:2]
                size = (max(1, w // 2), max(1, h // 2))
                level = cv2.resize(level, size, interpolation=cv2.INTER_AREA)
    return path
