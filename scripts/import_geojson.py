#!/usr/bin/env python
"""Import boxes drawn in QuPath (GeoJSON) as a COCO labelled set that training accepts.

Usage:
    python scripts/import_geojson.py --geojson PATH [PATH ...] --images DIR --output OUT.json
        [--classes A,B,...] [--polygons error|bbox] [--check-images none|header|full]

Each ``.geojson`` (or ``.json``) file, given or found in a given folder, holds the boxes of one
image of ``--images`` (searched recursively), found by name: ``slide7.geojson`` or
``slide7.svs.geojson`` goes with ``slide7.svs``. Boxes are QuPath rectangles (Polygons of four
corners) with a classification; any other polygon is refused unless ``--polygons bbox``, which
takes its bounding box. Categories are ``--classes`` in that order (ids from 1), else the class
names found, sorted. The written set is then loaded with the training loader, so every check of
``scripts/check_dataset.py`` applies.

Exit status: 0 on success (a summary on stdout), 1 on the first problem (``error: <file>:
feature <i>: <problem>; <fix>`` on stderr), 2 on bad arguments.
"""

import argparse
import os
import sys
from collections import Counter

from dualalign.data.geojson import feature_collection_to_boxes, features_to_coco, load_geojson
from dualalign.data.image_io import ImageReadError, read_image_size
from dualalign.data.validation import CHECK_IMAGES, DatasetError, load_coco_detection
from dualalign.inference.inputs import INPUT_EXTENSIONS
from dualalign.utils.atomic import atomic_write_json
from dualalign.wsi.reader import SlideReadError, open_slide

_GEOJSON_EXTENSIONS = (".geojson", ".json")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--geojson", required=True, nargs="+", metavar="PATH", help="GeoJSON files or folders"
    )
    parser.add_argument("--images", required=True, help="folder of the images (recursive)")
    parser.add_argument("--output", required=True, metavar="OUT.json", help="COCO file to write")
    parser.add_argument(
        "--classes",
        type=lambda t: [n.strip() for n in t.split(",") if n.strip()],
        default=None,
        metavar="A,B,...",
        help="category names in id order (default: the names found, sorted)",
    )
    parser.add_argument(
        "--polygons",
        choices=("error", "bbox"),
        default="error",
        help="a polygon that is not a rectangle: error (default) or its bounding box",
    )
    parser.add_argument(
        "--check-images",
        choices=CHECK_IMAGES,
        default="header",
        help="how the written set's images are checked (default header)",
    )
    return parser.parse_args(argv)


def geojson_files(paths):
    """The GeoJSON files among ``paths`` and inside folders of them (sorted)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [
                    os.path.join(root, n)
                    for n in sorted(names)
                    if n.lower().endswith(_GEOJSON_EXTENSIONS) and not n.startswith(".")
                ]
        else:
            files.append(path)
    return files


def image_index(folder: str) -> dict:
    """Image path relative to ``folder``, by file name and by name without extension."""
    by_name = {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            if n.lower().endswith(INPUT_EXTENSIONS) and not n.startswith("."):
                rel = os.path.relpath(os.path.join(root, n), folder)
                by_name.setdefault(n, []).append(rel)
                by_name.setdefault(os.path.splitext(n)[0], []).append(rel)
    return by_name


def match_image(geojson_path: str, index: dict, folder: str) -> str:
    """The image (relative to ``folder``) that a GeoJSON file's name points to."""
    key = os.path.splitext(os.path.basename(geojson_path))[0]
    found = sorted(set(index.get(key, [])))
    if len(found) != 1:
        problem = (
            f"no image named {key}.* under {folder}"
            if not found
            else f"{len(found)} images match its name ({', '.join(found[:3])})"
        )
        raise DatasetError(
            geojson_path,
            None,
            problem,
            "name each GeoJSON file after its image (slide7.geojson or slide7.svs.geojson for "
            "slide7.svs), with one such image under --images",
        )
    return found[0]


def image_size(path: str):
    """``(width, height)`` of an image or a slide's level 0."""
    try:
        height, width = read_image_size(path)
        return width, height
    except ImageReadError:
        with open_slide(path) as reader:
            return reader.level_dimensions[0]


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        files = geojson_files(args.geojson)
        if not files:
            raise DatasetError(
                " ".join(args.geojson), None, "holds no .geojson file", "give GeoJSON files"
            )
        index = image_index(args.images)
        images = []
        for path in files:
            rel = match_image(path, index, args.images)
            width, height = image_size(os.path.join(args.images, rel))
            boxes = feature_collection_to_boxes(load_geojson(path), path, args.polygons)
            images.append(({"file_name": rel, "width": width, "height": height}, boxes))
        coco = features_to_coco(images, args.classes)
        atomic_write_json(args.output, coco)
        load_coco_detection(args.output, args.images, check_images=args.check_images)
    except (DatasetError, SlideReadError, ImageReadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    counts = Counter(a["category_id"] for a in coco["annotations"])
    per_class = ", ".join(f"{c['name']} {counts[c['id']]}" for c in coco["categories"])
    print(
        f"{len(coco['images'])} image(s), {len(coco['annotations'])} boxes ({per_class}) "
        f"written to {args.output}; it passes the training loader's checks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
