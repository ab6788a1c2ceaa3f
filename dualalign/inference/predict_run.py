"""``scripts/predict.py``: detections of images and slides, and the outputs people open.

Per input: ``predict_input`` (one forward pass for an image, ``detect_slide`` for a slide or a
large image), then ``write_input_outputs`` (overview, GeoJSON, gallery crops); at the end the
run's files (COCO, CSV, summaries, report). The script's docstring lists the files.
"""

import argparse
import datetime
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from ..data.geojson import boxes_to_feature_collection
from ..report import (
    TRIAGE_MODES,
    TriageRule,
    describe_triage,
    triage_score,
    write_gallery,
    write_report,
)
from ..utils.atomic import atomic_write_json
from ..utils.visualize import class_name, draw_detections, draw_markers
from ..wsi.reader import open_slide
from .cli import (
    SetupError,
    add_common_arguments,
    cli_main,
    report_error,
    setup_predictor,
)
from .inputs import expand_inputs, input_kind, unique_stems
from .outputs import class_counts, write_csv, write_png
from .slide_inference import detect_slide, instances_to_arrays

OVERLAY_MAX_SIZE = 2048  # px, longer side of a slide's overlay thumbnail
CSV_HEADER = ("slide", "x", "y", "w", "h", "class", "score")
FORMATS = ("coco", "csv", "geojson", "overlay")


def _formats(text: str) -> list:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown output format(s) {unknown or [text]}; choose among {','.join(FORMATS)}"
        )
    return names


def _names(text: str) -> list:
    return [n.strip() for n in text.split(",") if n.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Detect abnormal cells in images and whole slides with a trained model.",
        epilog="Outputs, triage score and exit codes: see scripts/predict.py's docstring.",
    )
    add_common_arguments(parser, "--tile-size", overlap=64)
    parser.add_argument(
        "--format",
        type=_formats,
        default=list(FORMATS),
        metavar="A,B,...",
        help=f"outputs to write, comma-separated among {','.join(FORMATS)} (default all)",
    )
    parser.add_argument(
        "--report", action="store_true", help="also write report.html (galleries, triage)"
    )
    parser.add_argument(
        "--gallery-size", type=int, default=12, metavar="N", help="crops per class in the report"
    )
    parser.add_argument(
        "--triage",
        choices=TRIAGE_MODES,
        default="count",
        help="count: detections of --triage-classes with score >= --triage-thresh; max: their "
        "highest score (default count)",
    )
    parser.add_argument(
        "--triage-classes",
        type=_names,
        default=None,
        metavar="A,B,...",
        help="classes the triage score looks at, e.g. the highest-grade ones (default all)",
    )
    parser.add_argument(
        "--triage-thresh",
        type=float,
        default=None,
        metavar="T",
        help="score a detection needs to count in the triage score (default --score-thresh)",
    )
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


def write_input_outputs(det: dict, path: str, name: str, args, class_names, rule) -> dict:
    """Write one input's overview, GeoJSON and gallery; returns its summary entry."""
    out = args.output
    entry = {"slide": path, "overlay": None, "geojson": None}
    if "overlay" in args.format or args.report:
        draw = draw_detections if det["kind"] == "image" else draw_markers
        overlay = draw(
            det["overlay_background"],
            det["boxes"],
            det["classes"],
            det["scores"],
            class_names,
            scale=det["overlay_scale"],
        )
        entry["overlay"] = f"overlays/{name}.png"
        write_png(os.path.join(out, entry["overlay"]), overlay)
    if "geojson" in args.format:
        entry["geojson"] = f"geojson/{name}.geojson"
        collection = boxes_to_feature_collection(
            det["boxes"], det["classes"], class_names, det["scores"]
        )
        atomic_write_json(os.path.join(out, entry["geojson"]), collection, indent=None)
    counts = class_counts(det["classes"], class_names)
    entry.update(
        kind=det["kind"],
        level=det["level"],
        width=det["width"],
        height=det["height"],
        tiles=det["tiles"],
        tiles_run=det["tiles_run"],
        counts=counts,
        total=int(sum(counts.values())),
        triage=round(triage_score(det["scores"], det["classes"], class_names, rule), 5),
    )
    if args.report:
        with open_slide(path) as reader:  # crops are read one by one, at level 0
            entry["gallery"] = write_gallery(
                reader,
                det["boxes"],
                det["scores"],
                det["classes"],
                class_names,
                os.path.join(out, "crops", name),
                f"crops/{name}",
                args.gallery_size,
            )
    return entry


def run(args, predictor_factory=None) -> int:
    """Process every input and write the outputs; returns the exit code."""
    _, predictor, class_names, tile_size = setup_predictor(args, args.tile_size, predictor_factory)
    _check_report_arguments(args, class_names)
    rule = TriageRule(
        args.triage,
        args.triage_classes,
        args.score_thresh if args.triage_thresh is None else args.triage_thresh,
    )
    files, errors = expand_inputs(args.input)
    errors = [{"slide": path, "error": reason} for path, reason in errors]
    for e in errors:
        report_error(e["slide"], e["error"])
    os.makedirs(args.output, exist_ok=True)

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
            entry = write_input_outputs(det, path, name, args, class_names, rule)
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
        entry["image_id"] = image_id
        entry["seconds"] = round(time.time() - start, 2)
        slides.append(entry)

    _write_outputs(args, class_names, images, results, rows, slides, errors, rule)
    total = sum(s["total"] for s in slides)
    print(
        f"{len(slides)} input(s) done, {len(errors)} failed; {total} detections with score >= "
        f"{args.score_thresh} written to {args.output}",
        file=sys.stderr,
    )
    return 1 if errors else 0


def _check_report_arguments(args, class_names) -> None:
    if args.gallery_size < 0:
        raise SetupError(f"--gallery-size must be >= 0, got {args.gallery_size}")
    unknown = [c for c in args.triage_classes or () if c not in class_names]
    if unknown:
        raise SetupError(
            f"--triage-classes: {unknown} not among the model's classes {list(class_names)}; "
            "give names from that list"
        )


def _write_outputs(args, class_names, images, results, rows, slides, errors, rule) -> None:
    out = args.output
    if "coco" in args.format:
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]
        images_json = {"images": images, "categories": categories}
        atomic_write_json(os.path.join(out, "images.json"), images_json)
        atomic_write_json(os.path.join(out, "detections.coco.json"), results)
    if "csv" in args.format:
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
            "triage": {**rule._asdict(), "definition": describe_triage(rule)},
            "slides": [{k: v for k, v in s.items() if k != "gallery"} for s in slides],
            "totals": {**totals, "total": int(sum(totals.values()))},
            "errors": errors,
        },
    )
    if args.report:
        links = [
            (label, href)
            for label, href, fmt in (
                ("detections.csv", "detections.csv", "csv"),
                ("detections.coco.json", "detections.coco.json", "coco"),
                ("summary.csv", "summary.csv", None),
                ("summary.json", "summary.json", None),
            )
            if fmt is None or fmt in args.format
        ]
        run_info = {
            "title": f"Detections: {len(slides)} input(s)",
            "created": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "config_file": args.config_file,
            "weights": args.weights,
            "score_thresh": args.score_thresh,
            "triage": describe_triage(rule),
            "links": links,
            "errors": errors,
        }
        report_slides = [{**s, "name": os.path.basename(s["slide"])} for s in slides]
        write_report(os.path.join(out, "report.html"), run_info, class_names, report_slides)


def main(argv=None, predictor_factory=None) -> int:
    """Entry point; ``predictor_factory(cfg, args)`` replaces the model (tests only)."""
    return cli_main(parse_args, run, argv, predictor_factory)
