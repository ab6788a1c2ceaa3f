"""Synthetic slides for tests and demos: an RGB image, a pyramidal TIFF writer, and a
streaming writer for slides too large to hold in memory.

The TIFF layout is the one OpenSlide's ``generic-tiff`` driver reads as a pyramid: each level a
separate page (not a SubIFD), tiled, lossless zlib, reduced levels flagged ``subfiletype=1``.
"""

import os
from typing import Iterator, Optional, Sequence, Tuple, Union

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


def write_large_synthetic_slide(
    path: Union[str, os.PathLike],
    width: int,
    height: int,
    tissue_boxes: Sequence[Tuple[int, int, int, int]],
    cells: np.ndarray,
    levels: int = 4,
    tile: int = 256,
    seed: int = 0,
) -> str:
    """Write a pyramidal TIFF tile by tile, never holding a level in memory.

    A tile that meets a tissue box is a textured stain patch (a few are reused: enough for the
    tissue mask, and fast to write), any other is glass; each cell is a black square, drawn at
    every level at its scaled place and size.

    Args:
        path (str): output file (``.tif``; BigTIFF).
        width (int): level-0 width in pixels.
        height (int): level-0 height in pixels.
        tissue_boxes (list of (x0, y0, x1, y1)): tissue regions, level-0 pixels.
        cells (np.ndarray[N, 4]): XYXY black squares, level-0 pixels.
        levels (int): number of levels; level ``k`` is level 0 divided by ``2**k``.
        tile (int): tile side in pixels, a multiple of 16.
        seed (int): randomness of the stain patches.

    Returns:
        str: ``path``.
    """
    if tile % 16:
        raise ValueError(f"TIFF tile size must be a multiple of 16, got {tile}")
    rng = np.random.default_rng(seed)
    patches = [make_synthetic_slide(rng, tile, tile, [(0, 0, tile, tile)]) for _ in range(8)]
    tissue = np.asarray(tissue_boxes, dtype=np.float64).reshape(-1, 4)
    cells = np.asarray(cells, dtype=np.float64).reshape(-1, 4)
    path = os.fspath(path)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in range(levels):
            ds = 2**level
            size = (max(1, height // ds), max(1, width // ds))
            tif.write(
                _synthetic_tiles(size, tile, ds, tissue, cells, patches, rng),
                shape=(*size, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression="zlib",
                compressionargs={"level": 1},  # fast: the noise hardly compresses anyway
                photometric="rgb",
                subfiletype=1 if level else 0,
                metadata=None,
            )
    return path


def _synthetic_tiles(size, tile, ds, tissue, cells, patches, rng) -> Iterator[np.ndarray]:
    """The tiles of one level, row by row (what ``TiffWriter.write`` takes for tiled pages)."""
    height, width = size
    glass = np.full((tile, tile, 3), 245, np.uint8)
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            x0, y0, x1, y1 = x * ds, y * ds, (x + tile) * ds, (y + tile) * ds  # level 0
            inside = (
                (tissue[:, 0] < x1)
                & (tissue[:, 2] > x0)
                & (tissue[:, 1] < y1)
                & (tissue[:, 3] > y0)
            )
            if not inside.any():
                yield glass
                continue
            out = patches[int(rng.integers(len(patches)))].copy()  # tissue, tile by tile
            hit = (cells[:, 0] < x1) & (cells[:, 2] > x0) & (cells[:, 1] < y1) & (cells[:, 3] > y0)
            for cx0, cy0, cx1, cy1 in cells[hit] / ds:
                out[
                    max(0, int(cy0) - y) : max(0, int(np.ceil(cy1)) - y),
                    max(0, int(cx0) - x) : max(0, int(np.ceil(cx1)) - x),
                ] = 0
            yield out
