"""Tile grids over a slide level: pure geometry, no pixels.

A slide level is covered by square tiles of ``tile_size`` pixels that overlap by ``overlap``
pixels, so that a cell cut by one tile's border is seen whole by its neighbour (the merge step
then removes the duplicate). The last row and column are shifted back to end exactly at the
image edge, so no tile is partial unless the image itself is smaller than one tile.
"""

from typing import Union

import numpy as np


def tile_starts(length: int, tile_size: int, overlap: int) -> np.ndarray:
    """Start offsets of the tiles along one axis.

    Args:
        length (int): size of the axis in pixels, >= 1.
        tile_size (int): tile side in pixels, >= 1.
        overlap (int): overlap between consecutive tiles in pixels, 0 <= overlap < tile_size.

    Returns:
        np.ndarray[K] int64: increasing starts. Consecutive starts differ by at most
        ``tile_size - overlap``; the last start is ``length - tile_size`` when
        ``length > tile_size`` (so the last tile ends at the edge), else the only start is 0.
    """
    _check_geometry(tile_size, overlap)
    if length < 1:
        raise ValueError(f"axis length must be >= 1 pixel, got {length}")
    if length <= tile_size:
        return np.zeros(1, dtype=np.int64)
    last = length - tile_size
    starts = np.arange(0, last + 1, tile_size - overlap, dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, np.int64(last))
    return starts


def tile_grid(width: int, height: int, tile_size: int, overlap: int = 0) -> np.ndarray:
    """Overlapping tiles covering a ``width`` x ``height`` image, in row-major order.

    Args:
        width (int): image width in pixels of the level being tiled.
        height (int): image height in pixels of the level being tiled.
        tile_size (int): tile side in pixels.
        overlap (int): overlap in pixels between neighbouring tiles; the stride is
            ``tile_size - overlap``. The shifted last row/column overlaps its neighbour by more.

    Returns:
        np.ndarray[N, 4] int64: tiles as ``(x0, y0, x1, y1)`` with ``x1 - x0 == y1 - y0 ==
        tile_size``, in the level's pixel coordinates, ordered by row (y0) then column (x0).
        Every tile lies inside the image, except along an axis shorter than ``tile_size``,
        where the single tile starts at 0 and runs past the edge (the reader pads it white).

    Raises:
        ValueError: if ``overlap < 0``, ``overlap >= tile_size``, ``tile_size < 1`` or the image
            is empty.
    """
    xs = tile_starts(width, tile_size, overlap)
    ys = tile_starts(height, tile_size, overlap)
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")  # [Ky, Kx], row-major after ravel
    x0, y0 = x0.ravel(), y0.ravel()
    return np.stack([x0, y0, x0 + tile_size, y0 + tile_size], axis=1)


def tile_origins_level0(tiles: np.ndarray, downsample: Union[float, int]) -> np.ndarray:
    """Level-0 origins of tiles laid out on a level with the given downsample.

    ``SlideReader.read_region`` takes its origin in level-0 pixels, as OpenSlide does.

    Args:
        tiles (np.ndarray[N, 4]): ``(x0, y0, x1, y1)`` in the level's pixel coordinates.
        downsample (float): level-0 pixels per level pixel (``reader.level_downsamples[level]``).

    Returns:
        np.ndarray[N, 2] int64: ``(x0, y0)`` of each tile in level-0 pixels, rounded to the
        nearest pixel (pyramid downsamples such as 4.0003 are not exact integers).
    """
    if downsample <= 0:
        raise ValueError(f"downsample must be > 0, got {downsample}")
    tiles = np.asarray(tiles)
    if tiles.ndim != 2 or tiles.shape[1] != 4:
        raise ValueError(f"tiles must have shape [N, 4], got {tiles.shape}")
    return np.rint(tiles[:, :2].astype(np.float64) * float(downsample)).astype(np.int64)


def _check_geometry(tile_size: int, overlap: int) -> None:
    """Raise ValueError unless ``tile_size >= 1`` and ``0 <= overlap < tile_size``."""
    if tile_size < 1:
        raise ValueError(f"tile_size must be >= 1 pixel, got {tile_size}")
    if overlap < 0 or overlap >= tile_size:
        raise ValueError(
            f"overlap must satisfy 0 <= overlap < tile_size ({tile_size}), got {overlap}; "
            "the stride tile_size - overlap must be positive"
        )
