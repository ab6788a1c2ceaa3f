"""Tile grid geometry: stride, full coverage, flush last tiles, small images, bad overlaps."""

import numpy as np
import pytest

from dualalign.wsi.tiling import tile_grid, tile_origins_level0, tile_starts


def _coverage(tiles, width, height):
    """Number of tiles covering each pixel, [height, width]."""
    count = np.zeros((height, width), dtype=np.int32)
    for x0, y0, x1, y1 in tiles:
        count[y0:y1, x0:x1] += 1
    return count


def test_stride_is_tile_size_minus_overlap():
    starts = tile_starts(1000, 256, 32)
    np.testing.assert_array_equal(starts, [0, 224, 448, 672, 744])
    tiles = tile_grid(1000, 256, 256, 32)
    np.testing.assert_array_equal(tiles[:, 0], [0, 224, 448, 672, 744])
    assert (tiles[:, 1] == 0).all() and (tiles[:, 3] == 256).all()


def test_no_overlap_exact_multiple_gives_disjoint_tiles():
    tiles = tile_grid(768, 512, 256, 0)
    assert len(tiles) == 6
    assert (_coverage(tiles, 768, 512) == 1).all()


@pytest.mark.parametrize("width,height", [(1001, 517), (2048, 1536), (257, 1000), (300, 256)])
def test_tiles_cover_every_pixel_and_stay_inside(width, height):
    tile, overlap = 256, 32
    tiles = tile_grid(width, height, tile, overlap)
    assert tiles.dtype == np.int64 and tiles.shape[1] == 4
    assert (tiles[:, 2] - tiles[:, 0] == tile).all() and (tiles[:, 3] - tiles[:, 1] == tile).all()
    assert tiles[:, :2].min() >= 0
    assert tiles[:, 2].max() == width and tiles[:, 3].max() == height  # last tiles flush
    assert (tiles[:, 2] <= width).all() and (tiles[:, 3] <= height).all()
    assert (_coverage(tiles, width, height) >= 1).all()


def test_odd_size_grid_exact():
    tiles = tile_grid(1001, 517, 256, 32)
    xs, ys = np.unique(tiles[:, 0]), np.unique(tiles[:, 1])
    np.testing.assert_array_equal(xs, [0, 224, 448, 672, 745])
    np.testing.assert_array_equal(ys, [0, 224, 261])
    assert len(tiles) == 15
    steps = np.diff(xs)
    assert (steps[:-1] == 224).all() and 0 < steps[-1] <= 224


def test_row_major_order():
    tiles = tile_grid(1001, 517, 256, 32)
    keys = tiles[:, 1] * 10_000 + tiles[:, 0]
    assert (np.diff(keys) > 0).all()
    np.testing.assert_array_equal(tiles[:5, 1], 0)


def test_image_smaller_than_tile_gives_one_padded_tile():
    np.testing.assert_array_equal(tile_grid(100, 50, 256, 32), [[0, 0, 256, 256]])
    np.testing.assert_array_equal(tile_grid(256, 256, 256, 32), [[0, 0, 256, 256]])
    tiles = tile_grid(1000, 100, 256, 32)  # short along y only
    assert (tiles[:, 1] == 0).all() and (tiles[:, 3] == 256).all()
    assert tiles[-1, 2] == 1000


@pytest.mark.parametrize("overlap", [-1, 256, 300])
def test_invalid_overlap_raises(overlap):
    with pytest.raises(ValueError, match="overlap"):
        tile_grid(1000, 1000, 256, overlap)


def test_invalid_sizes_raise():
    with pytest.raises(ValueError, match="tile_size"):
        tile_grid(1000, 1000, 0, 0)
    with pytest.raises(ValueError, match="length"):
        tile_grid(0, 1000, 256, 0)


def test_origins_level0():
    tiles = tile_grid(1001, 517, 256, 32)
    np.testing.assert_array_equal(tile_origins_level0(tiles, 4), tiles[:, :2] * 4)
    origins = tile_origins_level0(np.array([[3, 5, 259, 261]]), 4.0003)
    np.testing.assert_array_equal(origins, [[12, 20]])
    assert origins.dtype == np.int64
    with pytest.raises(ValueError):
        tile_origins_level0(tiles, 0)
