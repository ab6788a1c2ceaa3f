"""Synthetic liquid-based Pap-smear patches with COCO boxes: the project's built-in data set.

The generator draws each patch as a stack of translucent, stained objects on a pale off-white
/ grey-blue background. Stains add up as optical densities (Beer-Lambert), so overlapping
cytoplasm darkens where cells overlap and the order in which cells are drawn does not matter.

Unlabelled look-alikes (never boxed):

* normal squamous cells: large polygonal cytoplasm, cyanophilic blue-green (intermediate
  cells) or eosinophilic pink/orange (superficial cells), with a small nucleus - dense and
  pyknotic in superficial cells, paler with fine chromatin in intermediate cells. A few
  "reactive" intermediate cells have a nucleus as large as the smallest ASC-US nuclei;
* metaplastic / parabasal cells: small round dense blue-green cells with a round, pale nucleus
  (an HSIL look-alike, but with a low nucleus-to-cytoplasm ratio and a smooth contour);
* inflammatory cells: small groups of neutrophils, each a faint halo around 2-4 dark lobes;
* a normal endocervical strip now and then: tidy columnar cells with small basal nuclei;
* mucus strands and small debris specks.

Abnormal cells (category ids 1..4, the box covers the whole cell or cluster):

1. ASC-US: a squamous cell like the normal ones whose nucleus is 1.5-2x the normal diameter
   and slightly darker; its smallest nuclei overlap the reactive normal ones.
2. LSIL: an enlarged, dark, slightly wrinkled nucleus inside a koilocytic halo (a clear
   perinuclear zone with a condensed rim); about 30% of them are binucleate.
3. HSIL: a small, round, dense cell almost filled by a dark nucleus (high N:C ratio) with a
   lobulated / jagged contour and coarse chromatin.
4. AGC: a crowded cluster of 3-8 columnar cells side by side, with enlarged, overlapping,
   dark basal nuclei; one box covers the cluster.

Every size is given for a 256-pixel patch and scales with ``image_size``. With ``variation``
on, each patch gets its own stain palette (hue / saturation / brightness shifts of every stain
and a stain intensity) and cell scale (x0.8-1.25), plus a focus blur and sensor noise level.

``render_patch`` draws one patch; ``generate_dataset`` writes labelled / unlabelled / val /
test splits as PNGs and COCO jsons, deterministically from a seed (each image has its own
random stream, so an image does not depend on how many others are generated).
"""

import dataclasses
import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

CLASS_NAMES = ("ASC-US", "LSIL", "HSIL", "AGC")
SPLITS = ("labeled", "unlabeled", "val", "test")
GENERATOR_VERSION = 1
REFERENCE_SIZE = 256  # every size constant below is in pixels of a 256-px patch
MIN_BOX = 8  # px (times image_size / 256 above 256 px): smaller visible boxes are dropped
UNLABELED_NEGATIVE_FRACTION = 0.2  # unlabelled patches without any abnormal cell
ABNORMAL_COUNT_PROBS = (0.3, 0.27, 0.2, 0.13, 0.1)  # P(1..5 abnormal cells in a patch)
CLASS_PROBS = (0.3, 0.25, 0.25, 0.2)  # P(class) of each abnormal cell, in CLASS_NAMES order
MIMIC_RANGE = (4, 12)  # inclusive range of normal cells / mimics per patch
MIMIC_KINDS = (
    "superficial",
    "intermediate",
    "reactive",
    "metaplastic",
    "neutrophils",
    "endocervical",
)
MIMIC_PROBS = (0.32, 0.3, 0.1, 0.1, 0.15, 0.03)

# RGB colour of each stain at unit density (before per-patch variation).
_BASE_COLOURS = {
    "cyanophilic": (168, 208, 206),
    "eosinophilic": (240, 184, 194),
    "orangeophilic": (242, 202, 168),
    "metaplastic": (140, 180, 200),
    "glandular": (184, 186, 218),
    "nucleus": (105, 80, 150),
    "neutrophil_cyto": (220, 212, 222),
}
_BASE_BACKGROUND = (236, 236, 241)


# --------------------------------------------------------------------------------------------
# Palette and per-patch plan
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Palette:
    """Stains of one patch: optical-density vectors (per RGB channel) and the background."""

    od: Dict[str, np.ndarray]
    background: np.ndarray  # RGB, 0..255


@dataclasses.dataclass
class CellSpec:
    """One object of a patch, chosen before drawing.

    Attributes:
        kind: a CLASS_NAMES entry or a MIMIC_KINDS entry.
        cx, cy: centre in pixels.
        radius: half-size of the cell (or cluster) in pixels.
        nucleus_radius: mean nucleus radius in pixels (lobe radius for neutrophils).
        category_id: 1..4 for abnormal cells, 0 for unlabelled objects.
        count: number of cells of a cluster / group (1 for single cells).
    """

    kind: str
    cx: float
    cy: float
    radius: float
    nucleus_radius: float
    category_id: int = 0
    count: int = 1


@dataclasses.dataclass
class PatchPlan:
    """Everything about a patch that is decided before drawing."""

    image_size: int
    scale: float  # image_size / 256 times the cell-scale variation
    palette: Palette
    cells: List[CellSpec]
    blur_sigma: float
    noise_sigma: float


def _shift_hsv(colours: np.ndarray, dh: float, ds: float, dv: float) -> np.ndarray:
    """Shift hue (degrees), scale saturation and value of an (N, 3) RGB 0..255 array."""
    hsv = cv2.cvtColor((colours / 255.0).astype(np.float32)[None], cv2.COLOR_RGB2HSV)[0]
    hsv[:, 0] = np.mod(hsv[:, 0] + dh, 360.0)
    hsv[:, 1] = np.clip(hsv[:, 1] * ds, 0.0, 1.0)
    hsv[:, 2] = np.clip(hsv[:, 2] * dv, 0.0, 1.0)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0] * 255.0


def make_palette(rng: np.random.Generator, variation: bool) -> Palette:
    """The stain palette of a patch: fixed, or with random hue / saturation / value shifts.

    Cytoplasmic stains (EA / Orange G) and the nuclear stain (haematoxylin) are shifted
    separately, as they vary separately between labs and slides.
    """
    names = list(_BASE_COLOURS)
    colours = np.array([_BASE_COLOURS[n] for n in names], dtype=np.float32)
    background = np.array(_BASE_BACKGROUND, dtype=np.float32)
    intensity = 1.0
    if variation:
        nuc = names.index("nucleus")
        cyto = [i for i in range(len(names)) if i != nuc]
        colours[cyto] = _shift_hsv(
            colours[cyto], rng.uniform(-14, 14), rng.uniform(0.75, 1.3), rng.uniform(0.96, 1.04)
        )
        colours[[nuc]] = _shift_hsv(
            colours[[nuc]], rng.uniform(-12, 12), rng.uniform(0.8, 1.2), rng.uniform(0.85, 1.12)
        )
        background = _shift_hsv(
            background[None], rng.uniform(-30, 30), rng.uniform(0.6, 1.8), rng.uniform(0.96, 1.02)
        )[0]
        intensity = rng.uniform(0.8, 1.2)
    od = -np.log(np.clip(colours, 1.0, 255.0) / 255.0) * intensity
    return Palette(
        od={n: od[i].astype(np.float32) for i, n in enumerate(names)}, background=background
    )


def _abnormal_spec(rng: np.random.Generator, category_id: int, s: float) -> CellSpec:
    """Size of an abnormal cell of class ``category_id`` (position filled in later)."""
    kind = CLASS_NAMES[category_id - 1]
    count = 1
    if kind == "ASC-US":
        radius, nucleus = rng.uniform(18, 30), rng.uniform(5.0, 7.5)
    elif kind == "LSIL":
        radius, nucleus = rng.uniform(19, 31), rng.uniform(5.8, 8.5)
    elif kind == "HSIL":
        radius = rng.uniform(12, 18)
        nucleus = radius * rng.uniform(0.58, 0.78)
    else:  # AGC: a cluster of columnar cells
        count = int(rng.integers(3, 9))
        width, length = rng.uniform(7, 10), rng.uniform(24, 34)
        radius = 0.5 * np.hypot(count * 0.72 * width, length)
        nucleus = 0.42 * width
    return CellSpec(kind, 0.0, 0.0, radius * s, nucleus * s, category_id, count)


def _mimic_spec(
    rng: np.random.Generator, kind: str, s: float, size: int, abnormal: Sequence[CellSpec]
) -> CellSpec:
    """A normal cell / look-alike of ``kind`` anywhere on (or slightly off) the patch.

    It may overlap abnormal cells, but not cover one centre on centre.
    """
    count = 1
    if kind == "superficial":
        radius, nucleus = rng.uniform(20, 32), rng.uniform(2.6, 3.4)
    elif kind == "intermediate":
        radius, nucleus = rng.uniform(18, 30), rng.uniform(3.3, 4.4)
    elif kind == "reactive":
        radius, nucleus = rng.uniform(16, 26), rng.uniform(4.3, 5.6)
    elif kind == "metaplastic":
        radius = rng.uniform(11, 16)
        nucleus = radius * rng.uniform(0.28, 0.4)
    elif kind == "neutrophils":
        count = int(rng.integers(1, 6))
        radius, nucleus = 5.5 * np.sqrt(count), rng.uniform(1.6, 2.2)
    else:  # endocervical strip
        count = int(rng.integers(3, 7))
        radius, nucleus = 0.5 * np.hypot(count * 8.5, 28), 2.6
    radius, nucleus = radius * s, nucleus * s
    for _ in range(10):
        cx, cy = rng.uniform(-0.05, 1.05, size=2) * size
        if all(np.hypot(cx - a.cx, cy - a.cy) >= 0.5 * (radius + a.radius) for a in abnormal):
            break
    return CellSpec(kind, float(cx), float(cy), radius, nucleus, 0, count)


def _place(rng: np.random.Generator, cell: CellSpec, placed: Sequence[CellSpec], size: int):
    """Put an abnormal cell mostly inside the patch, apart from the other abnormal cells."""
    margin = min(0.3 * cell.radius, size / 2)
    for _ in range(40):
        cx, cy = rng.uniform(margin, size - margin, size=2)
        if all(np.hypot(cx - o.cx, cy - o.cy) >= 0.85 * (cell.radius + o.radius) for o in placed):
            break
    cell.cx, cell.cy = float(cx), float(cy)


def plan_patch(
    rng: np.random.Generator,
    image_size: int = 256,
    variation: bool = True,
    num_abnormal: Optional[int] = None,
) -> PatchPlan:
    """Choose the palette, scale and cells (kind, size, position) of a patch.

    Args:
        rng: the patch's random stream.
        image_size: side of the square patch in pixels.
        variation: random stain / scale / blur / noise per patch when True.
        num_abnormal: number of abnormal cells; None draws 1..5 (ABNORMAL_COUNT_PROBS).

    Returns:
        The PatchPlan, abnormal cells first.
    """
    palette = make_palette(rng, variation)
    scale = image_size / REFERENCE_SIZE
    if variation:
        scale *= rng.uniform(0.8, 1.25)
    if num_abnormal is None:
        num_abnormal = 1 + int(rng.choice(len(ABNORMAL_COUNT_PROBS), p=ABNORMAL_COUNT_PROBS))
    cells: List[CellSpec] = []
    for cat in rng.choice(len(CLASS_NAMES), size=num_abnormal, p=CLASS_PROBS):
        cell = _abnormal_spec(rng, int(cat) + 1, scale)
        _place(rng, cell, cells, image_size)
        cells.append(cell)
    abnormal = list(cells)
    num_mimics = int(rng.integers(MIMIC_RANGE[0], MIMIC_RANGE[1] + 1))
    for k in rng.choice(len(MIMIC_KINDS), size=num_mimics, p=MIMIC_PROBS):
        cells.append(_mimic_spec(rng, MIMIC_KINDS[int(k)], scale, image_size, abnormal))
    blur = rng.uniform(0.3, 1.0) if variation else 0.5
    noise = rng.uniform(1.5, 3.5) if variation else 2.0
    blur *= max(1.0, image_size / REFERENCE_SIZE) ** 0.5  # optics blur: sub-linear in size
    return PatchPlan(image_size, scale, palette, cells, blur, noise)


# --------------------------------------------------------------------------------------------
# Drawing primitives: soft polygon masks on small regions of an optical-density canvas
# --------------------------------------------------------------------------------------------

Roi = Tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


class _Canvas:
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


def _low_freq(rng: np.random.Generator, shape: Tuple[int, int], cells: int = 4) -> np.ndarray:
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


def _blob(
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


def _angular(
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


def _superellipse(
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


def _union(a: Optional[Roi], b: Optional[Roi]) -> Optional[Roi]:
    if a is None or b is None:
        return a or b
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


@dataclasses.dataclass
class _Nucleus:
    pts: np.ndarray  # contour
    density: float  # stain density at the centre
    chromatin: float  # relative amplitude of the granular texture
    grain: float  # texture grain (blur sigma) in px


def _paint_nucleus(
    canvas: _Canvas, rng: np.random.Generator, nuc: _Nucleus, s: float, od: np.ndarray
):
    roi = canvas.roi(nuc.pts, 2 * s + 2)
    if roi is None:
        return
    mask = _soft_mask(nuc.pts, roi, 0.45 * np.sqrt(s))
    texture = _granular(rng, mask.shape, nuc.grain)
    density = mask * (1.0 + nuc.chromatin * texture) + 0.3 * _rim(mask)
    canvas.add(roi, np.maximum(density, 0.0) * nuc.density, od)


def _paint_cell(
    canvas: _Canvas,
    rng: np.random.Generator,
    s: float,
    cyto: np.ndarray,
    cyto_od: np.ndarray,
    cyto_density: float,
    nuclei: Sequence[_Nucleus],
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
            + 0.25 * _low_freq(rng, mask.shape, 5)
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


# --------------------------------------------------------------------------------------------
# One drawing function per kind of object
# --------------------------------------------------------------------------------------------


def _squamous_stain(rng: np.random.Generator, probs=(0.5, 0.35, 0.15)) -> str:
    return ("cyanophilic", "eosinophilic", "orangeophilic")[int(rng.choice(3, p=probs))]


def _nucleus_offset(rng: np.random.Generator, cell: CellSpec, max_frac: float = 0.25):
    d, a = rng.uniform(0, max_frac) * cell.radius, rng.uniform(0, 2 * np.pi)
    return cell.cx + d * np.cos(a), cell.cy + d * np.sin(a)


def _draw_squamous(canvas, rng, cell: CellSpec, pal: Palette, s: float) -> Optional[Roi]:
    """Normal superficial / intermediate / reactive cells and ASC-US (same look but nucleus)."""
    kind = cell.kind
    if kind == "superficial":
        stain = _squamous_stain(rng, (0.15, 0.55, 0.3))
        density, irregular, chromatin, grain = rng.uniform(1.3, 1.6), 0.03, 0.1, 0.4
    elif kind == "ASC-US":
        stain = _squamous_stain(rng)
        density, irregular, chromatin, grain = rng.uniform(0.85, 1.1), 0.07, 0.35, 0.5
    else:  # intermediate, reactive
        stain = _squamous_stain(rng, (0.8, 0.15, 0.05))
        density, irregular, chromatin, grain = rng.uniform(0.7, 0.92), 0.03, 0.28, 0.5
    aspect = rng.uniform(0.75 if kind == "ASC-US" else 0.65, 1.0)
    cyto = _angular(
        rng, cell.cx, cell.cy, cell.radius, aspect, rng.uniform(0, np.pi), int(rng.integers(5, 9))
    )
    nx, ny = _nucleus_offset(rng, cell)
    rn = cell.nucleus_radius
    nucleus = _Nucleus(
        _blob(rng, nx, ny, rn, rn * rng.uniform(0.8, 1.0), rng.uniform(0, np.pi), irregular, 3, 24),
        density,
        chromatin,
        grain * s,
    )
    return _paint_cell(
        canvas,
        rng,
        s,
        cyto,
        pal.od[stain],
        rng.uniform(0.5, 0.85),
        [nucleus],
        pal.od["nucleus"],
        fold=rng.random() < 0.25,
    )


def _draw_lsil(canvas, rng, cell: CellSpec, pal: Palette, s: float) -> Optional[Roi]:
    """LSIL: enlarged dark nucleus (binucleate ~30%) inside a koilocytic halo."""
    stain = _squamous_stain(rng, (0.6, 0.3, 0.1))
    cyto = _angular(
        rng,
        cell.cx,
        cell.cy,
        cell.radius,
        rng.uniform(0.7, 1.0),
        rng.uniform(0, np.pi),
        int(rng.integers(5, 9)),
    )
    nx, ny = _nucleus_offset(rng, cell, 0.15)
    rn, angle = cell.nucleus_radius, rng.uniform(0, np.pi)
    binucleate = rng.random() < 0.3
    centres = [(nx, ny)]
    if binucleate:
        rn *= 0.8
        dx, dy = 0.95 * rn * np.cos(angle), 0.95 * rn * np.sin(angle)
        centres = [(nx - dx, ny - dy), (nx + dx, ny + dy)]
    nuclei = [
        _Nucleus(
            _blob(rng, x, y, rn, rn * rng.uniform(0.75, 0.95), rng.uniform(0, np.pi), 0.08, 4, 28),
            rng.uniform(1.05, 1.35),
            0.3,
            0.6 * s,
        )
        for x, y in centres
    ]
    halo_r = min(rn * rng.uniform(1.9, 2.6), 0.8 * cell.radius)
    halo = _blob(
        rng,
        nx,
        ny,
        halo_r * (1.3 if binucleate else 1.0),
        halo_r * rng.uniform(0.8, 1.0),
        angle,
        0.1,
        4,
        32,
    )
    return _paint_cell(
        canvas,
        rng,
        s,
        cyto,
        pal.od[stain],
        rng.uniform(0.6, 0.95),
        nuclei,
        pal.od["nucleus"],
        halo=halo,
    )


def _draw_round_cell(canvas, rng, cell: CellSpec, pal: Palette, s: float) -> Optional[Roi]:
    """HSIL (dark, jagged nucleus filling the cell) or a normal metaplastic cell."""
    hsil = cell.kind == "HSIL"
    cyto = _blob(
        rng,
        cell.cx,
        cell.cy,
        cell.radius,
        cell.radius * rng.uniform(0.8, 1.0),
        rng.uniform(0, np.pi),
        0.08,
        3,
        32,
    )
    nx, ny = _nucleus_offset(rng, cell, 0.12 if hsil else 0.25)
    rn = cell.nucleus_radius
    if hsil:
        nucleus = _Nucleus(
            _blob(
                rng,
                nx,
                ny,
                rn,
                rn * rng.uniform(0.75, 0.95),
                rng.uniform(0, np.pi),
                rng.uniform(0.12, 0.22),
                7,
                48,
            ),
            rng.uniform(1.3, 1.7),
            0.45,
            0.7 * s,
        )
    else:
        nucleus = _Nucleus(
            _blob(rng, nx, ny, rn, rn * rng.uniform(0.85, 1.0), 0.0, 0.03, 3, 24),
            rng.uniform(0.75, 0.95),
            0.25,
            0.5 * s,
        )
    return _paint_cell(
        canvas,
        rng,
        s,
        cyto,
        pal.od["metaplastic"],
        rng.uniform(0.8, 1.1),
        [nucleus],
        pal.od["nucleus"],
    )


def _draw_columnar(canvas, rng, cell: CellSpec, pal: Palette, s: float) -> Optional[Roi]:
    """AGC (crowded, enlarged overlapping basal nuclei) or a tidy normal endocervical strip."""
    agc = cell.kind == "AGC"
    width, length = (rng.uniform(7, 10), rng.uniform(24, 34)) if agc else (8.5, 28.0)
    width, length = width * s, length * s
    spacing = width * (rng.uniform(0.62, 0.8) if agc else 1.0)
    axis = rng.uniform(0, 2 * np.pi)
    u = np.array([np.cos(axis), np.sin(axis)])  # along the strip
    v = np.array([-u[1], u[0]])  # along the cells, towards the basal end
    bend = rng.uniform(-0.012, 0.012) / s
    box, cyto_density = None, rng.uniform(0.5, 0.8)
    for i in range(cell.count):
        t = (i - (cell.count - 1) / 2) * spacing
        stagger = rng.uniform(-0.12, 0.12) * length if agc else 0.0  # disorderly crowding
        c = np.array([cell.cx, cell.cy]) + t * u + (bend * t * t + stagger) * v
        tilt = axis + np.pi / 2 + rng.uniform(-0.15, 0.15) + bend * t
        ln = length * rng.uniform(0.9, 1.1)
        cyto = _superellipse(c[0], c[1], ln / 2, width / 2, tilt)
        if agc:
            rx, ry = ln * rng.uniform(0.17, 0.24), width * rng.uniform(0.38, 0.5)
            shift, density, irregular = rng.uniform(0.05, 0.3) * ln, rng.uniform(1.0, 1.3), 0.08
        else:
            rx, ry, shift, density, irregular = 0.13 * ln, 0.3 * width, 0.3 * ln, 0.75, 0.02
        d = np.array([np.cos(tilt), np.sin(tilt)])
        nc = c + shift * d
        nucleus = _Nucleus(
            _blob(rng, nc[0], nc[1], rx, ry, tilt, irregular, 3, 24), density, 0.3, 0.5 * s
        )
        box = _union(
            box,
            _paint_cell(
                canvas,
                rng,
                s,
                cyto,
                pal.od["glandular"],
                cyto_density,
                [nucleus],
                pal.od["nucleus"],
            ),
        )
    return box


def _draw_neutrophils(canvas, rng, cell: CellSpec, pal: Palette, s: float) -> Optional[Roi]:
    """A small group of neutrophils: faint round halo around 2-4 dark nuclear lobes."""
    for _ in range(cell.count):
        d, a = rng.uniform(0, cell.radius), rng.uniform(0, 2 * np.pi)
        cx, cy = cell.cx + d * np.cos(a), cell.cy + d * np.sin(a)
        cyto = _blob(
            rng,
            cx,
            cy,
            rng.uniform(4.8, 6.0) * s,
            rng.uniform(4.3, 5.5) * s,
            rng.uniform(0, np.pi),
            0.05,
            2,
            20,
        )
        lobes, start = int(rng.integers(2, 5)), rng.uniform(0, 2 * np.pi)
        nuclei = []
        for k in range(lobes):
            rl = cell.nucleus_radius * rng.uniform(0.85, 1.15)
            ang = start + k * 2 * np.pi / lobes + rng.uniform(-0.3, 0.3)
            dist = rl * rng.uniform(0.9, 1.3)
            nuclei.append(
                _Nucleus(
                    _blob(
                        rng,
                        cx + dist * np.cos(ang),
                        cy + dist * np.sin(ang),
                        rl,
                        rl * 0.85,
                        ang,
                        0.05,
                        2,
                        16,
                    ),
                    rng.uniform(1.2, 1.6),
                    0.1,
                    0.4 * s,
                )
            )
        _paint_cell(
            canvas,
            rng,
            s,
            cyto,
            pal.od["neutrophil_cyto"],
            rng.uniform(0.4, 0.7),
            nuclei,
            pal.od["nucleus"],
        )
    return None


_DRAW = {
    "ASC-US": _draw_squamous,
    "superficial": _draw_squamous,
    "intermediate": _draw_squamous,
    "reactive": _draw_squamous,
    "LSIL": _draw_lsil,
    "HSIL": _draw_round_cell,
    "metaplastic": _draw_round_cell,
    "AGC": _draw_columnar,
    "endocervical": _draw_columnar,
    "neutrophils": _draw_neutrophils,
}


def _draw_debris(canvas: _Canvas, rng: np.random.Generator, pal: Palette, s: float):
    """Faint mucus strands and small debris specks over the whole patch."""
    size = canvas.size
    layer = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(0, 3))):
        pts = np.cumsum(rng.normal(0, 40 * s, (int(rng.integers(3, 7)), 2)), axis=0)
        pts += rng.uniform(0, size, 2)
        cv2.polylines(
            layer,
            [np.round(pts).astype(np.int32)],
            False,
            0.12,
            max(1, int(round(rng.uniform(2, 6) * s))),
            cv2.LINE_AA,
        )
    layer = cv2.GaussianBlur(layer, (0, 0), 2.0 * s)
    canvas.add((0, 0, size, size), layer, pal.od["cyanophilic"])
    specks = np.zeros((size, size), np.float32)
    for x, y, r in rng.uniform(0, 1, (int(rng.integers(0, 12)), 3)):
        cv2.circle(
            specks,
            (int(x * size), int(y * size)),
            max(1, int(round((0.5 + r) * s))),
            0.3,
            -1,
            cv2.LINE_AA,
        )
    canvas.add((0, 0, size, size), cv2.GaussianBlur(specks, (0, 0), 0.8 * s), pal.od["nucleus"])


def draw_patch(rng: np.random.Generator, plan: PatchPlan) -> Tuple[np.ndarray, List[dict]]:
    """Draw a planned patch; return (RGB uint8 image, annotations of the abnormal cells)."""
    size, s = plan.image_size, plan.scale
    canvas = _Canvas(size)
    annotations = []
    min_box = MIN_BOX * max(1.0, size / REFERENCE_SIZE)
    for cell in plan.cells:
        box = _DRAW[cell.kind](canvas, rng, cell, plan.palette, s)
        if cell.category_id and box is not None:
            x0, y0, x1, y1 = box
            if x1 - x0 >= min_box and y1 - y0 >= min_box:
                annotations.append(
                    {
                        "category_id": cell.category_id,
                        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    }
                )
    _draw_debris(canvas, rng, plan.palette, s)
    light = 1.0 + 0.03 * _low_freq(rng, (size, size), 3)
    image = plan.palette.background[None, None, :] * light[:, :, None] * np.exp(-canvas.od)
    image = cv2.GaussianBlur(image, (0, 0), plan.blur_sigma)
    image += rng.standard_normal(image.shape, dtype=np.float32) * plan.noise_sigma
    return np.clip(np.round(image), 0, 255).astype(np.uint8), annotations


def render_patch(
    rng: np.random.Generator,
    image_size: int = 256,
    variation: bool = True,
    num_abnormal: Optional[int] = None,
) -> Tuple[np.ndarray, List[dict]]:
    """Render one synthetic Pap-smear patch.

    Args:
        rng: the patch's random stream (the patch is a pure function of its state).
        image_size: side of the square patch in pixels (sizes scale with it; 256 by default).
        variation: per-patch stain, scale, blur and noise variation when True.
        num_abnormal: number of abnormal cells; None draws 1..5. A cell whose visible box would
            be under 8 px (at 256 px) is left unboxed, so fewer boxes may come back.

    Returns:
        (image, annotations): an RGB uint8 (image_size, image_size, 3) array and a list of
        {"category_id": 1..4, "bbox": [x, y, w, h]} (absolute XYWH floats, inside the image).
    """
    return draw_patch(rng, plan_patch(rng, image_size, variation, num_abnormal))


# --------------------------------------------------------------------------------------------
# Data set on disk
# --------------------------------------------------------------------------------------------


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of image ``index`` of ``split``: independent of the other images."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def _atomic_write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def _coco(split: str, images: List[dict], annotations: List[dict], seed: int) -> dict:
    return {
        "info": {
            "description": f"dualalign synthetic Pap-smear patches, split {split}",
            "version": str(GENERATOR_VERSION),
            "seed": seed,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": n, "supercategory": "abnormal"} for i, n in enumerate(CLASS_NAMES)
        ],
    }


def _patient_counts(counts: Dict[str, int], num_patients: Optional[int]) -> Dict[str, int]:
    out = {}
    for split, n in counts.items():
        k = max(1, n // 4) if num_patients is None else max(1, int(num_patients))
        out[split] = min(k, n)
    return out


def _is_complete(out_dir: str, params: dict, paths: Dict[str, str]) -> bool:
    """True when the manifest matches ``params`` and every json and image is on disk."""
    manifest = os.path.join(out_dir, "manifest.json")
    try:
        with open(manifest) as f:
            if json.load(f).get("params") != params:
                return False
        for split in SPLITS + ("unlabeled_with_gt",):
            path = os.path.join(out_dir, f"{split}.json")
            with open(path) as f:
                images = json.load(f)["images"]
            if not all(
                os.path.isfile(os.path.join(paths["image_root"], im["file_name"])) for im in images
            ):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def generate_dataset(
    out_dir: str,
    *,
    seed: int = 0,
    image_size: int = 256,
    num_labeled: int = 60,
    num_unlabeled: int = 120,
    num_val: int = 20,
    num_test: int = 40,
    variation: bool = True,
    num_patients: Optional[int] = None,
) -> Dict[str, str]:
    """Write the synthetic data set (PNGs and COCO jsons) under ``out_dir``.

    Layout: ``images/<split>/NNNNNN.png``, ``labeled.json``, ``unlabeled.json`` (images only),
    ``unlabeled_with_gt.json`` (the hidden boxes of the unlabelled pool, for diagnostics),
    ``val.json``, ``test.json`` and ``manifest.json``. Every image has a ``patient_id``
    ("P0007"); patients are disjoint across splits. About 20% of the unlabelled pool has no
    abnormal cell; every other image has 1-5.

    Args:
        out_dir: output folder (created).
        seed: seed of the whole set; image i of a split depends only on (seed, split, i).
        image_size: side of the square patches in pixels.
        num_labeled, num_unlabeled, num_val, num_test: images per split.
        variation: per-image stain / scale variation (see ``render_patch``).
        num_patients: patients per split; default max(1, images // 4) per split.

    Returns:
        {"labeled", "unlabeled", "val", "test": json paths, "image_root": out_dir/images}.
        If ``manifest.json`` records the same parameters and all files exist, nothing is
        rewritten.
    """
    counts = {"labeled": num_labeled, "unlabeled": num_unlabeled, "val": num_val, "test": num_test}
    if min(counts.values()) < 0 or image_size < 32:
        raise ValueError(
            f"image counts must be >= 0 and image_size >= 32, got {counts}, "
            f"image_size={image_size}"
        )
    params = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "image_size": int(image_size),
        **{k: int(v) for k, v in counts.items()},
        "variation": bool(variation),
        "num_patients": None if num_patients is None else int(num_patients),
    }
    image_root = os.path.join(out_dir, "images")
    paths = {split: os.path.join(out_dir, f"{split}.json") for split in SPLITS}
    paths["image_root"] = image_root
    if _is_complete(out_dir, params, paths):
        return paths

    manifest = os.path.join(out_dir, "manifest.json")
    if os.path.exists(manifest):
        os.remove(manifest)  # the set is incomplete until the manifest is written again
    patients = _patient_counts(counts, num_patients)
    first_patient = 0
    for split in SPLITS:
        split_dir = os.path.join(image_root, split)
        os.makedirs(split_dir, exist_ok=True)
        for name in os.listdir(split_dir):  # stale images of an earlier, larger set
            if re.fullmatch(r"\d{6}\.png", name):
                os.remove(os.path.join(split_dir, name))
        images, annotations = [], []
        n, k = counts[split], patients[split]
        for i in range(n):
            rng = image_rng(seed, split, i)
            num_abnormal = None
            if split == "unlabeled" and rng.random() < UNLABELED_NEGATIVE_FRACTION:
                num_abnormal = 0
            image, anns = render_patch(rng, image_size, variation, num_abnormal)
            file_name = f"{split}/{i:06d}.png"
            if not cv2.imwrite(
                os.path.join(image_root, file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            ):
                raise OSError(f"could not write {os.path.join(image_root, file_name)}")
            images.append(
                {
                    "id": i + 1,
                    "file_name": file_name,
                    "width": image_size,
                    "height": image_size,
                    "patient_id": f"P{first_patient + i * k // n:04d}",
                }
            )
            for ann in anns:
                x, y, w, h = ann["bbox"]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": ann["category_id"],
                        "bbox": ann["bbox"],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        first_patient += k
        if split == "unlabeled":
            _atomic_write_json(
                os.path.join(out_dir, "unlabeled_with_gt.json"),
                _coco(split, images, annotations, seed),
            )
            annotations = []
        _atomic_write_json(paths[split], _coco(split, images, annotations, seed))
    _atomic_write_json(
        manifest,
        {"params": params, "files": {k: os.path.relpath(v, out_dir) for k, v in paths.items()}},
    )
    return paths
