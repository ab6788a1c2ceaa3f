"""GeoJSON both ways: the files follow RFC 7946 and QuPath's conventions, COCO -> GeoJSON ->
COCO gives the same boxes, and bad features are refused with the file, the feature and the fix.
"""

import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dualalign.data.geojson import (
    box_feature,
    boxes_to_feature_collection,
    feature_collection_to_boxes,
    features_to_coco,
    load_geojson,
    records_to_feature_collections,
)
from dualalign.data.validation import DatasetError, load_coco_detection
from dualalign.utils.paths import repo_root
from dualalign.utils.visualize import class_colour

CATEGORIES = [{"id": 1, "name": "LSIL"}, {"id": 2, "name": "HSIL"}, {"id": 7, "name": "AGC"}]


def check_rfc7946_feature_collection(obj):
    """An independent check of the structure a QuPath import needs (RFC 7946, sections 3.1.6,
    3.2 and 3.3, and QuPath's properties); raises AssertionError on the first deviation."""
    assert set(obj) >= {"type", "features"} and obj["type"] == "FeatureCollection"
    assert isinstance(obj["features"], list)
    for feature in obj["features"]:
        assert feature["type"] == "Feature"
        assert set(feature) <= {"type", "geometry", "properties", "id", "bbox"}
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon" and set(geometry) == {"type", "coordinates"}
        rings = geometry["coordinates"]
        assert isinstance(rings, list) and len(rings) == 1  # a box has no holes
        ring = rings[0]
        assert len(ring) >= 4 and ring[0] == ring[-1]  # a closed linear ring
        for pos in ring:
            assert len(pos) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in pos
            )
        # Exterior rings are counterclockwise in the (x, y) numbers (right-hand rule).
        xs, ys = np.array(ring).T
        assert np.sum(xs[:-1] * ys[1:] - xs[1:] * ys[:-1]) > 0
        props = feature["properties"]
        assert props["objectType"] in ("detection", "annotation")
        cls = props["classification"]
        assert isinstance(cls["name"], str) and cls["name"]
        assert len(cls["color"]) == 3 and all(
            isinstance(c, int) and 0 <= c <= 255 for c in cls["color"]
        )
        if "measurements" in props:
            assert all(isinstance(v, float) for v in props["measurements"].values())
    json.dumps(obj, allow_nan=False)  # strict JSON: no NaN or Infinity


@pytest.fixture()
def coco_set(tmp_path):
    """Two PNGs and a COCO json with boxes of three classes (non-contiguous ids)."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(images / name), np.full((150, 200, 3), 230, np.uint8))
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 200, "height": 150},
            {"id": 2, "file_name": "b.png", "width": 200, "height": 150},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [10.5, 20.25, 30, 40]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [100, 50, 12.75, 9]},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 199.5, 149]},
        ],
        "categories": CATEGORIES,
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(coco))
    return str(path), str(images)


def _boxes_by_file(records, names):
    return {
        os.path.basename(r["file_name"]): sorted(
            (names[a["category_id"]], *np.round(a["bbox"], 2).tolist()) for a in r["annotations"]
        )
        for r in records
    }


def test_predictions_follow_the_spec_and_qupath():
    boxes = np.array([[10.0, 20.0, 50.0, 60.0], [1e5, 2e5, 1e5 + 35.123, 2e5 + 20.0]])
    collection = boxes_to_feature_collection(
        boxes, np.array([2, 9]), ["a", "b", "c"], np.array([0.91, 0.5])
    )
    check_rfc7946_feature_collection(collection)
    first, second = collection["features"]
    assert first["properties"] == {
        "objectType": "detection",
        "classification": {"name": "c", "color": list(class_colour(2))},
        "measurements": {"score": 0.91},
    }
    assert first["geometry"]["coordinates"][0] == [[10, 20], [50, 20], [50, 60], [10, 60], [10, 20]]
    assert second["properties"]["classification"]["name"] == "class_9"  # beyond the names
    assert second["geometry"]["coordinates"][0][1] == [100035.12, 200000.0]  # level-0 pixels
    empty = boxes_to_feature_collection(np.zeros((0, 4)), np.zeros(0), ["a"])
    check_rfc7946_feature_collection(empty)
    assert empty["features"] == []


def test_round_trip_coco_geojson_coco(coco_set, tmp_path):
    json_file, images = coco_set
    records, meta = load_coco_detection(json_file, images, check_images="none")
    collections = records_to_feature_collections(records, meta["thing_classes"])
    pairs = []
    for record, collection in zip(records, collections):
        check_rfc7946_feature_collection(collection)
        assert {f["properties"]["objectType"] for f in collection["features"]} <= {"annotation"}
        parsed = json.loads(json.dumps(collection))  # as a file would give it back
        image = {k: record[k] for k in ("width", "height")}
        pairs.append(({"file_name": os.path.basename(record["file_name"]), **image}, parsed))
    coco = features_to_coco(
        [(im, feature_collection_to_boxes(fc, "x.geojson")) for im, fc in pairs],
        meta["thing_classes"],
    )
    out = tmp_path / "back.json"
    out.write_text(json.dumps(coco))
    back, back_meta = load_coco_detection(str(out), images, check_images="header")
    assert back_meta["thing_classes"] == meta["thing_classes"] == ["LSIL", "HSIL", "AGC"]
    assert _boxes_by_file(back, back_meta["thing_classes"]) == _boxes_by_file(
        records, meta["thing_classes"]
    )


def test_qupath_variants_are_read():
    feature = box_feature([5, 6, 25, 16], "HSIL", (1, 2, 3), object_type="annotation")
    feature["properties"]["measurements"] = [{"name": "score", "value": 0.75}]  # QuPath 0.3
    feature["id"] = "2c4a5c1e-0f3c-4d1b-9a53-9b8a8f2d2f10"
    feature["properties"]["isLocked"] = False
    for obj in ([feature], feature, {"type": "FeatureCollection", "features": [feature]}):
        assert feature_collection_to_boxes(obj, "f.geojson") == [((5, 6, 25, 16), "HSIL", 0.75)]
    # A polygon drawn by hand: refused as a box unless its bounding box is wanted.
    star = {"type": "Polygon", "coordinates": [[[0, 0], [10, 2], [4, 9], [1, 5], [0, 0]]]}
    drawn = {**feature, "geometry": star}
    with pytest.raises(DatasetError, match=r"f.geojson: feature 0: .*not an axis-aligned rect"):
        feature_collection_to_boxes([drawn], "f.geojson")
    assert feature_collection_to_boxes([drawn], "f.geojson", polygons="bbox")[0][0] == (
        0,
        0,
        10,
        9,
    )


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda f: f.update(geometry={"type": "Point", "coordinates": [1, 2]}),
            r"feature 1: is a Point, not a Polygon; draw cells with QuPath's rectangle tool",
        ),
        (
            lambda f: f["properties"].pop("classification"),
            r"feature 1: has no classification name; set a class on every object",
        ),
        (
            lambda f: f["geometry"]["coordinates"][0].pop(),
            r"feature 1: has a ring that is not closed; a Polygon is a list of closed rings",
        ),
        (
            lambda f: f["geometry"]["coordinates"][0][1].__setitem__(0, "x"),
            r"feature 1: has a position \['x', 20.0\] that is not 2 or 3 numbers",
        ),
        (lambda f: f.update(type="Thing"), r"feature 1: has type 'Thing', not 'Feature'"),
        (lambda f: f.pop("geometry"), r"feature 1: has no geometry; every object needs a shape"),
        (
            lambda f: f.update(geometry=box_feature([5, 5, 5, 9], "a", (0, 0, 0))["geometry"]),
            r"feature 1: has an empty box \(0 x 4 pixels\); boxes must have positive width",
        ),
    ],
)
def test_bad_features_name_file_feature_and_fix(edit, message):
    good = box_feature([1, 2, 3, 4], "LSIL", (0, 0, 0))
    bad = box_feature([10, 20, 30, 40], "HSIL", (0, 0, 0))
    edit(bad)
    with pytest.raises(DatasetError, match="^slide7.geojson: " + message):
        feature_collection_to_boxes(
            {"type": "FeatureCollection", "features": [good, bad]}, "slide7.geojson"
        )


def test_bad_files(tmp_path):
    with pytest.raises(DatasetError, match="top level is 'Polygon'.*Export objects as GeoJSON"):
        feature_collection_to_boxes({"type": "Polygon"}, "x.geojson")
    broken = tmp_path / "broken.geojson"
    broken.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(DatasetError, match=r"broken.geojson: is not valid JSON \(line 1"):
        load_geojson(str(broken))
    with pytest.raises(ValueError, match="class 'AGC' is not among the classes"):
        features_to_coco([({"file_name": "a.png"}, [((0, 0, 1, 1), "AGC", None)])], ["LSIL"])


def _script(name, *args):
    return subprocess.run(
        [sys.executable, os.path.join(repo_root(), "scripts", name), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_export_and_import_scripts(coco_set, tmp_path):
    """scripts/export_geojson.py then scripts/import_geojson.py give back the labelled set."""
    json_file, images = coco_set
    geo = tmp_path / "geojson"
    done = _script(
        "export_geojson.py", "--json", json_file, "--images", images, "--output", str(geo)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(os.listdir(geo)) == ["a.geojson", "b.geojson"]
    for name in os.listdir(geo):
        check_rfc7946_feature_collection(json.loads((geo / name).read_text()))
    out = tmp_path / "imported.json"
    args = ["--geojson", str(geo), "--images", images, "--output"]
    done = _script("import_geojson.py", *args, str(out), "--classes", "LSIL,HSIL,AGC")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 image(s), 3 boxes (LSIL 1, HSIL 1, AGC 1)" in done.stdout
    records, meta = load_coco_detection(json_file, images, check_images="none")
    back, back_meta = load_coco_detection(str(out), images)
    assert _boxes_by_file(back, back_meta["thing_classes"]) == _boxes_by_file(
        records, meta["thing_classes"]
    )
    # An import whose GeoJSON has no image is refused naming the file and the fix.
    (geo / "c.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    done = _script("import_geojson.py", *args, str(tmp_path / "x.json"))
    assert done.returncode == 1
    assert f"error: {geo / 'c.geojson'}: no image named c.* under {images}" in done.stderr
    assert "name each GeoJSON file after its image" in done.stderr
