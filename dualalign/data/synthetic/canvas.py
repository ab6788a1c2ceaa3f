"""Drawing primitives: soft polygon masks on small regions of an optical-density canvas."""

import dataclasses
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

Roi = Tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


class Canvas:
    """Accumulated optical density (H, W, 3) of a patch."""

    def __init__(self, size: int):
        self.size = size
        self.od = np.zeros((size, size, 3), np.float32)

    def roi(self, pts: np.ndarray, margin: float) -> Optional[Roi]:
        """The image region covering ``pts`` plus ``margin``, or None if it is off the patch."""
        x0 = max(int(np.floor(pts[:, 0].min() - margin)), 0)
        y0 = max(int(np.floor(pts[:, 1].min() - margin)), 0)
        x1 = min(int(np.ceil(pts[:, 0].max() + margin)) + 1, self.size)
        y1 = min(int(np.ceil(pts[:, 1].max() + margin)) + 1, self.size)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def add(self, roi: Roi, density: np.ndarray, od: np.ndarray):
        """Add ``density`` (h, w) times the stain's OD vector to the region."""
        x0, y0, x1, y1 = roi
        self.od[y0:y1, x0:x1] += density[:, :, None] * od[None, None, :]


def _soft_mask(pts: np.ndarray, roi: Roi, sigma: float) -> np.ndarray:
    """Anti-aliased filled polygon in the region, blurred by ``sigma`` px; float32 in [0, 1]."""
    x0, y0, x1, y1 = roi
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fixed = np.round((pts - (x0, y0)) * 16).astype(np.int32)  # 4 fractional bits
    cv2.fillPoly(mask, [fixed], 255, cv2.LINE_AA, shift=4)
    mask = mask.astype(np.float32) * (1.0 / 255.0)
    if sigma > 0.2:
        mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    return mask


def low_freq(rng: np.random.Generator, shape: Tuple[int, int], cells: int = 4) -> np.ndarray:
    """Smooth noise (about unit std) of ``shape``: a random ``cells`` grid, upsampled."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _granular(rng: np.random.Generator, shape: Tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std granular noise (chromatin texture) of ``shape``."""
    g = rng.random(shape, dtype=np.float32)
    if sigma > 0.2:
        g = cv2.GaussianBlur(g, (0, 0), sigma)
    return (g - g.mean()) / (g.std() + 1e-6)


def _rim(mask: np.ndarray) -> np.ndarray:
    """The soft edge of a blurred mask (peaks at 1 where the mask is 0.5)."""
    return 4.0 * mask * (1.0 - mask)


def blob(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    angle: float,
    irregularity: float = 0.0,
    harmonics: int = 3,
    n: int = 32,
) -> np.ndarray:
    """Smooth closed contour: an ellipse whose radius wobbles by random Fourier harmonics."""
    theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    if irregularity > 0:
        for k in range(2, harmonics + 2):
            amp = irregularity * rng.uniform(0.3, 1.0) / np.sqrt(k - 1)
            r += amp * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return _transform(r * rx * np.cos(theta), r * ry * np.sin(theta), cx, cy, angle)


def angular(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    radius: float,
    aspect: float,
    angle: float,
    vertices: int,
    jitter: float = 0.12,
) -> np.ndarray:
    """Polygon with a few jittered vertices: the flat, angular outline of squamous cells."""
    step = 2 * np.pi / vertices
    theta = np.arange(vertices) * step + rng.uniform(-0.3, 0.3, vertices) * step
    r = radius * (1.0 + rng.uniform(-jitter, jitter, vertices))
    pts = np.stack([r * np.cos(theta), r * aspect * np.sin(theta)], axis=1)
    nxt = np.roll(pts, -1, axis=0)  # one Chaikin pass: cut the corners a little
    cut = rng.uniform(0.06, 0.16)
    pts = np.stack([(1 - cut) * pts + cut * nxt, cut * pts + (1 - cut) * nxt], axis=1)
    pts = pts.reshape(-1, 2)
    return _transform(pts[:, 0], pts[:, 1], cx, cy, angle)


def superellipse(
    cx: float, cy: float, rx: float, ry: float, angle: float, power: float = 4.0, n: int = 28
) -> np.ndarray:
    """Rounded rectangle (a superellipse): the outline of a columnar cell."""
    theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(theta), np.sin(theta)
    x = rx * np.sign(c) * np.abs(c) ** (2 / power)
    y = ry * np.sign(s) * np.abs(s) ** (2 / power)
    return _transform(x, y, cx, cy, angle)


def _transform(x: np.ndarray, y: np.ndarray, cx: float, cy: float, angle: float) -> np.ndarray:
    ca, sa = np.cos(angle), np.sin(angle)
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], axis=1).astype(np.float32)


def _box_of(mask: np.ndarray, roi: Roi, threshold: float = 0.25) -> Optional[Roi]:
    """Tight (x0, y0, x1, y1) image box of ``mask > threshold``; None if empty."""
    cols = np.flatnonzero(mask.max(axis=0) > threshold)
    rows = np.flatnonzero(mask.max(axis=1) > threshold)
    if cols.size == 0 or rows.size == 0:
        return None
    return (
        roi[0] + int(cols[0]),
        roi[1] + int(rows[0]),
        roi[0] + int(cols[-1]) + 1,
        roi[1] + int(rows[-1]) + 1,
    )


def union(a: Optional[Roi], b: Optional[Roi]) -> Optional[Roi]:
    if a is None or b is None:
        return a or b
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


@dataclasses.dataclass
class Nucleus:
    pts: np.ndarray  # contour
    density: float  # stain density at the centre
    chromatin: float  # relative amplitude of the granular texture
    grain: float  # texture grain (blur sigma) in px


def _paint_nucleus(
    canvas: Canvas, rng: np.random.Generator, nuc: Nucleus, s: float, od: np.ndarray
):
    roi = canvas.roi(nuc.pts, 2 * s + 2)
    if roi is None:
        return
    mask = _soft_mask(nuc.pts, roi, 0.45 * np.sqrt(s))
    texture = _granular(rng, mask.shape, nuc.grain)
    density = mask * (1.0 + nuc.chromatin * texture) + 0.3 * _rim(mask)
    canvas.add(roi, np.maximum(density, 0.0) * nuc.density, od)


def paint_cell(
    canvas: Canvas,
    rng: np.random.Generator,
    s: float,
    cyto: np.ndarray,
    cyto_od: np.ndarray,
    cyto_density: float,
    nuclei: Sequence[Nucleus],
    nucleus_od: np.ndarray,
    halo: Optional[np.ndarray] = None,
    fold: bool = False,
) -> Optional[Roi]:
    """Paint a cell (cytoplasm, optional koilocytic halo, nuclei); return its visible box."""
    roi = canvas.roi(cyto, 3 * s + 2)
    box = None
    if roi is not None:
        mask = _soft_mask(cyto, roi, 0.7 * np.sqrt(s))
        texture = (
            1.0
            + 0.25 * low_freq(rng, mask.shape, 5)
            + 0.08 * _granular(rng, mask.shape, 0.6 * np.sqrt(s))
        )
        density = mask * texture + 0.35 * _rim(mask)
        if halo is not None:  # cleared perinuclear zone with a condensed rim
            clear = _soft_mask(halo, roi, 0.5 * np.sqrt(s))
            density = density * (1.0 - 0.8 * clear) + 0.45 * _rim(clear) * mask
        if fold:  # a folded edge: a darker line across the cell
            line = np.zeros(mask.shape, np.float32)
            a, b = cyto[0] - roi[:2], cyto[len(cyto) // 2] - roi[:2]
            p0 = tuple(int(v) for v in np.round(a + 0.35 * (b - a)))
            p1 = tuple(int(v) for v in np.round(cyto[len(cyto) // 3] - roi[:2]))
            cv2.line(line, p0, p1, 1.0, max(1, int(round(s))), cv2.LINE_AA)
            density += 0.5 * cv2.GaussianBlur(line, (0, 0), 0.8 * s) * mask
        canvas.add(roi, np.maximum(density, 0.0) * cyto_density, cyto_od)
        box = _box_of(mask, roi)
    for nuc in nuclei:
        _paint_nucleus(canvas, rng, nuc, s, nucleus_od)
    return box
