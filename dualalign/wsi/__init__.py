"""Whole-slide tooling: read slides, tile them, mask tissue, merge tile detections."""

from .merge import (
    covered_by_complete,
    drop_covered_truncated,
    merge_detections,
    offset_boxes,
    overlapping_pairs,
    tiled_nms,
    touches_inner_edge,
)
from .reader import (
    SlideReader,
    SlideReadError,
    best_level_for_downsample,
    level_for_magnification,
    open_slide,
)
from .synthetic_slide import make_synthetic_slide, write_pyramidal_tiff
from .tiling import tile_grid, tile_origins_level0, tile_starts
from .tissue import select_tissue_tiles, tile_tissue_fraction, tissue_mask, tissue_signal

__all__ = [
    "SlideReadError",
    "SlideReader",
    "best_level_for_downsample",
    "covered_by_complete",
    "drop_covered_truncated",
    "level_for_magnification",
    "make_synthetic_slide",
    "merge_detections",
    "offset_boxes",
    "open_slide",
    "overlapping_pairs",
    "select_tissue_tiles",
    "tile_grid",
    "tile_origins_level0",
    "tile_starts",
    "tile_tissue_fraction",
    "tiled_nms",
    "tissue_mask",
    "tissue_signal",
    "touches_inner_edge",
    "write_pyramidal_tiff",
]
