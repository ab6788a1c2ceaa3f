"""Inference on images and whole slides: a batched predictor and tiled slide detection.

Used by ``scripts/predict.py`` (detections, overlays, per-slide counts) and
``scripts/mine_unlabeled.py`` (the unlabelled pool: tissue patches the detector flags).
"""

from .inputs import expand_inputs, input_kind
from .predictor import BatchPredictor, resolve_class_names
from .slide_inference import (
    TileSelection,
    detect_slide,
    instances_to_arrays,
    iter_tile_predictions,
    select_tiles,
)

__all__ = [
    "BatchPredictor",
    "TileSelection",
    "detect_slide",
    "expand_inputs",
    "input_kind",
    "instances_to_arrays",
    "iter_tile_predictions",
    "resolve_class_names",
    "select_tiles",
]
