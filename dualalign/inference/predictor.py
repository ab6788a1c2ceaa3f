"""``BatchPredictor``: detectron2's ``DefaultPredictor`` for a batch of RGB images.

It differs from ``DefaultPredictor`` in three ways only: it takes several images per forward
pass, it takes RGB arrays (what slide readers return) and converts them to
``cfg.INPUT.FORMAT``, and it loads weights with the project's checkpointer
(``Trainer.build_checkpointer``: safe ``.pth`` loading, clear errors for a missing file).
"""

import json
import logging
from typing import List, Optional, Sequence

import detectron2.data.transforms as T
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Instances

from ..engine.trainer import Trainer

logger = logging.getLogger(__name__)

__all__ = ["BatchPredictor", "CheckpointMismatchError", "load_strict", "resolve_class_names"]
_MAX_NAMED = 3  # parameter names quoted in a mismatch error


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model built from the config."""


class BatchPredictor:
    """Eval-mode model plus the test-time resize of a config.

    Attributes:
        cfg (CfgNode): the frozen config actually used (``MODEL.DEVICE`` resolved).
        model (nn.Module): the detector, in eval mode, on ``device``.
        device (torch.device): where the model runs.
        class_names (list[str]): names indexed by predicted class id.
        batch_size (int): default number of images per forward pass.
    """

    def __init__(
        self,
        cfg,
        weights: Optional[str] = None,
        class_names: Optional[Sequence[str]] = None,
        batch_size: int = 4,
    ):
        """
        Args:
            cfg (CfgNode): a config from ``dualalign.engine.setup.build_cfg``.
            weights (str or None): checkpoint (``.pth`` / ``.pkl`` / model-zoo URL); None uses
                ``cfg.MODEL.WEIGHTS``; "" keeps the random initialisation (tests only).
            class_names (list[str] or None): overrides ``resolve_class_names(cfg)``.
            batch_size (int): images per forward pass when ``predict`` is not told otherwise.

        Raises:
            WeightsNotFoundError: ``weights`` names no readable file.
            CheckpointMismatchError: the checkpoint lacks parameters of the model or has them
                in other shapes (a config that differs from the training one).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        cfg = cfg.clone()
        cfg.defrost()
        if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
            logger.warning(
                "MODEL.DEVICE is %s but CUDA is not available; using the CPU", cfg.MODEL.DEVICE
            )
            cfg.MODEL.DEVICE = "cpu"
        cfg.freeze()
        self.cfg = cfg
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.model = Trainer.build_model(cfg)
        self.model.eval()
        weights = cfg.MODEL.WEIGHTS if weights is None else weights
        if weights:
            load_strict(self.model, cfg, weights)
        else:
            logger.warning("BatchPredictor: no weights given; the model is randomly initialised")
        self.weights = weights
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {self.input_format!r}")
        self.class_names = list(class_names) if class_names else resolve_class_names(cfg)
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def predict(
        self, images: Sequence[np.ndarray], batch_size: Optional[int] = None
    ) -> List[Instances]:
        """Detect objects in RGB images.

        Args:
            images (list[np.ndarray[H, W, 3] uint8]): RGB images, any sizes.
            batch_size (int or None): images per forward pass; None uses ``self.batch_size``.

        Returns:
            list[Instances]: one per image, on the CPU, in that image's pixel coordinates,
            with ``pred_boxes`` (XYXY), ``scores`` and ``pred_classes``.
        """
        batch_size = batch_size or self.batch_size
        results = []
        for start in range(0, len(images), batch_size):
            inputs = [self._to_input(image) for image in images[start : start + batch_size]]
            outputs = self.model(inputs)
            results.extend(out["instances"].to("cpu") for out in outputs)
        return results

    __call__ = predict

    def _to_input(self, rgb: np.ndarray) -> dict:
        """RGB array -> detectron2 input dict, resized as at test time (DefaultPredictor)."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(
                f"predict expects HxWx3 uint8 RGB images, got {rgb.dtype} {tuple(rgb.shape)}"
            )
        height, width = rgb.shape[:2]
        image = rgb[:, :, ::-1] if self.input_format == "BGR" else rgb
        image = self.aug.get_transform(image).apply_image(np.ascontiguousarray(image))
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}


def load_strict(model, cfg, weights: str) -> None:
    """Load ``weights`` with ``Trainer.build_checkpointer`` and refuse a partial fit.

    detectron2's checkpointer only logs parameters that are missing from the checkpoint or
    have another shape (e.g. a box predictor trained for another number of classes) and leaves
    them randomly initialised; a predictor must not run like that. Extra parameters in the
    checkpoint (the training-only projection head and proxies of DualAlignRCNN) are fine.

    Raises:
        WeightsNotFoundError: no such file (or an unreachable URL).
        CheckpointMismatchError: see above; the message names the first parameters.
    """
    checkpointer = Trainer.build_checkpointer(model, cfg)
    found = []
    log = checkpointer._log_incompatible_keys  # fvcore reports the mismatch only to this hook

    def record(incompatible):
        found.append(incompatible)
        log(incompatible)

    checkpointer._log_incompatible_keys = record
    checkpointer.load(weights)
    reshaped = {k for inc in found for k, _, _ in inc.incorrect_shapes}
    missing = [k for inc in found for k in inc.missing_keys if k not in reshaped]
    shapes = [
        f"{k} {tuple(a)} in the file, {tuple(b)} in the model"
        for inc in found
        for k, a, b in inc.incorrect_shapes
    ]
    if missing or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} parameters missing ({', '.join(missing[:_MAX_NAMED])})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes ({'; '.join(shapes[:_MAX_NAMED])})")
        raise CheckpointMismatchError(
            f"{weights}: does not fit the model of the config: {' and '.join(parts)}; use the "
            "config the checkpoint was trained with (MODEL.ROI_HEADS.NUM_CLASSES, backbone depth)"
        )


def resolve_class_names(cfg, classes: Optional[Sequence[str]] = None) -> List[str]:
    """Class names for the model's outputs.

    Order of preference: ``classes``; the ``thing_classes`` of the first ``DATASETS.TEST``
    set whose metadata has them or whose json declares them (only its "categories" are read,
    not its images); else ``class_<i>``.

    Args:
        cfg (CfgNode): config (``MODEL.ROI_HEADS.NUM_CLASSES`` gives the expected count).
        classes (list[str] or None): names given by the user.

    Returns:
        list[str]: ``NUM_CLASSES`` names.

    Raises:
        ValueError: ``classes`` has the wrong length.
    """
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if classes:
        if len(classes) != num_classes:
            raise ValueError(
                f"--classes lists {len(classes)} names but the model has "
                f"MODEL.ROI_HEADS.NUM_CLASSES = {num_classes}; give one name per class"
            )
        return list(classes)
    for name in cfg.DATASETS.TEST:
        names = _dataset_classes(name)
        if names and len(names) == num_classes:
            return names
    return [f"class_{i}" for i in range(num_classes)]


def _dataset_classes(name: str) -> Optional[List[str]]:
    """Class names of a registered set without loading (and validating) its images."""
    meta = MetadataCatalog.get(name)
    if hasattr(meta, "thing_classes"):
        return list(meta.thing_classes)
    json_file = getattr(meta, "json_file", None)
    if not json_file:
        return None
    try:
        with open(json_file) as f:
            categories = json.load(f)["categories"]
        return [str(c["name"]) for c in sorted(categories, key=lambda c: c["id"])]
    except (OSError, ValueError, KeyError, TypeError):
        return None
