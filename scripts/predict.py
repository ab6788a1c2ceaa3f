#!/usr/bin/env python
"""Detect abnormal cells in images and whole slides with a trained model.

Usage:
    python scripts/predict.py --config-file CFG --weights W.pth --input PATH [PATH ...]
        --output DIR [--score-thresh 0.5] [--tile-size PX] [--overlap 64] [--level 0]
        [--batch-size 4] [--device auto|cpu|cuda] [--min-tissue 0.05] [--classes A,B,...]
        [KEY VALUE ...]

Config overrides (``KEY VALUE``) go last, after another flag than ``--input`` (or after
``--``). Each input is an image, a slide or a folder of them (searched recursively):
multi-level slides are tiled over ``--level``, images larger than two tiles are tiled over
level 0, smaller images are run whole (see ``dualalign/inference/inputs.py``). Tiles on glass
are skipped (``--min-tissue``).

Outputs in DIR (each written atomically):
    detections.coco.json  COCO results: image_id, category_id (1-based, class order), bbox
                          [x, y, w, h] in level-0 pixels, score
    images.json           "images": id -> file_name (the input path), width, height, kind;
                          "categories": id -> name
    detections.csv        slide,x,y,w,h,class,score
    summary.csv / .json   per input: detections of each class and in total; summary.json
                          also lists the inputs that failed under "errors"
    overlays/<name>.png   boxes drawn on the image, or on a slide thumbnail <= 2048 px

Only detections with score >= --score-thresh are written. An unreadable input is reported in
one line on stderr and under "errors", the others are still processed, and the exit code is 1;
0 when every input succeeded, 2 when the run cannot start (config, weights, arguments).
"""

import argparse
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from dualalign.inference.cli import add_common_arguments, cli_main, report_error, setup_predictor
from dualalign.inference.inputs import expand_inputs, input_kind, unique_stems
from dualalign.inference.outputs import class_counts, write_csv, write_png
from dualalign.inference.slide_inference import detect_slide, instances_to_arrays
from dualalign.utils.atomic import atomic_write_json
from dualalign.utils.visualize import class_name, draw_detections
from dualalign.wsi.reader import open_slide

OVERLAY_MAX_SIZE = 2048  # px, longer side of a slide's overlay thumbnail
CSV_HEADER = ("slide", "x", "y", "w", "h", "class", "score")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, "--tile-size", overlap=64)
    return parser.parse_args(argv)


def predict_input(predictor, path: str, args, tile_size: int) -> dict:
    """Detections of one input: ``{"kind", "level", "width", "height", "boxes", "scores",
    "classes", "tiles", "tiles_run", "overlay_background", "overlay_scale"}`` (level-0 boxes,
    only scores >= --score-thresh)."""
    with open_slide(path) as reader:
        kind = input_kind(reader, tile_size)
        width, height = reader.level_dimensions[0]
        if kind == "image":
            image = reader.read_region(0, 0, 0, width, height)
            boxes, scores, classes = instances_to_arrays(predictor.predict([image])[0])
            level, tiles, tiles_run, background, scale = 0, 1, 1, image, 1.0
        else:
            level = args.level if kind == "slide" else 0
            result = detect_slide(
                predictor,
                reader,
                level=level,
                tile_size=tile_size,
                overlap=args.overlap,
                tissue_threshold=args.tissue_threshold,
                min_tissue=args.min_tissue,
                batch_size=args.batch_size,
                score_thresh=args.score_thresh,
                progress=not args.no_progress,
                desc=os.path.basename(path),
            )
            boxes, scores, classes = result["boxes"], result["scores"], result["classes"]
            tiles, tiles_run = len(result["tiles"]), len(result["selected"])
            background = reader.thumbnail(OVERLAY_MAX_SIZE)
            scale = background.shape[1] / width
    keep = scores >= args.score_thresh
    order = np.argsort(-scores[keep], kind="stable")
    return {
        "kind": kind,
        "level": level,
        "width": width,
        "height": height,
        "boxes": boxes[keep][order],
        "scores": scores[keep][order],
        "classes": classes[keep][order],
        "tiles": tiles,
        "tiles_run": tiles_run,
        "overlay_background": background,
        "overlay_scale": scale,
    }


def run(args, predictor_factory=None) -> int:
    """Process every input and write the outputs; returns the exit code."""
    _, predictor, class_names, tile_size = setup_predictor(args, args.tile_size, predictor_factory)
    files, errors = expand_inputs(args.input)
    errors = [{"slide": path, "error": reason} for path, reason in errors]
    for e in errors:
        report_error(e["slide"], e["error"])
    os.makedirs(os.path.join(args.output, "overlays"), exist_ok=True)

    images, results, rows, slides = [], [], [], []
    for path, name in tqdm(
        list(zip(files, unique_stems(files))),
        desc="inputs",
        unit="input",
        disable=args.no_progress,
        dynamic_ncols=True,
    ):
        start = time.time()
        try:
            det = predict_input(predictor, path, args, tile_size)
            overlay = draw_detections(
                det["overlay_background"],
                det["boxes"],
                det["classes"],
                det["scores"],
                class_names,
                scale=det["overlay_scale"],
            )
            write_png(os.path.join(args.output, "overlays", f"{name}.png"), overlay)
        except Exception as e:  # one bad input must not stop the others
            reason = str(e) if str(e).startswith(path) else f"{type(e).__name__}: {e}"
            report_error(path, reason)
            errors.append({"slide": path, "error": reason})
            continue
        image_id = len(images) + 1
        images.append(
            {
                "id": image_id,
                "file_name": path,
                "width": det["width"],
                "height": det["height"],
                "kind": det["kind"],
                "level": det["level"],
            }
        )
        for (x0, y0, x1, y1), score, cls in zip(det["boxes"], det["scores"], det["classes"]):
            xywh = [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)]
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": xywh,
                    "score": round(float(score), 5),
                }
            )
            rows.append([path, *xywh, class_name(class_names, cls), round(float(score), 5)])
        counts = class_counts(det["classes"], class_names)
        slides.append(
            {
                "slide": path,
                "image_id": image_id,
                "overlay": f"overlays/{name}.png",
                "kind": det["kind"],
                "level": det["level"],
                "width": det["width"],
                "height": det["height"],
                "tiles": det["tiles"],
                "tiles_run": det["tiles_run"],
                "counts": counts,
                "total": int(sum(counts.values())),
                "seconds": round(time.time() - start, 2),
            }
        )

    _write_outputs(args, class_names, images, results, rows, slides, errors)
    total = sum(s["total"] for s in slides)
    print(
        f"{len(slides)} input(s) done, {len(errors)} failed; {total} detections with score >= "
        f"{args.score_thresh} written to {args.output}",
        file=sys.stderr,
    )
    return 1 if errors else 0


def _write_outputs(args, class_names, images, results, rows, slides, errors) -> None:
    out = args.output
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]
    images_json = {"images": images, "categories": categories}
    atomic_write_json(os.path.join(out, "images.json"), images_json)
    atomic_write_json(os.path.join(out, "detections.coco.json"), results)
    write_csv(os.path.join(out, "detections.csv"), CSV_HEADER, rows)
    write_csv(
        os.path.join(out, "summary.csv"),
        ("slide", *class_names, "total"),
        ([s["slide"], *(s["counts"].get(n, 0) for n in class_names), s["total"]] for s in slides),
    )
    totals = {n: sum(s["counts"].get(n, 0) for s in slides) for n in class_names}
    atomic_write_json(
        os.path.join(out, "summary.json"),
        {
            "config_file": args.config_file,
            "weights": args.weights,
            "score_thresh": args.score_thresh,
            "classes": list(class_names),
            "slides": slides,
            "totals": {**totals, "total": int(sum(totals.values()))},
            "errors": errors,
        },
    )


def main(argv=None, predictor_factory=None) -> int:
    """Entry point; ``predictor_factory(cfg, args)`` replaces the model (tests only)."""
    return cli_main(parse_args, run, argv, predictor_factory)


if __name__ == "__main__":
    sys.exit(main())
