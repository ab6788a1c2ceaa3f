"""Load and validate labelled COCO detection sets; the errors and file checks all loaders share.

The trainer registers its datasets through these loaders (unlabelled pools:
``unlabeled_pool.py``) and ``scripts/check_dataset.py`` runs the very same code, so a set the
checker accepts is a set training accepts. Every
problem raises ``DatasetError`` with the message ``"<file>: <record>: <problem>; <fix>"``,
e.g. ``"annotations_train.json: annotation 17: bbox width is 0; boxes must have positive
width and height"``.

What is checked, and what happens:

==========================================  =============================================
input                                       outcome
==========================================  =============================================
invalid / truncated JSON                    error with the line and column
missing images / annotations / categories   error
no images                                   error
duplicate image id / annotation id          error
annotation on an unknown image id           error
undeclared category id                      error listing the declared ones
bbox not 4 finite numbers                   error
bbox width or height <= 0                   error
bbox wholly outside its image               error
bbox partly outside its image               clipped to the image, counted, one warning
``iscrowd: 1`` annotation                   dropped and counted (as detectron2 does)
image without annotations                   kept (a negative patch)
missing image files                         error listing up to 5 names and the total
image size differs from the json            error (``check_images`` "header" or "full")
truncated / undecodable image               error (``check_images="full"``)
==========================================  =============================================
"""

import json
import logging
import math
import os

import numpy as np
from detectron2.structures import BoxMode

from dualalign.data.image_io import ImageReadError, read_image, read_image_size

__all__ = ["CHECK_IMAGES", "DatasetError", "load_coco_detection"]

logger = logging.getLogger("dualalign.data")

# How much of each image file is checked: nothing, the header (exists, is an image, size
# matches the json), or a full decode (also catches truncated files).
CHECK_IMAGES = ("none", "header", "full")
_MAX_LISTED = 5  # missing files named in one error message
_CLIP_TOL = 1e-3  # px; exporters' float round-off past the border is clipped silently
_IMAGE_KEYS = ("id", "file_name", "width", "height")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")
_RECORD_KEYS = ("file_name", "image_id", "height", "width", "annotations")


class DatasetError(ValueError):
    """A dataset file that cannot be trained on.

    ``str(err)`` is ``"<file>: <record>: <problem>; <fix>"`` (without ``<record>: `` when the
    problem concerns the whole file). The parts are kept as attributes of the same names.
    """

    def __init__(self, file, record, problem, fix):
        self.file = os.fspath(file)
        self.record = record
        self.problem = problem
        self.fix = fix
        where = f"{self.file}: {record}" if record else self.file
        super().__init__(f"{where}: {problem}; {fix}")

    def __reduce__(self):
        return (type(self), (self.file, self.record, self.problem, self.fix))


def load_coco_detection(json_file, image_root, *, check_images="header", dataset_name=None):
    """Load a COCO detection json as detectron2 records, refusing anything malformed.

    Args:
        json_file (str): COCO file with "images", "annotations" and "categories".
        image_root (str): folder that the images' ``file_name`` are relative to.
        check_images (str): one of ``CHECK_IMAGES``. "header" opens each image header
            (exists, is an image, size matches the json); "full" decodes every image (also
            catches truncated files); "none" skips the files altogether.
        dataset_name (str | None): registered name, only used in error messages.

    Returns:
        tuple[list[dict], dict]: ``(records, meta)``. Each record is ``{"file_name": absolute
        path, "image_id", "height", "width", "annotations": [{"bbox": [x, y, w, h],
        "bbox_mode": BoxMode.XYWH_ABS, "category_id": contiguous 0-based id}]}`` plus the
        image's extra json fields (e.g. "patient_id"). ``meta`` holds "thing_classes" (names
        sorted by category id), "thing_dataset_id_to_contiguous_id", "json_file",
        "image_root", "num_clipped" and "num_crowd_dropped".

    Raises:
        DatasetError: see the module docstring for every case.
    """
    _check_mode(check_images)
    json_file = os.fspath(json_file)
    src = _source_label(json_file, dataset_name)
    data = _read_json(json_file, src)
    if not isinstance(data, dict):
        raise DatasetError(
            src,
            None,
            f"the top level is a JSON {type(data).__name__}, not an object",
            "a COCO file is an object with 'images', 'annotations' and 'categories' lists",
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            problem = f"'{key}' is not a list" if key in data else f"has no '{key}' key"
            raise DatasetError(
                src,
                None,
                problem,
                "a COCO detection file needs 'images', 'annotations' and 'categories' lists",
            )
    thing_classes, id_map = _parse_categories(data["categories"], src)
    records = _parse_images(data["images"], image_root, src)
    by_id = {r["image_id"]: r for r in records}
    num_clipped, num_crowd, first_clipped = _parse_annotations(
        data["annotations"], by_id, id_map, thing_classes, src
    )
    _check_files(
        records, src, check_images, image_root, f"check --images / the image_root ({image_root})"
    )

    if num_crowd:
        logger.info("%s: dropped %d iscrowd=1 annotations", src, num_crowd)
    if num_clipped:
        logger.warning(
            "%s: %d %s partly outside their image and clipped to it (first: %s)",
            src,
            num_clipped,
            "box was" if num_clipped == 1 else "boxes were",
            first_clipped,
        )
    meta = {
        "thing_classes": thing_classes,
        "thing_dataset_id_to_contiguous_id": id_map,
        "json_file": json_file,
        "image_root": image_root,
        "num_clipped": num_clipped,
        "num_crowd_dropped": num_crowd,
    }
    return records, meta


# --------------------------------------------------------------------------------------------
# helpers


def _check_mode(check_images):
    if check_images not in CHECK_IMAGES:
        raise ValueError(f"check_images must be one of {CHECK_IMAGES}, got {check_images!r}")


def _source_label(json_file, dataset_name):
    return f"{json_file} (dataset '{dataset_name}')" if dataset_name else json_file


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _read_json(json_file, src):
    fix = "re-export the file and check it is complete (a cut-off copy ends early)"
    try:
        with open(json_file, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DatasetError(src, None, "file not found", "check the --json path") from None
    except OSError as e:
        raise DatasetError(src, None, f"cannot read: {e.strerror or e}", "check the path") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(src, None, f"is not UTF-8 text (byte {e.start})", fix) from None
    if not text.strip():
        raise DatasetError(src, None, "is empty", fix)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno} (char {e.pos})"
        if not text[e.pos :].strip():
            problem = f"JSON ends early at {where}: the file looks truncated"
        else:
            problem = f"invalid JSON at {where}: {e.msg}"
        raise DatasetError(src, None, problem, fix) from None


def _parse_categories(categories, src):
    """Return ``(thing_classes, dataset id -> contiguous id)``; ids sorted, any integers."""
    if not categories:
        raise DatasetError(
            src,
            None,
            "declares no categories",
            'list the classes under \'categories\', e.g. [{"id": 1, "name": "NILM"}]',
        )
    names = {}
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DatasetError(
                src,
                f"category #{i}",
                "lacks 'id' or 'name'",
                "each category needs an integer 'id' and a 'name'",
            )
        cid = cat["id"]
        if not _is_int(cid):
            raise DatasetError(
                src,
                f"category #{i}",
                f"has id {cid!r}, not an integer",
                "category ids must be integers",
            )
        if cid in names:
            raise DatasetError(
                src,
                f"category {cid}",
                f"is declared twice ({names[cid]!r} and {cat['name']!r})",
                "give each category a unique id",
            )
        names[cid] = str(cat["name"])
    ids = sorted(names)
    return [names[c] for c in ids], {c: i for i, c in enumerate(ids)}


def _parse_images(images, image_root, src):
    if not images:
        raise DatasetError(
            src,
            None,
            "contains no images",
            "export at least one image (an image without boxes is allowed)",
        )
    records, seen = [], {}
    for i, img in enumerate(images):
        if not isinstance(img, dict):
            raise DatasetError(src, f"image #{i}", "is not an object", "re-export the file")
        label = f"image {img['id']!r}" if "id" in img else f"image #{i}"
        missing = [k for k in _IMAGE_KEYS if k not in img]
        if missing:
            raise DatasetError(
                src,
                label,
                f"lacks {', '.join(repr(k) for k in missing)}",
                "each image needs 'id', 'file_name', 'width' and 'height'",
            )
        iid, name = img["id"], img["file_name"]
        if not (_is_int(iid) or isinstance(iid, str)):
            raise DatasetError(
                src, f"image #{i}", f"has id {iid!r}", "image ids must be integers or strings"
            )
        if iid in seen:
            raise DatasetError(
                src,
                f"image id {iid!r}",
                f"is used twice ({seen[iid]} and {name})",
                "image ids must be unique; renumber the images and their annotations' image_id",
            )
        seen[iid] = name
        if not isinstance(name, str) or not name:
            raise DatasetError(
                src, label, f"has file_name {name!r}", "file_name must be a non-empty path"
            )
        for key in ("width", "height"):
            if not _is_int(img[key]) or img[key] <= 0:
                raise DatasetError(
                    src,
                    f"image {name}",
                    f"has {key} {img[key]!r}",
                    "width and height must be positive integers (the image's size in pixels)",
                )
        record = {
            "file_name": os.path.abspath(os.path.join(image_root, name)),
            "image_id": iid,
            "height": int(img["height"]),
            "width": int(img["width"]),
            "annotations": [],
        }
        for key, value in img.items():
            if key not in _IMAGE_KEYS and key not in _RECORD_KEYS:
                record[key] = value
        record["_name"] = name  # json file_name, for messages; removed before returning
        records.append(record)
    return records


def _parse_annotations(annotations, by_id, id_map, thing_classes, src):
    """Fill ``by_id[...]["annotations"]``; return ``(num_clipped, num_crowd, first_clipped)``."""
    seen = {}
    num_clipped = num_crowd = 0
    first_clipped = None
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise DatasetError(src, f"annotation #{i}", "is not an object", "re-export the file")
        label = f"annotation {ann['id']!r}" if "id" in ann else f"annotation #{i}"
        missing = [k for k in _ANNOTATION_KEYS if k not in ann]
        if missing:
            raise DatasetError(
                src,
                label,
                f"lacks {', '.join(repr(k) for k in missing)}",
                "each annotation needs 'id', 'image_id', 'category_id' and 'bbox' "
                "[x, y, width, height]",
            )
        aid = ann["id"]
        if not (_is_int(aid) or isinstance(aid, str)):
            raise DatasetError(
                src, f"annotation #{i}", f"has id {aid!r}", "annotation ids must be integers"
            )
        if aid in seen:
            raise DatasetError(
                src,
                label,
                f"id is used twice (annotations #{seen[aid]} and #{i} in the list)",
                "annotation ids must be unique; renumber the annotations",
            )
        seen[aid] = i
        iid = ann["image_id"]
        if not (_is_int(iid) or isinstance(iid, str)) or iid not in by_id:
            raise DatasetError(
                src,
                label,
                f"refers to image_id {iid!r}, which is not in 'images'",
                "add the image to 'images' or remove the annotation",
            )
        cid = ann["category_id"]
        if not _is_int(cid) or cid not in id_map:
            declared = ", ".join(f"{c} ({thing_classes[j]})" for c, j in id_map.items())
            raise DatasetError(
                src,
                label,
                f"has category_id {cid!r}, which is not declared in 'categories'",
                f"declared ids are {declared}; add the category or fix the annotation",
            )
        if ann.get("iscrowd", 0):
            num_crowd += 1
            continue
        record = by_id[iid]
        box, clipped = _check_box(ann["bbox"], record, label, src)
        if clipped:
            num_clipped += 1
            first_clipped = first_clipped or f"{label} on {record['_name']}"
        record["annotations"].append(
            {"bbox": box, "bbox_mode": BoxMode.XYWH_ABS, "category_id": id_map[cid]}
        )
    for record in by_id.values():
        del record["_name"]
    return num_clipped, num_crowd, first_clipped


def _check_box(bbox, record, label, src):
    """Validate one COCO ``[x, y, w, h]`` box; return ``(box clipped to the image, clipped)``."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(map(_is_number, bbox)):
        raise DatasetError(
            src,
            label,
            f"has bbox {bbox!r}, not 4 numbers [x, y, width, height]",
            "write boxes in COCO format: [x, y, width, height] in pixels",
        )
    for key, value in zip(("x", "y", "width", "height"), bbox):
        if not math.isfinite(value):
            raise DatasetError(
                src, label, f"has bbox {key} {value}", "boxes must be 4 finite numbers"
            )
    x, y, w, h = (float(v) for v in bbox)
    for key, value in (("width", w), ("height", h)):
        if value <= 0:
            raise DatasetError(
                src,
                label,
                f"has bbox {key} {value:g}",
                "boxes must have positive width and height",
            )
    width, height = record["width"], record["height"]
    x1, y1 = x + w, y + h
    if x >= width or y >= height or x1 <= 0 or y1 <= 0:
        raise DatasetError(
            src,
            label,
            f"has bbox {list(bbox)} wholly outside its image {record['_name']} "
            f"({width}x{height})",
            "boxes are absolute pixels [x, y, width, height] of their own image; "
            "fix the coordinates or the image_id",
        )
    cx0, cy0 = max(x, 0.0), max(y, 0.0)
    cx1, cy1 = min(x1, float(width)), min(y1, float(height))
    overshoot = max(cx0 - x, cy0 - y, x1 - cx1, y1 - cy1)
    return [cx0, cy0, cx1 - cx0, cy1 - cy0], overshoot > _CLIP_TOL


def _check_files(records, src, check_images, root, fix_missing):
    """Check the image files of ``records`` and fill in unknown sizes (in place)."""
    if check_images == "none":
        return
    missing = [
        _display_name(r["file_name"], root) for r in records if not os.path.isfile(r["file_name"])
    ]
    if missing:
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise DatasetError(
            src,
            None,
            f"{len(missing)} of {len(records)} image files are missing: "
            f"{', '.join(missing[:_MAX_LISTED])}{more}",
            fix_missing,
        )
    for record in records:
        path = record["file_name"]
        label = f"image {_display_name(path, root)}"
        try:
            if check_images == "full":
                height, width = read_image(path).shape[:2]
            else:
                height, width = read_image_size(path)
        except ImageReadError as e:
            raise DatasetError(
                src,
                label,
                f"{e.reason} ({path})",
                "replace the file with a good copy or remove the image from the set",
            ) from None
        if record["height"] is None:
            record["height"], record["width"] = height, width
        elif (height, width) != (record["height"], record["width"]):
            raise DatasetError(
                src,
                label,
                f"the file is {width}x{height} (width x height) but the json says "
                f"{record['width']}x{record['height']}",
                "correct the image's width/height in the json, or replace the file",
            )


def _display_name(path, root):
    """``path`` relative to ``root`` when it lies inside it, else as is."""
    rel = os.path.relpath(path, os.path.abspath(root))
    return path if rel.startswith("..") else rel.replace(os.sep, "/")
