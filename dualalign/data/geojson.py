"""Boxes as QuPath-compatible GeoJSON, both ways: COCO / predictions -> GeoJSON -> COCO.

A slide's or image's boxes are one GeoJSON ``FeatureCollection`` (RFC 7946) that QuPath
imports as objects (File > Import objects, or drag and drop), in level-0 pixel coordinates
with the origin at the top-left corner, as QuPath's own exports are. Each box is a ``Feature``:

- ``geometry``: a ``Polygon`` with one closed ring of five positions, the rectangle's corners
  ``(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)``;
- ``properties.objectType``: ``"detection"`` (predictions) or ``"annotation"`` (labels, which
  QuPath lets a user edit);
- ``properties.classification``: ``{"name": class name, "color": [r, g, b]}``, the colours of
  the overlays (``utils.visualize.class_colour``);
- ``properties.measurements``: ``{"score": confidence}`` for predictions.

Reading accepts what QuPath writes: a ``FeatureCollection``, a list of features or a single
feature; ``measurements`` as a mapping (QuPath >= 0.4) or a list of ``{"name", "value"}``
(older versions). Every problem raises ``DatasetError`` (``"<file>: feature <i>: <problem>;
<fix>"``), the error type of the dataset loaders.
"""

import json
import math
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..utils.visualize import class_colour, class_name
from .validation import DatasetError

__all__ = [
    "OBJECT_TYPES",
    "GeoBox",
    "boxes_to_feature_collection",
    "box_feature",
    "check_feature_collection",
    "feature_collection_to_boxes",
    "features_to_coco",
    "load_geojson",
    "records_to_feature_collections",
]

OBJECT_TYPES = ("detection", "annotation")
_DECIMALS = 2  # coordinates are written to 1/100 pixel
_RECT_TOL = 1e-6  # px; a ring whose edges are off-axis by more is not a rectangle

# One box read back: (x0, y0, x1, y1) in level-0 pixels, class name, score or None.
GeoBox = Tuple[Tuple[float, float, float, float], str, Optional[float]]


def box_feature(
    box: Sequence[float],
    name: str,
    colour: Sequence[int],
    score: Optional[float] = None,
    object_type: str = "detection",
) -> dict:
    """One box as a QuPath GeoJSON ``Feature``.

    Args:
        box (sequence[4]): ``(x0, y0, x1, y1)`` in level-0 pixels.
        name (str): class name (``classification.name``).
        colour (sequence[3]): RGB 0-255 (``classification.color``).
        score (float or None): confidence, written as ``measurements.score``.
        object_type (str): ``"detection"`` or ``"annotation"``.

    Returns:
        dict: the Feature.
    """
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {OBJECT_TYPES}, got {object_type!r}")
    x0, y0, x1, y1 = (round(float(v), _DECIMALS) for v in box)
    properties = {
        "objectType": object_type,
        "classification": {"name": str(name), "color": [int(c) for c in colour]},
    }
    if score is not None:
        properties["measurements"] = {"score": round(float(score), 5)}
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": properties,
    }


def boxes_to_feature_collection(
    boxes: np.ndarray,
    classes: np.ndarray,
    class_names: Sequence[str],
    scores: Optional[np.ndarray] = None,
    object_type: str = "detection",
) -> dict:
    """A slide's or image's boxes as a ``FeatureCollection``, one Feature per box.

    Args:
        boxes (np.ndarray[N, 4]): XYXY in level-0 pixels.
        classes (np.ndarray[N]): 0-based class ids (index ``class_names``).
        class_names (list[str]): names by class id; ids beyond it are named ``class_<i>``.
        scores (np.ndarray[N] or None): confidences (None for labels).
        object_type (str): ``"detection"`` or ``"annotation"``.

    Returns:
        dict: ``{"type": "FeatureCollection", "features": [...]}``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    features = [
        box_feature(
            box,
            class_name(class_names, cls),
            class_colour(cls),
            None if scores is None else float(scores[i]),
            object_type,
        )
        for i, (box, cls) in enumerate(zip(boxes, classes))
    ]
    return {"type": "FeatureCollection", "features": features}


def records_to_feature_collections(
    records: Sequence[dict], class_names: Sequence[str], object_type: str = "annotation"
) -> List[dict]:
    """Each image's labels, as loaded by ``validation.load_coco_detection``, as GeoJSON.

    Args:
        records (list[dict]): detectron2 records (``annotations`` with ``bbox`` ``[x, y, w,
            h]`` and a contiguous ``category_id``; a ``score`` is written when present).
        class_names (list[str]): ``meta["thing_classes"]`` of the loader.
        object_type (str): ``"annotation"`` (default: labels QuPath lets a user edit) or
            ``"detection"``.

    Returns:
        list[dict]: a FeatureCollection per record, in order (also for images without boxes).
    """
    out = []
    for record in records:
        anns = record["annotations"]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        classes = np.array([a["category_id"] for a in anns], dtype=np.int64)
        has_scores = bool(anns) and all("score" in a for a in anns)
        scores = np.array([a["score"] for a in anns]) if has_scores else None
        out.append(boxes_to_feature_collection(boxes, classes, class_names, scores, object_type))
    return out


def check_feature_collection(obj, source: str) -> List[dict]:
    """Check the GeoJSON structure (RFC 7946) that boxes need, and return the features.

    Accepted: a ``FeatureCollection``, a list of ``Feature`` objects or a single ``Feature``
    (QuPath writes all three). Each feature needs ``"type": "Feature"``, a ``geometry``
    object with a ``type`` and ``coordinates``, and a ``properties`` object or null; a
    ``Polygon``'s rings are closed lists of at least four positions of two or three finite
    numbers.

    Args:
        obj: the parsed JSON.
        source (str): the file name, for error messages.

    Returns:
        list[dict]: the features, in file order.

    Raises:
        DatasetError: the first structural problem, naming the feature and the fix.
    """
    if isinstance(obj, list):
        features = obj
    elif isinstance(obj, dict) and obj.get("type") == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise DatasetError(
                source,
                None,
                "the FeatureCollection has no 'features' list",
                'a FeatureCollection is {"type": "FeatureCollection", "features": [...]}',
            )
    elif isinstance(obj, dict) and obj.get("type") == "Feature":
        features = [obj]
    else:
        found = obj.get("type") if isinstance(obj, dict) else type(obj).__name__
        raise DatasetError(
            source,
            None,
            f"the top level is {found!r}, not a FeatureCollection, a Feature or a list of them",
            "export the objects from QuPath as GeoJSON (File > Export objects as GeoJSON)",
        )
    for i, feature in enumerate(features):
        _check_feature(feature, source, i)
    return features


def feature_collection_to_boxes(obj, source: str, polygons: str = "error") -> List[GeoBox]:
    """Read boxes back from QuPath GeoJSON.

    Args:
        obj: the parsed JSON (see ``check_feature_collection``).
        source (str): the file name, for error messages.
        polygons (str): what to do with a polygon that is not an axis-aligned rectangle:
            ``"error"`` refuses it, ``"bbox"`` takes its bounding box.

    Returns:
        list of ``((x0, y0, x1, y1), class name, score or None)``, in file order.

    Raises:
        DatasetError: a structural problem, a geometry other than a Polygon (or a
            non-rectangular one with ``polygons="error"``), a missing classification, an
            empty box.
    """
    if polygons not in ("error", "bbox"):
        raise ValueError(f"polygons must be 'error' or 'bbox', got {polygons!r}")
    boxes = []
    for i, feature in enumerate(check_feature_collection(obj, source)):
        record = f"feature {i}"
        geometry = feature["geometry"]
        if geometry["type"] != "Polygon":
            raise DatasetError(
                source,
                record,
                f"is a {geometry['type']}, not a Polygon",
                "draw cells with QuPath's rectangle tool (boxes are exported as Polygons), "
                "or delete this object before exporting",
            )
        ring = np.asarray(geometry["coordinates"][0], dtype=np.float64)[:, :2]
        x0, y0 = ring.min(axis=0)
        x1, y1 = ring.max(axis=0)
        if polygons == "error" and not _is_rectangle(ring):
            raise DatasetError(
                source,
                record,
                f"is a polygon of {len(ring) - 1} vertices, not an axis-aligned rectangle",
                "draw boxes with QuPath's rectangle tool, or accept any polygon as its "
                "bounding box (--polygons bbox)",
            )
        if not (x1 > x0 and y1 > y0):
            raise DatasetError(
                source,
                record,
                f"has an empty box ({x1 - x0:g} x {y1 - y0:g} pixels)",
                "boxes must have positive width and height; delete or redraw this object",
            )
        name = _class_of(feature, source, record)
        boxes.append(((float(x0), float(y0), float(x1), float(y1)), name, _score_of(feature)))
    return boxes


def features_to_coco(
    images: Iterable[Tuple[dict, List[GeoBox]]], class_names: Optional[Sequence[str]] = None
) -> dict:
    """A COCO labelled set from each image's boxes (``feature_collection_to_boxes``).

    Args:
        images (iterable): ``(image, boxes)`` pairs; ``image`` is a COCO image dict without
            ``id`` (``file_name``, ``width``, ``height``), ids are given in order from 1.
        class_names (list[str] or None): the categories in order (ids from 1); None: every
            name found, sorted. A name not in the list raises ``ValueError`` with the list.

    Returns:
        dict: ``{"images", "annotations", "categories"}`` (``bbox`` ``[x, y, w, h]``, ``area``,
        ``iscrowd`` 0; a box's score, when it had one, is kept as ``"score"``).
    """
    images = list(images)
    if class_names is None:
        class_names = sorted({name for _, boxes in images for _, name, _ in boxes})
    ids = {name: i + 1 for i, name in enumerate(class_names)}
    out_images, annotations = [], []
    for image_id, (image, boxes) in enumerate(images, start=1):
        out_images.append({"id": image_id, **image})
        for (x0, y0, x1, y1), name, score in boxes:
            if name not in ids:
                raise ValueError(
                    f"{image['file_name']}: class {name!r} is not among the classes "
                    f"{list(class_names)}; add it to --classes or rename it in QuPath"
                )
            w, h = x1 - x0, y1 - y0
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": ids[name],
                "bbox": [x0, y0, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
            if score is not None:
                ann["score"] = score
            annotations.append(ann)
    categories = [{"id": ids[n], "name": n} for n in class_names]
    return {"images": out_images, "annotations": annotations, "categories": categories}


def _check_feature(feature, source: str, i: int) -> None:
    record = f"feature {i}"
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        found = feature.get("type") if isinstance(feature, dict) else type(feature).__name__
        raise DatasetError(
            source,
            record,
            f"has type {found!r}, not 'Feature'",
            'each entry of "features" is {"type": "Feature", "geometry": ..., "properties": ...}',
        )
    if feature.get("properties") is not None and not isinstance(feature["properties"], dict):
        raise DatasetError(
            source, record, "'properties' is not an object", "give an object or null"
        )
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or "type" not in geometry:
        raise DatasetError(
            source,
            record,
            "has no geometry",
            "every object needs a shape; delete objects without one before exporting",
        )
    if geometry["type"] == "GeometryCollection":
        return  # no coordinates of its own; refused later as not a Polygon
    if "coordinates" not in geometry:
        raise DatasetError(
            source, record, f"its {geometry['type']} has no 'coordinates'", "re-export the file"
        )
    if geometry["type"] == "Polygon":
        _check_polygon(geometry["coordinates"], source, record)


def _check_polygon(rings, source: str, record: str) -> None:
    fix = "a Polygon is a list of closed rings, each [[x, y], ...] with the first == last"
    if not isinstance(rings, list) or not rings:
        raise DatasetError(source, record, "its Polygon has no ring", fix)
    for ring in rings:
        if not isinstance(ring, list) or len(ring) < 4:
            raise DatasetError(source, record, "has a ring of fewer than 4 positions", fix)
        for pos in ring:
            if not (
                isinstance(pos, list)
                and len(pos) in (2, 3)
                and all(_is_finite_number(v) for v in pos)
            ):
                raise DatasetError(
                    source, record, f"has a position {pos!r} that is not 2 or 3 numbers", fix
                )
        if ring[0] != ring[-1]:
            raise DatasetError(source, record, "has a ring that is not closed", fix)


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_rectangle(ring: np.ndarray) -> bool:
    """A closed ring of 4 distinct corners, each edge horizontal or vertical."""
    if len(ring) != 5:
        return False
    edges = np.diff(ring, axis=0)
    return bool(np.all(np.min(np.abs(edges), axis=1) <= _RECT_TOL))


def _class_of(feature: dict, source: str, record: str) -> str:
    properties = feature.get("properties") or {}
    classification = properties.get("classification")
    name = classification.get("name") if isinstance(classification, dict) else None
    if not isinstance(name, str) or not name:
        raise DatasetError(
            source,
            record,
            "has no classification name",
            "set a class on every object in QuPath (Set class), or delete the unclassified "
            "ones, before exporting",
        )
    return name


def _score_of(feature: dict) -> Optional[float]:
    measurements = (feature.get("properties") or {}).get("measurements")
    if isinstance(measurements, list):  # QuPath < 0.4: [{"name": ..., "value": ...}]
        measurements = {m.get("name"): m.get("value") for m in measurements if isinstance(m, dict)}
    if isinstance(measurements, dict) and _is_finite_number(measurements.get("score")):
        return float(measurements["score"])
    return None


def load_geojson(path: str):
    """Parse a GeoJSON file; a file that is not JSON raises ``DatasetError`` with the line."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(
            path,
            None,
            f"is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})",
            "re-export it from QuPath, or repair the file",
        ) from None
    except OSError as e:
        raise DatasetError(path, None, f"cannot be read ({e.strerror})", "check the path") from None
