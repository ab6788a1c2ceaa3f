"""scripts/predict.py end to end with a tiny random-init checkpoint, and BatchPredictor.

The random model's detections are meaningless, so ``--score-thresh 0`` makes it write some and
the checks are on the files: presence, CSV columns, valid JSON, counts that agree.
"""

import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from dualalign.data.synthetic import render_patch
from dualalign.engine.setup import build_cfg
from dualalign.inference.predictor import (
    BatchPredictor,
    CheckpointMismatchError,
    resolve_class_names,
)
from dualalign.wsi.synthetic_slide import make_synthetic_slide, write_pyramidal_tiff

from .conftest import CLASSES, CONFIG, FAST_OPTS, REPO_ROOT, SMALL_OPTS

OUTPUT_FILES = (
    "detections.coco.json",
    "images.json",
    "detections.csv",
    "summary.csv",
    "summary.json",
)


@pytest.fixture(scope="module")
def predict():
    from dualalign.inference import predict_run

    return predict_run


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two 128 px patches in a folder, a 2-level 384x320 TIFF slide and a corrupt .svs."""
    folder = tmp_path_factory.mktemp("inputs")
    patches = folder / "patches"
    patches.mkdir()
    for i in range(2):
        image, _ = render_patch(np.random.default_rng(i), image_size=128)
        cv2.imwrite(str(patches / f"patch{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    slide = make_synthetic_slide(np.random.default_rng(0), 384, 320, [(0, 0, 200, 320)])
    tif = write_pyramidal_tiff(folder / "slide.tif", slide, levels=2, tile=128)
    broken = folder / "broken.svs"
    broken.write_bytes(b"II*\x00 this is not a slide " * 20)
    return {"patches": str(patches), "slide": tif, "broken": str(broken)}


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_predict_images_and_slide_with_a_corrupt_input(
    predict, inputs, tiny_checkpoint, tmp_path, capsys
):
    out = tmp_path / "out"
    code = predict.main(
        [
            "--config-file",
            CONFIG,
            "--weights",
            tiny_checkpoint,
            "--input",
            inputs["patches"],
            inputs["broken"],
            inputs["slide"],
            "--output",
            str(out),
            "--score-thresh",
            "0.0",
            "--overlap",
            "32",
            "--classes",
            ",".join(CLASSES),
            "--no-progress",
            *FAST_OPTS,
        ]
    )
    assert code == 1  # the corrupt input failed, the others were processed
    stderr = capsys.readouterr().err
    assert f"error: {inputs['broken']}: " in stderr
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name

    summary = json.loads((out / "summary.json").read_text())
    assert [e["slide"] for e in summary["errors"]] == [inputs["broken"]]
    slides = {s["slide"]: s for s in summary["slides"]}
    patch_paths = [os.path.join(inputs["patches"], f"patch{i}.png") for i in range(2)]
    assert sorted(slides) == sorted(patch_paths + [inputs["slide"]])
    assert slides[inputs["slide"]]["kind"] == "slide"
    assert 0 < slides[inputs["slide"]]["tiles_run"] < slides[inputs["slide"]]["tiles"]
    assert all(slides[p]["kind"] == "image" for p in patch_paths)
    assert summary["classes"] == CLASSES

    images = json.loads((out / "images.json").read_text())
    ids = {im["id"]: im["file_name"] for im in images["images"]}
    assert sorted(ids.values()) == sorted(slides)
    assert [c["name"] for c in images["categories"]] == CLASSES

    rows = _read_csv(out / "detections.csv")
    assert rows[0] == ["slide", "x", "y", "w", "h", "class", "score"]
    rows = rows[1:]
    results = json.loads((out / "detections.coco.json").read_text())
    assert len(results) == len(rows) > 0
    for r in results:
        assert r["image_id"] in ids and 1 <= r["category_id"] <= len(CLASSES)
        x, y, w, h = r["bbox"]
        size = slides[ids[r["image_id"]]]
        assert 0 <= x <= x + w <= size["width"] + 0.01 and 0 <= y <= y + h <= size["height"] + 0.01
        assert 0.0 <= r["score"] <= 1.0

    # Counts in summary.json / summary.csv are the CSV rows >= the threshold, per slide.
    summary_rows = {r[0]: r[1:] for r in _read_csv(out / "summary.csv")[1:]}
    assert _read_csv(out / "summary.csv")[0] == ["slide", *CLASSES, "total"]
    for path, s in slides.items():
        mine = [r for r in rows if r[0] == path and float(r[6]) >= summary["score_thresh"]]
        assert s["total"] == len(mine)
        assert s["counts"] == {c: sum(r[5] == c for r in mine) for c in CLASSES}
        assert summary_rows[path] == [str(s["counts"][c]) for c in CLASSES] + [str(s["total"])]

    for path, s in slides.items():
        overlay = cv2.imread(str(out / s["overlay"]))
        assert overlay is not None
        expected = (320, 384) if path == inputs["slide"] else (128, 128)
        assert overlay.shape[:2] == expected  # slide thumbnail is <= 2048, so full size here


def test_cli_subprocess_exit_codes(inputs, tiny_checkpoint, tmp_path):
    script = os.path.join(REPO_ROOT, "scripts", "predict.py")
    base = [sys.executable, script, "--config-file", CONFIG, "--output", str(tmp_path / "o")]
    ok = subprocess.run(
        base
        + ["--weights", tiny_checkpoint, "--input", inputs["patches"], "--no-progress", *FAST_OPTS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert len(summary["slides"]) == 2 and summary["errors"] == []
    assert summary["score_thresh"] == 0.5
    assert all(s["total"] == sum(s["counts"].values()) for s in summary["slides"])


def test_missing_weights_is_a_setup_error(predict, inputs, tmp_path, capsys):
    code = predict.main(
        [
            "--config-file",
            CONFIG,
            "--weights",
            str(tmp_path / "nope.pth"),
            "--input",
            inputs["patches"],
            "--output",
            str(tmp_path / "o"),
            *SMALL_OPTS,
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "nope.pth: no such file" in err and len(err.strip().splitlines()) == 1


def test_batch_predictor_resizes_and_converts_to_bgr(tiny_checkpoint):
    cfg = build_cfg(CONFIG, SMALL_OPTS)
    predictor = BatchPredictor(cfg, tiny_checkpoint, batch_size=2)
    assert not predictor.model.training and predictor.device.type == "cpu"
    seen = []

    def fake_model(batch):
        seen.extend(batch)
        outs = []
        for item in batch:
            inst = Instances((item["height"], item["width"]))
            inst.pred_boxes = Boxes(torch.tensor([[1.0, 2.0, 30.0, 40.0]]))
            inst.scores, inst.pred_classes = torch.tensor([0.8]), torch.tensor([3])
            outs.append({"instances": inst})
        return outs

    predictor.model = fake_model
    rgb = np.zeros((100, 150, 3), np.uint8)
    rgb[..., 0] = 200  # red
    results = predictor.predict([rgb, rgb, rgb[:64, :64]])
    assert len(results) == 3 and len(seen) == 3
    assert seen[0]["image"].dtype == torch.uint8
    assert tuple(seen[0]["image"].shape) == (3, 85, 128)  # longer side capped at MAX 128
    assert tuple(seen[2]["image"].shape) == (3, 128, 128)  # shorter side up to MIN 128
    assert seen[0]["image"][2].float().mean() > 190 and seen[0]["image"][0].max() == 0  # BGR
    assert (seen[0]["height"], seen[0]["width"]) == (100, 150)
    assert results[0].image_size == (100, 150)


def test_batch_predictor_real_model_outputs(tiny_checkpoint):
    cfg = build_cfg(CONFIG, FAST_OPTS)
    predictor = BatchPredictor(cfg, tiny_checkpoint, class_names=CLASSES, batch_size=2)
    image, _ = render_patch(np.random.default_rng(5), image_size=96)
    results = predictor.predict([image, image[:80]])
    assert [r.image_size for r in results] == [(96, 96), (80, 96)]
    for r in results:
        assert {"pred_boxes", "scores", "pred_classes"} <= set(r.get_fields())
        assert r.pred_boxes.tensor.device.type == "cpu"
        assert (r.pred_classes < len(CLASSES)).all()


def test_class_names_fall_back_to_class_index():
    cfg = build_cfg(CONFIG, SMALL_OPTS + ["DATASETS.TEST", "()"])
    assert resolve_class_names(cfg) == ["class_0", "class_1", "class_2", "class_3"]
    assert resolve_class_names(cfg, CLASSES) == CLASSES
    with pytest.raises(ValueError, match="NUM_CLASSES = 4"):
        resolve_class_names(cfg, ["a", "b"])


def test_checkpoint_of_another_model_is_refused(tiny_checkpoint):
    cfg = build_cfg(CONFIG, SMALL_OPTS + ["MODEL.ROI_HEADS.NUM_CLASSES", "3"])
    with pytest.raises(
        CheckpointMismatchError,
        match="cls_score.weight .* other shapes|other " "shapes .*cls_score",
    ):
        BatchPredictor(cfg, tiny_checkpoint)
