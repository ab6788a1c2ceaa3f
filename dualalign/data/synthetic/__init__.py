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

The package's modules follow these steps: :mod:`.plan` (constants, palette, what goes where),
:mod:`.canvas` (drawing primitives), :mod:`.draw` (one function per kind of object, a whole
patch), :mod:`.dataset` (the splits on disk) and :mod:`.cli` (``scripts/make_synthetic.py``).
"""

from .dataset import generate_dataset, image_rng
from .draw import draw_patch, render_patch
from .plan import (
    ABNORMAL_COUNT_PROBS,
    CLASS_NAMES,
    CLASS_PROBS,
    GENERATOR_VERSION,
    MIMIC_KINDS,
    MIMIC_PROBS,
    MIMIC_RANGE,
    MIN_BOX,
    REFERENCE_SIZE,
    SPLITS,
    UNLABELED_NEGATIVE_FRACTION,
    CellSpec,
    Palette,
    PatchPlan,
    make_palette,
    plan_patch,
)

__all__ = [
    "ABNORMAL_COUNT_PROBS",
    "CLASS_NAMES",
    "CLASS_PROBS",
    "GENERATOR_VERSION",
    "MIMIC_KINDS",
    "MIMIC_PROBS",
    "MIMIC_RANGE",
    "MIN_BOX",
    "REFERENCE_SIZE",
    "SPLITS",
    "UNLABELED_NEGATIVE_FRACTION",
    "CellSpec",
    "Palette",
    "PatchPlan",
    "draw_patch",
    "generate_dataset",
    "image_rng",
    "make_palette",
    "plan_patch",
    "render_patch",
]
