"""One drawing function per kind of object, and a whole patch from its plan."""

from typing import List, Optional, Tuple

import cv2
import numpy as np

from .canvas import Canvas, Nucleus, Roi, angular, blob, low_freq, paint_cell, superellipse, union
from .plan import MIN_BOX, REFERENCE_SIZE, CellSpec, Palette, PatchPlan, plan_patch

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
    cyto = angular(
        rng, cell.cx, cell.cy, cell.radius, aspect, rng.uniform(0, np.pi), int(rng.integers(5, 9))
    )
    nx, ny = _nucleus_offset(rng, cell)
    rn = cell.nucleus_radius
    nucleus = Nucleus(
        blob(rng, nx, ny, rn, rn * rng.uniform(0.8, 1.0), rng.uniform(0, np.pi), irregular, 3, 24),
        density,
        chromatin,
        grain * s,
    )
    return paint_cell(
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
    cyto = angular(
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
        Nucleus(
            blob(rng, x, y, rn, rn * rng.uniform(0.75, 0.95), rng.uniform(0, np.pi), 0.08, 4, 28),
            rng.uniform(1.05, 1.35),
            0.3,
            0.6 * s,
        )
        for x, y in centres
    ]
    halo_r = min(rn * rng.uniform(1.9, 2.6), 0.8 * cell.radius)
    halo = blob(
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
    return paint_cell(
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
    cyto = blob(
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
        nucleus = Nucleus(
            blob(
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
        nucleus = Nucleus(
            blob(rng, nx, ny, rn, rn * rng.uniform(0.85, 1.0), 0.0, 0.03, 3, 24),
            rng.uniform(0.75, 0.95),
            0.25,
            0.5 * s,
        )
    return paint_cell(
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
        cyto = superellipse(c[0], c[1], ln / 2, width / 2, tilt)
        if agc:
            rx, ry = ln * rng.uniform(0.17, 0.24), width * rng.uniform(0.38, 0.5)
            shift, density, irregular = rng.uniform(0.05, 0.3) * ln, rng.uniform(1.0, 1.3), 0.08
        else:
            rx, ry, shift, density, irregular = 0.13 * ln, 0.3 * width, 0.3 * ln, 0.75, 0.02
        d = np.array([np.cos(tilt), np.sin(tilt)])
        nc = c + shift * d
        nucleus = Nucleus(
            blob(rng, nc[0], nc[1], rx, ry, tilt, irregular, 3, 24), density, 0.3, 0.5 * s
        )
        box = union(
            box,
            paint_cell(
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
        cyto = blob(
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
                Nucleus(
                    blob(
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
        paint_cell(
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


def _draw_debris(canvas: Canvas, rng: np.random.Generator, pal: Palette, s: float):
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
    canvas = Canvas(size)
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
    light = 1.0 + 0.03 * low_freq(rng, (size, size), 3)
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
