"""Tissue masking and slide reading on a synthetic 2048x1536 slide with known tissue boxes.

The slide is written as a 3-level pyramidal TIFF (OpenSlide's generic-tiff) and as a PNG (the
in-memory fallback reader); both must give the same pixels.
"""

import cv2
import numpy as np
import pytest
import tifffile

from dualalign.wsi.reader import SlideReadError, level_for_magnification, open_slide
from dualalign.wsi.synthetic_slide import make_synthetic_slide, write_pyramidal_tiff
from dualalign.wsi.tiling import tile_grid
from dualalign.wsi.tissue import select_tissue_tiles, tile_tissue_fraction, tissue_mask

WIDTH, HEIGHT, THUMB = 2048, 1536, 512  # thumbnail at downsample 4
TISSUE_BOXES = [(200, 150, 700, 600), (1200, 300, 1900, 900), (400, 1000, 1000, 1400)]


def _boxes_mask(width, height, boxes, downsample=1):
    mask = np.zeros((height // downsample, width // downsample), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0 // downsample : y1 // downsample, x0 // downsample : x1 // downsample] = True
    return mask


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """(level-0 RGB image, pyramidal TIFF path, PNG path)."""
    folder = tmp_path_factory.mktemp("slide")
    image = make_synthetic_slide(np.random.default_rng(0), WIDTH, HEIGHT, TISSUE_BOXES)
    tif = write_pyramidal_tiff(folder / "slide.tif", image, levels=3, tile=256, mpp=0.25)
    png = str(folder / "slide.png")
    cv2.imwrite(png, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return image, tif, png


def test_mask_covers_tissue_and_little_else(slide):
    image = slide[0]
    thumb = cv2.resize(image, (THUMB, THUMB * HEIGHT // WIDTH), interpolation=cv2.INTER_AREA)
    mask, threshold = tissue_mask(thumb)
    truth = _boxes_mask(WIDTH, HEIGHT, TISSUE_BOXES, downsample=4)
    assert mask.shape == truth.shape and mask.dtype == bool
    assert _iou(mask, truth) > 0.8
    assert (mask & ~truth).sum() < 0.02 * truth.sum()
    assert 25 <= threshold < 255


def test_fixed_threshold_and_blank_slide():
    rng = np.random.default_rng(1)
    blank = make_synthetic_slide(rng, 400, 300, [])
    mask, threshold = tissue_mask(blank)
    assert not mask.any() and threshold >= 25  # Otsu on glass noise is floored
    stained = make_synthetic_slide(rng, 400, 300, [(100, 100, 300, 200)])
    mask, threshold = tissue_mask(stained, threshold=250.0)
    assert threshold == 250.0 and mask.mean() < 0.01
    mask, _ = tissue_mask(stained, threshold=30.0)
    assert _iou(mask, _boxes_mask(400, 300, [(100, 100, 300, 200)])) > 0.9


def test_tile_tissue_fraction_small_cases():
    mask = np.zeros((10, 10), dtype=bool)
    mask[:, :5] = True  # left half
    tiles = np.array([[0, 0, 10, 10], [10, 0, 20, 20], [-10, 0, 10, 20], [10, 10, 30, 30]])
    fraction = tile_tissue_fraction(mask, tiles, 0.5)
    np.testing.assert_allclose(fraction, [1.0, 0.0, 0.5, 0.0])
    np.testing.assert_allclose(tile_tissue_fraction(mask, tiles[:1], (0.25, 0.5)), [1.0])
    np.testing.assert_array_equal(select_tissue_tiles(mask, tiles, 0.5, min_fraction=0.5), [0, 2])


def test_tile_tissue_fraction_matches_brute_force():
    rng = np.random.default_rng(2)
    mask = rng.random((64, 80)) < 0.3
    tiles = tile_grid(80, 64, 16, 4)
    expected = [mask[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in tiles]
    np.testing.assert_allclose(tile_tissue_fraction(mask, tiles, 1.0), expected)


def test_pyramidal_tiff_opens_with_openslide(slide):
    image, tif, _ = slide
    with open_slide(tif) as reader:
        assert reader.backend == "openslide" and reader.vendor == "generic-tiff"
        assert reader.level_count == 3
        assert reader.level_dimensions == [(2048, 1536), (1024, 768), (512, 384)]
        np.testing.assert_allclose(reader.level_downsamples, [1, 2, 4])
        assert reader.mpp == pytest.approx(0.25)
        region = reader.read_region(300, 200, 0, 640, 480)
        assert region.dtype == np.uint8 and region.shape == (480, 640, 3)
        np.testing.assert_array_equal(region, image[200:680, 300:940])  # lossless zlib
        level1 = cv2.resize(image, (1024, 768), interpolation=cv2.INTER_AREA)
        region1 = reader.read_region(512, 256, 1, 100, 80)  # origin in level-0 pixels
        np.testing.assert_array_equal(region1, level1[128:208, 256:356])
        assert level_for_magnification(reader, target_mpp=0.5) == 1
        assert level_for_magnification(reader, target_mpp=0.7) == 1
        assert level_for_magnification(reader, target_mpp=5.0) == 2
        assert level_for_magnification(reader, target_mpp=0.1) == 0
        assert level_for_magnification(reader, downsample=4.0) == 2
        with pytest.raises(ValueError):
            level_for_magnification(reader)


def test_png_fallback_matches_openslide(slide):
    _, tif, png = slide
    with open_slide(tif) as wsi, open_slide(png) as plain:
        assert plain.backend == "array" and plain.level_count == 1
        assert plain.level_dimensions == [(WIDTH, HEIGHT)] and plain.mpp is None
        for x0, y0 in [(100, 50), (2000, 1500), (-30, -20)]:  # inside, past the edge, before
            a, b = wsi.read_region(x0, y0, 0, 96, 64), plain.read_region(x0, y0, 0, 96, 64)
            np.testing.assert_array_equal(a, b)
        edge = plain.read_region(2000, 1500, 0, 96, 64)
        assert (edge[36:] == 255).all() and (edge[:, 48:] == 255).all()
        thumb_a, thumb_b = wsi.thumbnail(THUMB), plain.thumbnail(THUMB)
        assert thumb_a.shape == thumb_b.shape == (384, 512, 3)
        assert np.abs(thumb_a.astype(int) - thumb_b.astype(int)).mean() < 2.0
        with pytest.raises(ValueError, match="no microns-per-pixel"):
            level_for_magnification(plain, target_mpp=0.5)
        with pytest.raises(ValueError, match="level"):
            plain.read_region(0, 0, 1, 10, 10)


def test_select_tissue_tiles_on_slide(slide):
    _, tif, _ = slide
    with open_slide(tif) as reader:
        thumb = reader.thumbnail(THUMB)
    mask, _ = tissue_mask(thumb)
    tiles = tile_grid(WIDTH, HEIGHT, 256, 32)
    chosen = select_tissue_tiles(mask, tiles, THUMB / WIDTH, min_fraction=0.05)
    truth = tile_tissue_fraction(_boxes_mask(WIDTH, HEIGHT, TISSUE_BOXES), tiles, 1.0)
    estimate = tile_tissue_fraction(mask, tiles, THUMB / WIDTH)
    assert np.abs(estimate - truth).max() < 0.05
    assert set(np.flatnonzero(truth >= 0.1)) <= set(chosen.tolist())
    assert not set(np.flatnonzero(truth == 0)) & set(chosen.tolist())
    assert 0 < len(chosen) < len(tiles)


def test_plain_tiff_rejected_by_openslide_uses_tifffile(tmp_path):
    image = make_synthetic_slide(np.random.default_rng(3), 300, 200, [(50, 50, 150, 150)])
    path = str(tmp_path / "strips.tif")  # untiled: OpenSlide's generic-tiff refuses it
    tifffile.imwrite(
        path, image, photometric="rgb", resolution=(2e4, 2e4), resolutionunit="CENTIMETER"
    )
    with open_slide(path) as reader:
        assert reader.backend == "array" and reader.mpp == pytest.approx(0.5)
        np.testing.assert_array_equal(reader.read_region(0, 0, 0, 300, 200), image)


@pytest.mark.parametrize("name", ["broken.svs", "broken.png", "truncated.tif", "missing.tif"])
def test_unreadable_file_raises_slide_read_error(slide, tmp_path, name):
    path = tmp_path / name
    if name == "truncated.tif":
        with open(slide[1], "rb") as f:
            path.write_bytes(f.read()[:50_000])
    elif name != "missing.tif":
        path.write_bytes(b"not an image " * 100)
    with pytest.raises(SlideReadError, match=name) as info:
        open_slide(path)
    assert isinstance(info.value, IOError) and info.value.path == str(path)


def test_thumbnail_read_in_bands_matches_one_read(slide, monkeypatch):
    from dualalign.wsi import reader as reader_module

    _, _, png = slide
    with open_slide(png) as plain:
        whole = plain.thumbnail((300, 300))
        monkeypatch.setattr(reader_module, "_MAX_BAND_PIXELS", 50 * WIDTH)  # ~7 bands
        banded = plain.thumbnail((300, 300))
    assert whole.shape == banded.shape == (225, 300, 3)
    assert np.abs(whole.astype(int) - banded.astype(int)).mean() < 1.0
