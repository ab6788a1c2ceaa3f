"""Dataset loading and validation: every accepted and every refused case, and the CLI."""

import copy
import json
import logging
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from detectron2.structures import BoxMode
from PIL import Image

from dualalign.data import check_cli as check_dataset
from dualalign.data.dataset_summary import dataset_summary, format_summary
from dualalign.data.unlabeled_pool import load_unlabeled
from dualalign.data.validation import DatasetError, load_coco_detection
from dualalign.utils.paths import repo_root

CLI = os.path.join(repo_root(), "scripts", "check_dataset.py")

W, H = 40, 30  # size of every test image


def _coco():
    """A valid set: 2 images with boxes, 1 negative patch; category ids 7 and 3 (unsorted)."""
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": W, "height": H, "patient_id": "p1"},
            {"id": 2, "file_name": "sub/b.png", "width": W, "height": H, "patient_id": "p2"},
            {"id": 3, "file_name": "neg.png", "width": W, "height": H},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 8], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [5.5, 6, 4, 4]},
            {"id": 12, "image_id": 2, "category_id": 7, "bbox": [0, 0, 20, 12]},
        ],
        "categories": [{"id": 7, "name": "HSIL"}, {"id": 3, "name": "NILM"}],
    }


def _write_png(path, size=(W, H), mode="L"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, 128).save(path)


@pytest.fixture
def make_set(tmp_path):
    """``make_set(data=None, images=True) -> (json_path, image_root)`` for a COCO dict."""

    def make(data=None, images=True, text=None):
        data = _coco() if data is None else data
        root = tmp_path / "images"
        root.mkdir(exist_ok=True)
        if images:
            for img in data.get("images", []):
                _write_png(str(root / img["file_name"]))
        json_path = tmp_path / "annotations_train.json"
        json_path.write_text(json.dumps(data) if text is None else text)
        return str(json_path), str(root)

    return make


def _error(make_set, data=None, check_images="header", **kwargs):
    json_path, root = make_set(data, **kwargs)
    with pytest.raises(DatasetError) as info:
        load_coco_detection(json_path, root, check_images=check_images)
    message = str(info.value)
    assert message.startswith(json_path + ": "), message
    return message


# ------------------------------------------------------------------ valid sets


def test_valid_set_records_and_meta(make_set):
    json_path, root = make_set()
    records, meta = load_coco_detection(json_path, root)
    assert meta["thing_classes"] == ["NILM", "HSIL"]  # sorted by category id 3, 7
    assert meta["thing_dataset_id_to_contiguous_id"] == {3: 0, 7: 1}
    assert meta["json_file"] == json_path and meta["image_root"] == root
    assert meta["num_clipped"] == 0 and meta["num_crowd_dropped"] == 0
    assert [r["image_id"] for r in records] == [1, 2, 3]
    a, b, neg = records
    assert a["file_name"] == os.path.join(root, "a.png") and os.path.isabs(b["file_name"])
    assert (a["height"], a["width"], a["patient_id"]) == (H, W, "p1")
    assert a["annotations"] == [
        {"bbox": [1.0, 2.0, 10.0, 8.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1},
        {"bbox": [5.5, 6.0, 4.0, 4.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},
    ]
    assert neg["annotations"] == []  # a negative patch is kept
    assert "_name" not in a and "id" not in a


def test_iscrowd_dropped_and_counted(make_set):
    data = _coco()
    data["annotations"][0]["iscrowd"] = 1
    records, meta = load_coco_detection(*make_set(data))
    assert meta["num_crowd_dropped"] == 1
    assert [ann["bbox"] for ann in records[0]["annotations"]] == [[5.5, 6.0, 4.0, 4.0]]


def test_partly_outside_boxes_are_clipped_with_one_warning(make_set, caplog):
    data = _coco()
    data["annotations"][0]["bbox"] = [-4, 25, 10, 10]  # sticks out left and bottom
    data["annotations"][2]["bbox"] = [35, 0, 10, 5]  # sticks out right
    data["annotations"][1]["bbox"] = [0, 0, W + 1e-6, 5]  # float round-off: not counted
    with caplog.at_level(logging.WARNING, logger="dualalign.data"):
        records, meta = load_coco_detection(*make_set(data))
    assert meta["num_clipped"] == 2
    assert records[0]["annotations"][0]["bbox"] == [0.0, 25.0, 6.0, 5.0]
    assert records[1]["annotations"][0]["bbox"] == [35.0, 0.0, 5.0, 5.0]
    assert records[0]["annotations"][1]["bbox"] == [0.0, 0.0, float(W), 5.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2 boxes were partly outside their image and clipped to it" in warnings[0].message
    assert "annotation 10 on a.png" in warnings[0].message


def test_check_images_none_skips_files(make_set):
    records, _ = load_coco_detection(*make_set(images=False), check_images="none")
    assert len(records) == 3


def test_real_cervix93_val(shared_data_dir):
    root = os.path.join(shared_data_dir, "cervix93")
    records, meta = load_coco_detection(
        os.path.join(root, "annotations_val.json"), os.path.join(root, "images")
    )
    assert meta["thing_classes"] == ["Negative", "LSIL", "HSIL"]
    assert len(records) == 9 and sum(len(r["annotations"]) for r in records) == 232
    assert all(r["color_mode"] == "L" and (r["height"], r["width"]) == (960, 1280) for r in records)


# ------------------------------------------------------------------ refused files


def test_invalid_json(make_set):
    message = _error(make_set, text='{"images": [}, "annotations": []}')
    assert "invalid JSON at line 1 column 13" in message
    assert "re-export the file" in message


def test_truncated_json(make_set):
    text = json.dumps(_coco(), indent=1)
    message = _error(make_set, text=text[: len(text) // 2])
    assert "JSON ends early at line" in message and "looks truncated" in message
    assert "check it is complete" in message


def test_missing_json_file(tmp_path):
    with pytest.raises(DatasetError, match="file not found; check the --json path"):
        load_coco_detection(str(tmp_path / "nope.json"), str(tmp_path))


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_required_key(make_set, key):
    data = _coco()
    del data[key]
    assert f"has no '{key}' key" in _error(make_set, data, images=False)


def test_empty_dataset(make_set):
    data = _coco()
    data["images"], data["annotations"] = [], []
    assert "contains no images" in _error(make_set, data)


def test_duplicate_image_id(make_set):
    data = _coco()
    data["images"][2]["id"] = 1
    message = _error(make_set, data)
    assert "image id 1: is used twice (a.png and neg.png)" in message
    assert "image ids must be unique" in message


def test_duplicate_annotation_id(make_set):
    data = _coco()
    data["annotations"][2]["id"] = 10
    message = _error(make_set, data)
    assert "annotation 10: id is used twice (annotations #0 and #2" in message


def test_annotation_on_unknown_image(make_set):
    data = _coco()
    data["annotations"][1]["image_id"] = 99
    assert "annotation 11: refers to image_id 99, which is not in 'images'" in _error(
        make_set, data
    )


def test_undeclared_category(make_set):
    data = _coco()
    data["annotations"][2]["category_id"] = 5
    message = _error(make_set, data)
    assert "annotation 12: has category_id 5, which is not declared" in message
    assert "declared ids are 3 (NILM), 7 (HSIL)" in message


@pytest.mark.parametrize(
    "bbox, expected",
    [
        ([1, 2, 0, 5], "has bbox width 0; boxes must have positive width and height"),
        ([1, 2, 5, -3], "has bbox height -3; boxes must have positive width and height"),
        ([1, 2, float("nan"), 5], "has bbox width nan; boxes must be 4 finite numbers"),
        ([1, 2, 5, float("inf")], "has bbox height inf; boxes must be 4 finite numbers"),
        ([1, 2, 5], "not 4 numbers [x, y, width, height]"),
        ([1, 2, "5", 5], "not 4 numbers [x, y, width, height]"),
        (None, "not 4 numbers [x, y, width, height]"),
    ],
)
def test_bad_box(make_set, bbox, expected):
    data = _coco()
    data["annotations"][1]["bbox"] = bbox
    message = _error(make_set, data)
    assert "annotations_train.json: annotation 11: " in message
    assert expected in message


@pytest.mark.parametrize("bbox", [[W, 0, 5, 5], [0, H + 3, 5, 5], [-10, 0, 10, 5], [0, -6, 5, 5]])
def test_box_wholly_outside(make_set, bbox):
    data = _coco()
    data["annotations"][0]["bbox"] = bbox
    message = _error(make_set, data)
    assert f"annotation 10: has bbox {bbox} wholly outside its image a.png (40x30)" in message


def test_missing_images_listed(make_set):
    data = _coco()
    data["images"] += [
        {"id": 10 + i, "file_name": f"extra{i}.png", "width": W, "height": H} for i in range(6)
    ]
    json_path, root = make_set(data)
    for i in range(6):
        os.remove(os.path.join(root, f"extra{i}.png"))
    os.remove(os.path.join(root, "a.png"))
    with pytest.raises(DatasetError) as info:
        load_coco_detection(json_path, root)
    message = str(info.value)
    listed = "a.png, extra0.png, extra1.png, extra2.png, extra3.png and 2 more"
    assert f"7 of 9 image files are missing: {listed}" in message
    assert "check --images / the image_root" in message


def test_image_size_differs_from_json(make_set):
    json_path, root = make_set()
    _write_png(os.path.join(root, "neg.png"), size=(W + 1, H))
    expected = r"image neg.png: the file is 41x30 \(width x height\) but the json says 40x30"
    with pytest.raises(DatasetError, match=expected):
        load_coco_detection(json_path, root)


def test_not_an_image(make_set):
    json_path, root = make_set()
    with open(os.path.join(root, "sub", "b.png"), "w") as f:
        f.write("<html>not found</html>")
    with pytest.raises(DatasetError, match="image sub/b.png: cannot decode"):
        load_coco_detection(json_path, root)


def _truncate_png(path):
    rng = np.random.RandomState(0)
    Image.fromarray((rng.rand(H, W) * 255).astype(np.uint8)).save(path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def test_truncated_image_needs_full_check(make_set):
    json_path, root = make_set()
    _truncate_png(os.path.join(root, "a.png"))
    load_coco_detection(json_path, root, check_images="header")  # header is intact
    with pytest.raises(DatasetError) as info:
        load_coco_detection(json_path, root, check_images="full")
    message = str(info.value)
    assert "image a.png: cannot decode: file is truncated or not an image" in message
    assert "replace the file with a good copy" in message


def test_dataset_name_in_message(make_set):
    data = _coco()
    data["images"] = []
    json_path, root = make_set(data)
    with pytest.raises(DatasetError, match=r"\(dataset 'cric_train'\): contains no images"):
        load_coco_detection(json_path, root, dataset_name="cric_train")


def test_bad_check_images_value(make_set):
    with pytest.raises(ValueError, match="check_images"):
        load_coco_detection(*make_set(), check_images="fast")


def test_dataset_error_pickles():
    err = pickle.loads(pickle.dumps(DatasetError("f.json", "annotation 1", "bad", "fix it")))
    assert str(err) == "f.json: annotation 1: bad; fix it" and err.record == "annotation 1"
    assert str(DatasetError("f.json", None, "bad", "fix it")) == "f.json: bad; fix it"


# ------------------------------------------------------------------ unlabelled pools


def test_unlabeled_folder(tmp_path):
    pool = tmp_path / "pool"
    _write_png(str(pool / "b.PNG"))
    _write_png(str(pool / "a" / "z.jpg"), size=(8, 6), mode="RGB")
    _write_png(str(pool / "a" / "c.TIFF"))
    (pool / "notes.txt").write_text("not an image")
    (pool / ".hidden.png").write_text("macOS resource fork")
    records = load_unlabeled(str(pool))
    assert [r["image_id"] for r in records] == ["a/c.TIFF", "a/z.jpg", "b.PNG"]
    assert records[1] == {
        "file_name": str(pool / "a" / "z.jpg"),
        "image_id": "a/z.jpg",
        "height": 6,
        "width": 8,
    }


def test_unlabeled_json(tmp_path):
    _write_png(str(tmp_path / "img" / "p1.png"))
    _write_png(str(tmp_path / "img" / "p2.png"))
    data = {
        "images": [
            {"id": 5, "file_name": "img/p1.png", "slide": "S1", "patient_id": "p1"},
            {"id": 6, "file_name": "img/p2.png", "slide": "S2", "width": W, "height": H},
        ],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 99, "bbox": "ignored"}],
    }
    (tmp_path / "pool.json").write_text(json.dumps(data))
    records = load_unlabeled(str(tmp_path / "pool.json"))
    assert [r["image_id"] for r in records] == [5, 6]
    assert records[0]["file_name"] == str(tmp_path / "img" / "p1.png")
    assert (records[0]["slide"], records[0]["patient_id"], records[0]["height"]) == ("S1", "p1", H)
    assert "annotations" not in records[0]
    # image_root overrides the json's folder
    records = load_unlabeled(str(tmp_path / "pool.json"), str(tmp_path), check_images="none")
    assert records[0]["height"] is None and records[1]["height"] == H  # declared in the json


def test_unlabeled_json_size_mismatch(tmp_path):
    _write_png(str(tmp_path / "p.png"))
    data = {"images": [{"id": 1, "file_name": "p.png", "width": 9, "height": 9}]}
    (tmp_path / "pool.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="the file is 40x30"):
        load_unlabeled(str(tmp_path / "pool.json"))


def test_unlabeled_txt_list(tmp_path):
    _write_png(str(tmp_path / "lists" / "rel.png"))
    _write_png(str(tmp_path / "abs.png"))
    lst = tmp_path / "lists" / "pool.txt"
    lst.write_text(f"# unlabelled pool\n\nrel.png\n  {tmp_path / 'abs.png'}  \n")
    records = load_unlabeled(str(lst))
    assert [r["file_name"] for r in records] == [
        str(tmp_path / "lists" / "rel.png"),
        str(tmp_path / "abs.png"),
    ]
    assert records[0]["image_id"] == "rel.png" and records[0]["width"] == W


def test_unlabeled_txt_missing_and_duplicate(tmp_path):
    _write_png(str(tmp_path / "ok.png"))
    lst = tmp_path / "pool.txt"
    lst.write_text("ok.png\ngone.png\n")
    with pytest.raises(DatasetError, match="1 of 2 image files are missing: gone.png; check"):
        load_unlabeled(str(lst))
    assert load_unlabeled(str(lst), check_images="none")[1]["height"] is None
    lst.write_text("ok.png\nok.png\n")
    with pytest.raises(DatasetError, match="line 2: lists ok.png again"):
        load_unlabeled(str(lst))


@pytest.mark.parametrize("kind", ["folder", "json", "txt"])
def test_unlabeled_empty(tmp_path, kind):
    source = {"folder": tmp_path / "empty", "json": tmp_path / "e.json", "txt": tmp_path / "e.txt"}
    source = source[kind]
    if kind == "folder":
        source.mkdir()
        (source / "readme.md").write_text("no images here")
    else:
        source.write_text('{"images": []}' if kind == "json" else "# nothing\n")
    with pytest.raises(DatasetError, match="contains no image"):
        load_unlabeled(str(source))


def test_unlabeled_bad_source(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_unlabeled(str(tmp_path / "nope"))
    (tmp_path / "pool.csv").write_text("a.png")
    with pytest.raises(DatasetError, match="neither a folder, a .json file nor a .txt list"):
        load_unlabeled(str(tmp_path / "pool.csv"))


# ------------------------------------------------------------------ summary


def test_summary(make_set):
    records, meta = load_coco_detection(*make_set())
    summary = dataset_summary(records, meta["thing_classes"])
    assert summary["images"] == 3 and summary["images_without_boxes"] == 1
    assert summary["boxes"] == 3
    assert summary["boxes_per_class"] == {"NILM": 1, "HSIL": 2}
    assert summary["images_per_class"] == {"NILM": 1, "HSIL": 2}
    assert summary["box_width"] == {"min": 4.0, "25%": 7.0, "50%": 10.0, "75%": 15.0, "max": 20.0}
    text = format_summary(summary)
    assert "images: 3 (1 without boxes)" in text and "HSIL" in text and "max 20.0" in text
    unlabeled = dataset_summary([{"file_name": "x"}])
    assert not unlabeled["labeled"] and unlabeled["box_width"] is None
    assert format_summary(unlabeled) == "images: 1 (unlabelled)"


# ------------------------------------------------------------------ CLI


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, CLI, *args], capture_output=True, text=True, timeout=120, cwd="/"
    )


def test_cli_valid_set_and_pool_exit_0(make_set, tmp_path):
    json_path, root = make_set()
    result = _run_cli("--json", json_path, "--images", root, "--unlabeled", root)
    assert result.returncode == 0, result.stderr
    assert "images: 3 (1 without boxes)" in result.stdout
    assert "unlabelled set" in result.stdout and "images: 3 (unlabelled)" in result.stdout
    assert "Traceback" not in result.stderr


def test_cli_error_exit_1_without_traceback(make_set, capsys):
    # In-process (a second interpreter costs seconds): main() returns 1 instead of raising.
    json_path, root = make_set()
    _truncate_png(os.path.join(root, "a.png"))  # caught by the CLI's default --check-images full
    assert check_dataset.main(["--json", json_path, "--images", root]) == 1
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {json_path}: image a.png: cannot decode")
    assert "Traceback" not in err and out == ""


def test_cli_warning_on_stderr(make_set, capsys):
    data = _coco()
    data["annotations"][0]["bbox"] = [-4, 0, 10, 10]
    json_path, root = make_set(data)
    assert check_dataset.main(["--json", json_path, "--images", root]) == 0
    out, err = capsys.readouterr()
    assert "WARNING: " in err and "1 box was partly outside" in err
    assert "images: 3" in out


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["annotations"][0].update(bbox=[1, 1, 0, 3]), "bbox width 0"),
        (lambda d: d["images"].append(copy.deepcopy(d["images"][0])), "is used twice"),
    ],
)
def test_cli_dataset_errors(make_set, capsys, mutate, expected):
    data = _coco()
    mutate(data)
    json_path, root = make_set(data)
    assert check_dataset.main(["--json", json_path, "--images", root]) == 1
    _, err = capsys.readouterr()
    assert err.startswith("error: ") and expected in err


def test_cli_unlabeled_list_with_root(tmp_path, capsys):
    _write_png(str(tmp_path / "imgs" / "x.png"))
    (tmp_path / "pool.txt").write_text("x.png\n")
    argv = ["--unlabeled", str(tmp_path / "pool.txt"), "--unlabeled-root", str(tmp_path / "imgs")]
    assert check_dataset.main(argv) == 0
    assert "images: 1 (unlabelled)" in capsys.readouterr().out


def test_cli_usage_errors(capsys):
    usages = ([], ["--json", "a.json"], ["--unlabeled-root", "x", "--json", "a", "--images", "b"])
    for argv in usages:
        with pytest.raises(SystemExit) as info:
            check_dataset.main(argv)
        assert info.value.code == 2
