"""List and validate an unlabelled image pool: a folder, a COCO json or a text list of paths.

Errors are ``DatasetError``s (``"<file>: <record>: <problem>; <fix>"``) and the image files get
the same checks as a labelled set (``validation._check_files``), so ``scripts/check_dataset.py
--unlabeled`` and the trainer accept the same pools.
"""

import os

from dualalign.data.validation import (
    _IMAGE_KEYS,
    _RECORD_KEYS,
    DatasetError,
    _check_files,
    _check_mode,
    _is_int,
    _read_json,
)

__all__ = ["IMAGE_EXTENSIONS", "load_unlabeled"]

# File name endings taken from an unlabelled folder (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_LIST_EXTENSIONS = (".txt", ".lst", ".list")


def load_unlabeled(source, image_root=None, *, check_images="header"):
    """List the images of an unlabelled pool.

    Args:
        source (str): one of
            (a) a folder: searched recursively, sorted, keeping files ending in
            ``IMAGE_EXTENSIONS`` (any case) and skipping hidden files (``.name``);
            (b) a COCO json: its "images" are used, annotations ignored; extra image fields
            (provenance: "patient_id", "slide", ...) are kept;
            (c) a ``.txt`` list: one image path per line; blank lines and lines starting
            with ``#`` are ignored.
        image_root (str | None): folder that relative paths of a json or list are relative
            to; None = the folder of the json / list file. Ignored for a folder source.
        check_images (str): one of ``CHECK_IMAGES`` (see ``load_coco_detection``).

    Returns:
        list[dict]: ``{"file_name": absolute path, "image_id", "height", "width"}`` per
        image. ``image_id`` is the path relative to the folder (a), the json's image id, or
        its ``file_name`` when it has none (b), or the line as written (c). With
        ``check_images="none"`` height and width are None, except for a json that declares
        them.

    Raises:
        DatasetError: unknown or unreadable source, no images, duplicate ids, missing or
            broken image files.
    """
    _check_mode(check_images)
    source = os.fspath(source)
    usage = "pass a folder of images, a COCO .json or a .txt list of image paths"
    root = _base_dir(source, image_root)
    if os.path.isdir(source):
        root, records = source, _records_from_folder(source)
        what, fix = f"no image files ({', '.join(IMAGE_EXTENSIONS)})", "check --unlabeled"
    elif not os.path.exists(source):
        raise DatasetError(source, None, "not found", usage)
    elif source.lower().endswith(".json"):
        records = _records_from_json(source, image_root)
        what, fix = "no images", f"check --unlabeled-root / the image_root ({root})"
    elif source.lower().endswith(_LIST_EXTENSIONS):
        records = _records_from_list(source, image_root)
        what, fix = "no images", f"check the paths; relative ones are resolved from {root}"
    else:
        raise DatasetError(source, None, "is neither a folder, a .json file nor a .txt list", usage)
    if not records:
        raise DatasetError(source, None, f"contains {what}", "point it at a non-empty pool")
    _check_files(records, source, check_images, root, fix)
    return records


def _records_from_folder(folder):
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.join(root, name)
                found.append((os.path.relpath(path, folder).replace(os.sep, "/"), path))
    return [_unlabeled_record(path, rel, None, None) for rel, path in sorted(found)]


def _records_from_json(json_file, image_root):
    data = _read_json(json_file, json_file)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(
            json_file,
            None,
            "has no 'images' list",
            "an unlabelled json is a COCO file whose 'images' entries have a 'file_name'",
        )
    base = _base_dir(json_file, image_root)
    records, seen = [], {}
    for i, img in enumerate(data["images"]):
        name = img.get("file_name") if isinstance(img, dict) else None
        if not isinstance(name, str) or not name:
            raise DatasetError(
                json_file,
                f"image #{i}",
                "has no 'file_name'",
                "each image needs a 'file_name' (relative to the image root)",
            )
        iid = img.get("id", name)
        if not (_is_int(iid) or isinstance(iid, str)):
            raise DatasetError(
                json_file,
                f"image {name}",
                f"has id {iid!r}",
                "image ids must be integers or strings",
            )
        if iid in seen:
            raise DatasetError(
                json_file,
                f"image id {iid!r}",
                f"is used twice ({seen[iid]} and {name})",
                "image ids must be unique",
            )
        seen[iid] = name
        size = [img.get("height"), img.get("width")]
        for key, value in zip(("height", "width"), size):
            if value is not None and (not _is_int(value) or value <= 0):
                raise DatasetError(
                    json_file,
                    f"image {name}",
                    f"has {key} {value!r}",
                    "width and height must be positive integers, or be left out",
                )
        if None in size:
            size = [None, None]
        record = _unlabeled_record(os.path.join(base, name), iid, *size)
        for key, value in img.items():
            if key not in _IMAGE_KEYS and key not in _RECORD_KEYS:
                record[key] = value
        records.append(record)
    return records


def _records_from_list(list_file, image_root):
    base = _base_dir(list_file, image_root)
    try:
        with open(list_file, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(list_file, None, f"cannot read: {e}", "check the file") from None
    records, seen = [], {}
    for number, line in enumerate(lines, start=1):
        path = line.strip()
        if not path or path.startswith("#"):
            continue
        if path in seen:
            raise DatasetError(
                list_file,
                f"line {number}",
                f"lists {path} again (first on line {seen[path]})",
                "remove the duplicate line",
            )
        seen[path] = number
        records.append(_unlabeled_record(os.path.join(base, path), path, None, None))
    return records


def _unlabeled_record(path, image_id, height, width):
    return {
        "file_name": os.path.abspath(path),
        "image_id": image_id,
        "height": height,
        "width": width,
    }


def _base_dir(source, image_root):
    return image_root if image_root is not None else os.path.dirname(os.path.abspath(source))
