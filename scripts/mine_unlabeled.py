#!/usr/bin/env python
"""Build the unlabelled pool from slides: the tissue patches a trained detector flags.

The paper's unlabelled set is made of patches of whole slides in which a detector trained on
the labelled set finds at least one abnormal cell. This script runs such a detector over
slides or large images (the same inputs as ``scripts/predict.py``) and keeps every tissue tile
with a detection scoring at least ``--score-thresh``.

Usage:
    python scripts/mine_unlabeled.py --config-file CFG --weights W.pth --input PATH [PATH ...]
        --output OUT [--score-thresh 0.5] [--patch-size PX] [--overlap 0] [--level 0]
        [--batch-size 4] [--device auto|cpu|cuda] [--min-tissue 0.05] [KEY VALUE ...]

Outputs:
    OUT/images/<slide>/<x>_<y>.png  the patches (x, y: level-0 pixels of the top-left corner)
    OUT/unlabeled.json              COCO "images" (id, file_name relative to OUT/images, width,
                                    height, and provenance: slide, level, x, y, downsample,
                                    top_score, top_class, num_detections), "annotations": [],
                                    "categories"
    OUT/state/<slide>.json          a finished slide's patches and the settings used

Use the pool with ``load_unlabeled("OUT/unlabeled.json", "OUT/images")`` or, in a config,
``DUALALIGN.DATASETS.UNLABELED: [["name", "OUT/unlabeled.json", "OUT/images"]]``.

Resuming: a slide is finished once its state file is written (atomically, after its last
patch). A rerun skips finished slides mined with the same settings and weights, re-mines the
others from scratch, and rebuilds unlabeled.json from every state file in OUT/state (also those
of slides not named in this run). An unreadable slide is reported in one line on stderr and
skipped; the exit code is then 1 (0 when all succeeded, 2 when the run cannot start).
The code is ``dualalign/inference/mine_run.py``.
"""

import sys

from dualalign.inference.mine_run import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
