"""What a synthetic patch holds: the constants, the stain palette and the per-patch plan.

A plan (:class:`PatchPlan`) lists every object of a patch (kind, class, place, size) and the
patch's palette, blur and noise; :mod:`.draw` turns it into pixels.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence

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
