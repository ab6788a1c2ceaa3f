"""scripts/mine_unlabeled.py with a fake detector of black markers (injected ``main``).

Inputs: a 512x384 PNG (a "large image", mined on level 0), the same pixels as a 2-level TIFF
slide (mined on level 1) and a corrupt file. Checked: the pool loads with ``load_unlabeled``
and through the config key, provenance fields, patch pixels, resume and re-mining.
"""

import json
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from dualalign.data.unlabeled_pool import load_unlabeled
from dualalign.engine.setup import build_cfg
from dualalign.wsi.reader import open_slide
from dualalign.wsi.synthetic_slide import make_synthetic_slide, write_pyramidal_tiff

from .conftest import CLASSES, CONFIG, SMALL_OPTS, MarkerDetector

PATCH = 128
TISSUE = (0, 0, 384, 384)  # the right 128 columns are glass
MARKERS = [(150, 150, 170, 170), (300, 20, 320, 40), (450, 300, 470, 320)]  # last on glass
# Level-0 patch origins expected: PNG on level 0 (the glass marker's tile is skipped) and the
# TIFF on level 1 (256x192, tiles at level-1 x 0/128, y 0/64; each holds a marker).
EXPECTED = {
    "image.png": {(128, 128), (256, 0)},
    "slide.tif": {(0, 0), (0, 128), (256, 0), (256, 128)},
}


@pytest.fixture(scope="module")
def mine():
    from dualalign.inference import mine_run

    return mine_run


@pytest.fixture
def inputs(tmp_path):
    image = make_synthetic_slide(np.random.default_rng(3), 512, 384, [TISSUE])
    for x0, y0, x1, y1 in MARKERS:
        image[y0:y1, x0:x1] = 0
    png = str(tmp_path / "image.png")
    cv2.imwrite(png, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    tif = write_pyramidal_tiff(tmp_path / "slide.tif", image, levels=2, tile=128)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 64)
    return {"image": image, "png": png, "tif": tif, "broken": str(broken)}


def _run(mine, inputs, out, detector, *extra):
    argv = [
        "--config-file",
        CONFIG,
        "--weights",
        "fake.pth",
        "--input",
        inputs["png"],
        inputs["broken"],
        inputs["tif"],
        "--output",
        str(out),
        "--patch-size",
        str(PATCH),
        "--level",
        "1",
        "--classes",
        ",".join(CLASSES),
        "--no-progress",
        *extra,
        *SMALL_OPTS,
    ]
    return mine.main(argv, predictor_factory=lambda cfg, args: detector)


def _mtimes(folder):
    return {
        os.path.join(root, n): os.stat(os.path.join(root, n)).st_mtime_ns
        for root, _, names in os.walk(folder)
        for n in names
    }


def test_mine_resume_and_remine(mine, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(mine, inputs, out, MarkerDetector()) == 1  # the corrupt input failed
    assert f"error: {inputs['broken']}: " in capsys.readouterr().err

    records = load_unlabeled(str(out / "unlabeled.json"), str(out / "images"), check_images="full")
    found = {}
    for r in records:
        found.setdefault(os.path.basename(r["slide"]), set()).add((r["x"], r["y"]))
        assert r["slide"] in (os.path.abspath(inputs["png"]), os.path.abspath(inputs["tif"]))
        assert (r["width"], r["height"]) == (PATCH, PATCH)
        assert r["top_score"] == pytest.approx(0.9) and r["top_class"] == CLASSES[2]
        assert r["num_detections"] >= 1
        level = 1 if r["slide"].endswith(".tif") else 0
        assert r["level"] == level and r["downsample"] == 2.0**level
        stem = os.path.splitext(os.path.basename(r["slide"]))[0]
        assert r["file_name"] == str(out / "images" / stem / f"{r['x']}_{r['y']}.png")
        patch = cv2.cvtColor(cv2.imread(r["file_name"]), cv2.COLOR_BGR2RGB)
        with open_slide(r["slide"]) as reader:  # the patch is the slide's own pixels
            np.testing.assert_array_equal(
                patch, reader.read_region(r["x"], r["y"], level, PATCH, PATCH)
            )
        if level == 0:
            x, y = r["x"], r["y"]
            np.testing.assert_array_equal(patch, inputs["image"][y : y + PATCH, x : x + PATCH])
    assert found == EXPECTED

    data = json.loads((out / "unlabeled.json").read_text())
    assert data["annotations"] == [] and [c["name"] for c in data["categories"]] == CLASSES
    name = f"mined_{abs(hash(str(out)))}"
    build_cfg(
        CONFIG,
        SMALL_OPTS
        + [
            "DUALALIGN.DATASETS.UNLABELED",
            [[name, str(out / "unlabeled.json"), str(out / "images")]],
        ],
    )
    assert len(DatasetCatalog.get(name)) == len(records) == 6

    # Resume: finished slides are skipped, nothing is rewritten but the pool json.
    before = _mtimes(out / "images")
    before_states = _mtimes(out / "state")
    detector = MarkerDetector()
    assert _run(mine, inputs, out, detector) == 1
    assert detector.seen == []
    assert _mtimes(out / "images") == before and _mtimes(out / "state") == before_states
    assert json.loads((out / "unlabeled.json").read_text())["images"] == data["images"]

    # Other settings: the slides are mined again from scratch (no marker scores >= 0.95).
    detector = MarkerDetector()
    assert _run(mine, inputs, out, detector, "--score-thresh", "0.95") == 1
    assert len(detector.seen) > 0
    assert json.loads((out / "unlabeled.json").read_text())["images"] == []
    assert not any(os.path.isfile(p) for p in _mtimes(out / "images"))
