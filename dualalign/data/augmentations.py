"""Training augmentations of the paper (section 2.3): random flips and colour jitter.

Both are detectron2 ``Augmentation``s, so they compose with ``ResizeShortestEdge`` and transform
boxes correctly. Colour jitter changes pixels only; its geometry is the identity.
"""

from typing import List

import cv2
import numpy as np
from detectron2.data import transforms as T


def jitter_color(
    image: np.ndarray, brightness: float, contrast: float, saturation: float, hue: float, fmt: str
) -> np.ndarray:
    """Apply brightness, contrast, saturation scales and a hue shift to a uint8 image.

    Args:
        image (ndarray[H, W, 3] uint8): in channel order ``fmt`` ("BGR" or "RGB").
        brightness, contrast, saturation (float): multiplicative factors (1 = unchanged).
        hue (float): shift in fractions of a full hue turn (0 = unchanged).
        fmt (str): channel order of ``image``.

    Returns:
        ndarray[H, W, 3] uint8 in the same channel order.
    """
    out = image.astype(np.float32) * brightness
    grey_mean = out.mean()
    out = (out - grey_mean) * contrast + grey_mean
    out = np.clip(out, 0, 255).astype(np.uint8)
    if saturation != 1.0 or hue != 0.0:
        code_to, code_back = (
            (cv2.COLOR_BGR2HSV_FULL, cv2.COLOR_HSV2BGR_FULL)
            if fmt == "BGR"
            else (cv2.COLOR_RGB2HSV_FULL, cv2.COLOR_HSV2RGB_FULL)
        )
        hsv = cv2.cvtColor(out, code_to).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + hue * 256.0) % 256.0  # _FULL: hue spans 0..255
        hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
        out = cv2.cvtColor(hsv.astype(np.uint8), code_back)
    return out


class RandomColorJitter(T.Augmentation):
    """Brightness, contrast, saturation and hue jitter with factors drawn per image."""

    def __init__(self, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, image_format="BGR"):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        if image.ndim != 3 or image.shape[2] != 3:
            return T.NoOpTransform()
        b = np.random.uniform(1 - self.brightness, 1 + self.brightness)
        c = np.random.uniform(1 - self.contrast, 1 + self.contrast)
        s = np.random.uniform(1 - self.saturation, 1 + self.saturation)
        h = np.random.uniform(-self.hue, self.hue)
        fmt = self.image_format
        return T.ColorTransform(lambda img: jitter_color(img, b, c, s, h, fmt))


def build_train_augmentations(cfg) -> List[T.Augmentation]:
    """Resize as detectron2 does, then flips and colour jitter from ``DUALALIGN.AUG``."""
    a = cfg.DUALALIGN.AUG
    augs = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if a.HFLIP_PROB > 0:
        augs.append(T.RandomFlip(prob=a.HFLIP_PROB, horizontal=True, vertical=False))
    if a.VFLIP_PROB > 0:
        augs.append(T.RandomFlip(prob=a.VFLIP_PROB, horizontal=False, vertical=True))
    if max(a.BRIGHTNESS, a.CONTRAST, a.SATURATION, a.HUE) > 0:
        augs.append(
            RandomColorJitter(a.BRIGHTNESS, a.CONTRAST, a.SATURATION, a.HUE, cfg.INPUT.FORMAT)
        )
    return augs


def build_test_augmentations(cfg) -> List[T.Augmentation]:
    """Test-time resize only, as detectron2's default."""
    return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
