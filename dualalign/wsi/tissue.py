"""Tissue (cell) masks on a slide thumbnail, and the tissue fraction of each tile.

A Pap smear is bright, unsaturated glass with scattered stained cells: Papanicolaou stains
make cytoplasm pink/orange or blue-green (saturated, not always dark) and nuclei dark blue
(dark, not always saturated). Either cue alone misses one of the two, so the per-pixel signal
is ``max(255 - grey, saturation)``: glass is low on both, every stained structure is high on
at least one. Otsu's method then splits the signal's histogram into glass and cells.

The mask is deliberately permissive (small morphological kernels, a tiny minimum component
area): a false positive costs one tile of inference, a false negative can lose an abnormal cell.
"""

from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

Scale = Union[float, Sequence[float]]


def tissue_signal(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel stain signal ``max(255 - grey, HSV saturation)``.

    Args:
        rgb (np.ndarray[H, W, 3] uint8): RGB image, background white.

    Returns:
        np.ndarray[H, W] uint8: 0 for white glass, high for stained material.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    darkness = 255 - cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    return np.maximum(darkness, saturation)


def tissue_mask(
    thumbnail_rgb: np.ndarray,
    threshold: Optional[float] = None,
    min_area_fraction: float = 1e-5,
    min_threshold: float = 25.0,
    close_size: int = 5,
    open_size: int = 3,
) -> Tuple[np.ndarray, float]:
    """Foreground (cells / tissue) mask of a low-resolution slide image.

    Steps: stain signal (``tissue_signal``), 3x3 median blur against speckle, threshold
    (Otsu unless given), morphological close (joins a cell's nucleus and cytoplasm and nearby
    cells) then open (drops isolated specks), then removal of connected components smaller
    than ``min_area_fraction`` of the image.

    Args:
        thumbnail_rgb (np.ndarray[H, W, 3] uint8): a low level or ``reader.thumbnail(...)``;
            about 4 to 16 microns per pixel suits the default kernel sizes.
        threshold (float or None): fixed threshold on the signal (0..255), overriding Otsu.
        min_area_fraction (float): components with fewer pixels than this fraction of
            ``H * W`` are removed; 0 keeps all.
        min_threshold (float): floor for the Otsu threshold, so a blank slide (glass only,
            whose histogram is pure noise) gives an empty mask rather than noise.
        close_size (int): elliptical closing kernel side in pixels (0 or 1 skips it).
        open_size (int): elliptical opening kernel side in pixels (0 or 1 skips it).

    Returns:
        tuple: ``mask`` (np.ndarray[H, W] bool, True on tissue) and ``threshold_used``
        (float, pixels with signal strictly above it are tissue before the morphology).
    """
    signal = cv2.medianBlur(tissue_signal(thumbnail_rgb), 3)
    if threshold is None:
        otsu, _ = cv2.threshold(signal, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        threshold = max(float(otsu), float(min_threshold))
    mask = (signal > threshold).astype(np.uint8)
    for size, op in ((close_size, cv2.MORPH_CLOSE), (open_size, cv2.MORPH_OPEN)):
        if size > 1:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
            mask = cv2.morphologyEx(mask, op, kernel)
    min_area = min_area_fraction * mask.size
    if min_area > 1:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= min_area
        keep[0] = False  # label 0 is the background
        mask = keep[labels].astype(np.uint8)
    return mask.astype(bool), float(threshold)


def tile_tissue_fraction(mask: np.ndarray, tiles: np.ndarray, scale: Scale) -> np.ndarray:
    """Fraction of each tile covered by tissue, from integral-image lookups.

    Args:
        mask (np.ndarray[H, W] bool): tissue mask (``tissue_mask``).
        tiles (np.ndarray[N, 4]): ``(x0, y0, x1, y1)`` in some pixel frame (e.g. the tiled
            level's, or level 0's).
        scale (float or (float, float)): mask pixels per tile-frame pixel, ``(sx, sy)`` or one
            value for both, e.g. ``mask_width / level_width``.

    Returns:
        np.ndarray[N] float64 in [0, 1]: tissue pixels inside the tile over the tile's area
        (at least one mask pixel); the part of a tile past the mask's edge counts as glass.
    """
    mask = np.asarray(mask, dtype=bool)
    tiles = np.asarray(tiles, dtype=np.float64).reshape(-1, 4)
    sx, sy = (scale, scale) if np.isscalar(scale) else scale
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)
    integral[1:, 1:] = mask.cumsum(axis=0, dtype=np.int64).cumsum(axis=1)

    x0 = np.rint(tiles[:, 0] * sx).astype(np.int64)
    y0 = np.rint(tiles[:, 1] * sy).astype(np.int64)
    x1 = np.maximum(np.rint(tiles[:, 2] * sx).astype(np.int64), x0 + 1)
    y1 = np.maximum(np.rint(tiles[:, 3] * sy).astype(np.int64), y0 + 1)
    area = (x1 - x0) * (y1 - y0)
    cx0, cx1 = np.clip(x0, 0, w), np.clip(x1, 0, w)
    cy0, cy1 = np.clip(y0, 0, h), np.clip(y1, 0, h)
    inside = integral[cy1, cx1] - integral[cy0, cx1] - integral[cy1, cx0] + integral[cy0, cx0]
    return inside / area


def select_tissue_tiles(
    mask: np.ndarray, tiles: np.ndarray, scale: Scale, min_fraction: float = 0.05
) -> np.ndarray:
    """Indices of the tiles worth running the detector on.

    Args:
        mask (np.ndarray[H, W] bool): tissue mask.
        tiles (np.ndarray[N, 4]): ``(x0, y0, x1, y1)`` tiles (see ``tile_tissue_fraction``).
        scale (float or (float, float)): mask pixels per tile-frame pixel.
        min_fraction (float): keep tiles whose tissue fraction is at least this (> 0 to skip
            empty glass; 0 keeps every tile).

    Returns:
        np.ndarray[K] int64: indices into ``tiles``, increasing (row-major order kept).
    """
    fraction = tile_tissue_fraction(mask, tiles, scale)
    return np.flatnonzero(fraction >= min_fraction).astype(np.int64)
