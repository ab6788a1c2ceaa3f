"""write_large_synthetic_slide: a pyramid OpenSlide reads, written tile by tile; gallery crops of
large boxes come from a coarser level of it."""

import numpy as np

from dualalign.report.gallery import crop_detection
from dualalign.wsi.reader import open_slide
from dualalign.wsi.synthetic_slide import write_large_synthetic_slide


def test_pyramid_with_tissue_glass_and_cells(tmp_path):
    cells = np.array([[300.0, 200.0, 340.0, 240.0], [1500.0, 900.0, 1516.0, 916.0]])
    path = write_large_synthetic_slide(
        tmp_path / "s.tif", 2000, 1200, [(0, 0, 1024, 1200), (1280, 768, 1800, 1100)], cells, 3
    )
    with open_slide(path) as reader:
        assert reader.backend == "openslide" and reader.level_count == 3
        assert reader.level_dimensions == [(2000, 1200), (1000, 600), (500, 300)]
        for level, ds in enumerate((1, 2, 4)):
            x0, y0, x1, y1 = (cells[0] / ds).astype(int)
            cell = reader.read_region(300, 200, level, x1 - x0, y1 - y0)
            assert (cell < 30).all()  # the square, at every level
        tissue = reader.read_region(600, 600, 0, 64, 64)
        glass = reader.read_region(1100, 100, 0, 64, 64)
        assert tissue.std() > 5 and (glass == 245).all()
        assert (reader.read_region(1500, 900, 0, 16, 16) < 30).all()  # a cell in the 2nd box
        # A large box's crop is read from a coarser level, at the display size.
        crop = crop_detection(reader, [0, 0, 1000, 1000], (255, 0, 0))
        assert crop.shape == (256, 256, 3)
        small = crop_detection(reader, cells[0], (255, 0, 0))
        assert small.shape == (80, 80, 3) and (small[36:44, 36:44] < 30).all()  # level 0
