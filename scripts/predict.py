#!/usr/bin/env python
"""Detect abnormal cells in images and whole slides with a trained model.

Usage:
    python scripts/predict.py --config-file CFG --weights W.pth --input PATH [PATH ...]
        --output DIR [--score-thresh 0.5] [--tile-size PX] [--overlap 64] [--level 0]
        [--batch-size 4] [--device auto|cpu|cuda] [--min-tissue 0.05] [--classes A,B,...]
        [--format coco,csv,geojson,overlay] [--report] [--gallery-size 12]
        [--triage count|max] [--triage-classes A,B,...] [--triage-thresh T] [KEY VALUE ...]

Config overrides (``KEY VALUE``) go last, after another flag than ``--input`` (or after
``--``). Each input is an image, a slide or a folder of them (searched recursively):
multi-level slides are tiled over ``--level``, images larger than two tiles are tiled over
level 0, smaller images are run whole (see ``dualalign/inference/inputs.py``). Tiles on glass
are skipped (``--min-tissue``).

Outputs in DIR (each written atomically; ``--format`` picks among the first four groups, all
by default):
    detections.coco.json  (coco) COCO results: image_id, category_id (1-based, class order),
                          bbox [x, y, w, h] in level-0 pixels, score; with images.json:
                          "images": id -> file_name (the input path), width, height, kind;
                          "categories": id -> name
    detections.csv        (csv) slide,x,y,w,h,class,score
    geojson/<name>.geojson  (geojson) a FeatureCollection per input that QuPath imports as
                          detections (level-0 pixels, class colours, score as a measurement)
    overlays/<name>.png   (overlay) an image: labelled boxes; a slide or large image: a
                          thumbnail <= 2048 px with a dot per detection in its class colour
                          and a legend
    summary.csv / .json   always: per input, detections of each class and in total, and the
                          triage score; summary.json also lists the inputs that failed
    report.html, crops/   (--report) a page that opens from disk: the inputs by triage score
                          with their counts, and per input its overview and the top
                          --gallery-size crops of each class, read from level 0

Triage score (``--triage``): ``count`` (default) is the number of detections of the
``--triage-classes`` (default all) with score >= ``--triage-thresh`` (default
``--score-thresh``); ``max`` is the highest score among detections of those classes.

Only detections with score >= --score-thresh are written. An unreadable input is reported in
one line on stderr and under "errors", the others are still processed, and the exit code is 1;
0 when every input succeeded, 2 when the run cannot start (config, weights, arguments).
The code is ``dualalign/inference/predict_run.py``.
"""

import sys

from dualalign.inference.predict_run import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
