"""Flips move boxes with the image; colour jitter changes pixels only."""

import numpy as np
import pytest
from detectron2.data import transforms as T

from dualalign.data.augmentations import RandomColorJitter, jitter_color


def test_jitter_identity_and_bounds():
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert np.array_equal(jitter_color(img, 1.0, 1.0, 1.0, 0.0, "BGR"), img)
    out = jitter_color(img, 1.5, 1.3, 0.5, 0.1, "BGR")
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert not np.array_equal(out, img)


def test_saturation_zero_gives_grey():
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 2] = 200  # red in BGR
    out = jitter_color(img, 1.0, 1.0, 0.0, 0.0, "BGR")
    assert np.all(out[..., 0] == out[..., 1]) and np.all(out[..., 1] == out[..., 2])


def test_hue_shift_respects_channel_order():
    red_bgr = np.zeros((2, 2, 3), np.uint8)
    red_bgr[..., 2] = 255
    shifted = jitter_color(red_bgr, 1.0, 1.0, 1.0, 1.0 / 3.0, "BGR")  # red -> green
    assert shifted[0, 0, 1] > 200 and shifted[0, 0, 2] < 60
    red_rgb = red_bgr[..., ::-1].copy()
    shifted_rgb = jitter_color(red_rgb, 1.0, 1.0, 1.0, 1.0 / 3.0, "RGB")
    assert np.array_equal(shifted_rgb[..., ::-1], shifted)


@pytest.mark.parametrize("horizontal", [True, False])
def test_flip_moves_boxes(horizontal):
    img = np.zeros((100, 200, 3), np.uint8)
    aug = T.RandomFlip(prob=1.0, horizontal=horizontal, vertical=not horizontal)
    inp = T.AugInput(img, boxes=np.array([[10.0, 20.0, 50.0, 40.0]]))
    T.AugmentationList([aug, RandomColorJitter(0, 0, 0, 0)])(inp)
    expected = [150.0, 20.0, 190.0, 40.0] if horizontal else [10.0, 60.0, 50.0, 80.0]
    assert inp.boxes.tolist() == [expected]
