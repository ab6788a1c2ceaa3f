#!/usr/bin/env python
"""Export a labelled COCO set as QuPath GeoJSON: one FeatureCollection per image.

Usage:
    python scripts/export_geojson.py --json annotations_train.json [--images DIR]
        --output DIR [--object-type annotation|detection]

The set is read with the training loader (every check of ``scripts/check_dataset.py`` applies;
images are not opened). Each image gets ``DIR/<image name>.geojson``: its boxes as rectangles
in pixel coordinates, classified with the category names in the colours of ``predict.py``'s
overlays, as QuPath annotations (editable; ``--object-type detection`` for detections). Import
them in QuPath beside ``predict.py``'s ``geojson/`` files to compare labels and predictions.
``scripts/import_geojson.py`` reads them back.
"""

import argparse
import os
import sys

from dualalign.data.geojson import OBJECT_TYPES, records_to_feature_collections
from dualalign.data.validation import DatasetError, load_coco_detection
from dualalign.inference.inputs import unique_stems
from dualalign.utils.atomic import atomic_write_json


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", required=True, help="labelled COCO detection json")
    parser.add_argument(
        "--images", default=None, help="folder of the images (default: the json's folder)"
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--object-type",
        choices=OBJECT_TYPES,
        default="annotation",
        help="QuPath object type of the boxes (default annotation)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    images = args.images or os.path.dirname(os.path.abspath(args.json))
    try:
        records, meta = load_coco_detection(args.json, images, check_images="none")
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    collections = records_to_feature_collections(records, meta["thing_classes"], args.object_type)
    stems = unique_stems([r["file_name"] for r in records])
    for stem, collection in zip(stems, collections):
        atomic_write_json(os.path.join(args.output, f"{stem}.geojson"), collection, indent=None)
    total = sum(len(r["annotations"]) for r in records)
    print(f"{len(records)} GeoJSON file(s), {total} boxes, written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
