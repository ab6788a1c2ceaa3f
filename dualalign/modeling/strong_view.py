"""The student's strong view of an unlabelled image: photometric jitter, blur and cutout.

The teacher labels the image as the loader gives it (the *weak* view: flips and mild colour
jitter, ``DUALALIGN.AUG``); the student is trained on a strong view of that same image, as in
Unbiased Teacher and Soft Teacher. Every operation here leaves the geometry unchanged, so the
teacher's boxes are the student's boxes without any mapping:

* colour: brightness and contrast scales and a saturation blend, drawn per image from
  ``[1 - s, 1 + s]``;
* blur: with probability ``blur_prob`` a separable Gaussian blur with sigma drawn from
  ``[0.1, blur_sigma]`` pixels;
* cutout: ``cutout_num`` rectangles of side ``cutout_frac`` x the image side (each side drawn
  from ``[0.5, 1] x``), filled with the image mean.

The functions take and return ``uint8`` tensors ``[C, H, W]`` in the model's input format and
draw their randomness from the torch generator (seeded by ``SEED``).
"""

from dataclasses import dataclass
from typing import List

import torch
import torch.nn.functional as F

__all__ = ["StrongViewSettings", "gaussian_blur", "strong_view", "strong_views"]


@dataclass(frozen=True)
class StrongViewSettings:
    """``DUALALIGN.STRONG_AUG`` (see config.py)."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    blur_prob: float = 0.5
    blur_sigma: float = 2.0
    cutout_num: int = 3
    cutout_frac: float = 0.15

    @classmethod
    def from_config(cls, cfg) -> "StrongViewSettings":
        a = cfg.DUALALIGN.STRONG_AUG
        return cls(
            a.BRIGHTNESS, a.CONTRAST, a.SATURATION, a.BLUR_PROB, a.BLUR_SIGMA, a.CUTOUT_NUM,
            a.CUTOUT_FRAC,
        )  # fmt: skip


def _uniform(lo: float, hi: float, generator=None) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=generator))


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a float ``[C, H, W]`` image (kernel radius ceil(3 sigma),
    reflected borders)."""
    radius = max(1, int(3.0 * sigma + 0.999))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = image.shape[0]
    out = image[None]
    pad_w = min(radius, image.shape[2] - 1)
    pad_h = min(radius, image.shape[1] - 1)
    kw = k[radius - pad_w : radius + pad_w + 1]
    kh = k[radius - pad_h : radius + pad_h + 1]
    out = F.pad(out, (pad_w, pad_w, 0, 0), mode="reflect") if pad_w else out
    out = F.conv2d(out, (kw / kw.sum()).view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, pad_h, pad_h), mode="reflect") if pad_h else out
    out = F.conv2d(out, (kh / kh.sum()).view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out[0]


def strong_view(image: torch.Tensor, s: StrongViewSettings, generator=None) -> torch.Tensor:
    """A strong view of one ``uint8`` image ``[C, H, W]`` (same shape, dtype and geometry).

    Args:
        image: the weak view, as the mapper gives it.
        s: the strengths.
        generator: torch generator of the draws (default: the global one).
    """
    x = image.float()
    x = x * _uniform(1 - s.brightness, 1 + s.brightness, generator)
    mean = x.mean()
    x = (x - mean) * _uniform(1 - s.contrast, 1 + s.contrast, generator) + mean
    if x.shape[0] > 1:  # saturation: blend with the grey image
        sat = _uniform(1 - s.saturation, 1 + s.saturation, generator)
        grey = x.mean(dim=0, keepdim=True)
        x = grey + (x - grey) * sat
    if s.blur_prob > 0 and float(torch.rand((), generator=generator)) < s.blur_prob:
        x = gaussian_blur(x, _uniform(0.1, max(0.1, s.blur_sigma), generator))
    h, w = x.shape[1:]
    fill = x.mean(dim=(1, 2), keepdim=True)
    for _ in range(s.cutout_num):
        ch = max(1, int(h * s.cutout_frac * _uniform(0.5, 1.0, generator)))
        cw = max(1, int(w * s.cutout_frac * _uniform(0.5, 1.0, generator)))
        y0 = int(torch.randint(0, max(1, h - ch + 1), (), generator=generator))
        x0 = int(torch.randint(0, max(1, w - cw + 1), (), generator=generator))
        x[:, y0 : y0 + ch, x0 : x0 + cw] = fill
    return x.round_().clamp_(0, 255).to(image.dtype)


def strong_views(inputs: List[dict], s: StrongViewSettings) -> List[dict]:
    """The input dicts with ``image`` replaced by its :func:`strong_view` (other keys shared)."""
    return [dict(x, image=strong_view(x["image"], s)) for x in inputs]
