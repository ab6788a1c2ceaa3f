"""detect_slide on a synthetic pyramidal TIFF with a fake detector that finds black markers.

The marker straddles the border between two tiles: the left tile sees a sliver of it (IoU with
the whole box ~0.3, below the NMS threshold), the right tile sees it whole. One detection must
come out, at the marker's level-0 box, on level 0 and on level 1. Tiles on glass are not run.
"""

import numpy as np
import pytest

from dualalign.inference.slide_inference import detect_slide, select_tiles
from dualalign.wsi.reader import open_slide
from dualalign.wsi.synthetic_slide import make_synthetic_slide, write_pyramidal_tiff

from .conftest import MarkerDetector

WIDTH, HEIGHT = 1024, 768
TISSUE = (0, 0, 560, 768)  # tissue on the left; glass from x = 560
BORDER_CELL = (240, 100, 290, 150)  # level 0; tile columns [0, 256) and [192, 448) at level 0
GLASS_CELL = (900, 600, 920, 620)  # a marker on glass: its tile is skipped, so never found


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    image = make_synthetic_slide(np.random.default_rng(0), WIDTH, HEIGHT, [TISSUE])
    for x0, y0, x1, y1 in (BORDER_CELL, GLASS_CELL):
        image[y0:y1, x0:x1] = 0
    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    return write_pyramidal_tiff(path, image, levels=2, tile=256)


@pytest.mark.parametrize("level, tile_size, overlap", [(0, 256, 64), (1, 128, 32)])
def test_border_cell_gives_one_detection_in_level0(slide_path, level, tile_size, overlap):
    detector = MarkerDetector()
    with open_slide(slide_path) as reader:
        assert reader.backend == "openslide" and reader.level_count == 2
        result = detect_slide(
            detector,
            reader,
            level=level,
            tile_size=tile_size,
            overlap=overlap,
            batch_size=3,
            progress=False,
        )
    # The border cell was seen by two tiles (one cut, one whole) and merged into one box.
    assert result["tile_num_detections"].sum() == 2
    assert len(result["boxes"]) == 1
    np.testing.assert_allclose(result["boxes"][0], BORDER_CELL, atol=level + 0.5)
    assert result["classes"].tolist() == [2] and result["scores"][0] == pytest.approx(0.9)
    assert result["downsample"] == 2.0 ** level and result["slide_size"] == (WIDTH, HEIGHT)
    assert all(shape == (tile_size, tile_size, 3) for shape in detector.seen)


def test_glass_tiles_are_skipped(slide_path):
    detector = MarkerDetector()
    with open_slide(slide_path) as reader:
        result = detect_slide(detector, reader, level=0, tile_size=256, overlap=64, progress=False)
    tiles, selected = result["tiles"], result["selected"]
    on_tissue = np.flatnonzero(tiles[:, 0] < TISSUE[2])
    np.testing.assert_array_equal(selected, on_tissue)  # exactly the tiles touching tissue
    assert len(detector.seen) == len(selected) < len(tiles)
    np.testing.assert_array_equal(result["tile_origins"], tiles[:, :2])  # level 0: same frame


def test_min_tissue_zero_runs_every_tile(slide_path):
    with open_slide(slide_path) as reader:
        selection = select_tiles(reader, 1, 128, 32, min_tissue=0)
        assert len(selection.selected) == len(selection.tiles)
        with pytest.raises(ValueError, match="level 2 does not exist"):
            select_tiles(reader, 2, 128, 32)
