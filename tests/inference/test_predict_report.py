"""predict.py's outputs for people (``dualalign.inference.predict_run``): QuPath GeoJSON, slide
overviews with markers, the HTML report with galleries and triage, checked on the files and in a
real headless browser.

A fake detector finds the black squares drawn on a synthetic pyramidal slide and a patch; its
class is the square's side modulo 4 and its score grows with the side, so every class has
detections with distinct, known scores.
"""

import json
import os
import shutil
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from dualalign.inference.predict_run import main as predict_main
from dualalign.utils.visualize import class_colour
from dualalign.wsi.synthetic_slide import make_synthetic_slide, write_pyramidal_tiff

from .conftest import CLASSES, CONFIG, SMALL_OPTS

GALLERY = 3  # crops per class


class SquareDetector:
    """A box per black square; class = side % 4, score = 0.5 + side / 100."""

    def predict(self, images):
        out = []
        for image in images:
            dark = np.all(image < 30, axis=2).astype(np.uint8)
            _, _, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
            stats = stats[1:]
            inst = Instances(image.shape[:2])
            boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in stats]
            inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            side = torch.tensor(stats[:, 2], dtype=torch.int64)
            inst.scores = 0.5 + side.float() / 100
            inst.pred_classes = side % 4
            out.append(inst)
        return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 3-level 1536 x 1024 slide, glass on the right, with 24 squares of sides 12..35 on the
    tissue, and a patch cut from it."""
    folder = tmp_path_factory.mktemp("report_inputs")
    rng = np.random.default_rng(0)
    image = make_synthetic_slide(rng, 1536, 1024, [(0, 0, 1100, 1024)])
    for k, side in enumerate(range(12, 36)):
        x, y = 60 + (k % 6) * 170, 80 + (k // 6) * 240
        image[y : y + side, x : x + side] = 5
    write_pyramidal_tiff(folder / "slide.tif", image, levels=3, tile=256)
    cv2.imwrite(str(folder / "patch.png"), cv2.cvtColor(image[40:200, 20:220], cv2.COLOR_RGB2BGR))
    return folder


def _predict(inputs, out, *flags):
    argv = ["--config-file", CONFIG, "--weights", "unused.pth", "--input", str(inputs)]
    argv += ["--output", str(out), "--tile-size", "256", "--classes", ",".join(CLASSES)]
    argv += ["--no-progress", *flags, *SMALL_OPTS]
    return predict_main(argv, predictor_factory=lambda cfg, args: SquareDetector())


@pytest.fixture(scope="module")
def report_dir(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    code = _predict(
        inputs, out, "--report", "--gallery-size", str(GALLERY), "--triage-classes", "HSIL,AGC"
    )
    assert code == 0
    return out


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and not attrs["href"].startswith("#"):
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])


def test_geojson_per_input_matches_the_csv(report_dir):
    summary = json.loads((report_dir / "summary.json").read_text())
    with open(report_dir / "detections.csv") as f:
        rows = [line.split(",") for line in f.read().splitlines()[1:]]
    for entry in summary["slides"]:
        collection = json.loads((report_dir / entry["geojson"]).read_text())
        assert collection["type"] == "FeatureCollection"
        features = collection["features"]
        assert len(features) == entry["total"] > 0
        mine = [r for r in rows if r[0] == entry["slide"]]
        for feature, row in zip(features, mine):  # both by decreasing score
            x, y, w, h = (float(v) for v in row[1:5])
            ring = feature["geometry"]["coordinates"][0]
            np.testing.assert_allclose(ring[0] + ring[2], [x, y, x + w, y + h], atol=0.011)
            props = feature["properties"]
            assert props["objectType"] == "detection"
            name = props["classification"]["name"]
            assert name == row[5]
            assert props["classification"]["color"] == list(class_colour(CLASSES.index(name)))
            assert props["measurements"]["score"] == pytest.approx(float(row[6]))


def test_slide_overview_has_markers_in_class_colours(report_dir):
    summary = json.loads((report_dir / "summary.json").read_text())
    slide = next(s for s in summary["slides"] if s["kind"] == "slide")
    overview = cv2.cvtColor(cv2.imread(str(report_dir / slide["overlay"])), cv2.COLOR_BGR2RGB)
    assert overview.shape[:2] == (1024, 1536)  # the thumbnail, full size for this slide
    collection = json.loads((report_dir / slide["geojson"]).read_text())
    palette = [list(class_colour(k)) for k in range(len(CLASSES))]
    seen = set()
    for feature in collection["features"]:
        (x0, y0), _, (x1, y1) = feature["geometry"]["coordinates"][0][:3]
        cx, cy = int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2))
        if cx < 400 and cy < 200:
            continue  # under the legend
        window = overview[cy - 3 : cy + 4, cx - 3 : cx + 4].reshape(-1, 3).tolist()
        found = [k for k, colour in enumerate(palette) if colour in window]
        assert found, (cx, cy)  # a dot on the cell (a neighbour's dot may cover it)
        seen.update(found)
    names = {f["properties"]["classification"]["name"] for f in collection["features"]}
    assert seen == {CLASSES.index(n) for n in names}
    assert (overview < 30).all(axis=2).sum() > 5000  # the cells stay visible around the dots


def test_report_lists_slides_by_triage_and_links_resolve(report_dir):
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["triage"]["definition"] == (
        "number of detections of HSIL, AGC with score >= 0.5"
    )
    with open(report_dir / "detections.csv") as f:
        rows = [line.split(",") for line in f.read().splitlines()[1:]]
    for entry in summary["slides"]:
        expected = sum(r[0] == entry["slide"] and r[5] in ("HSIL", "AGC") for r in rows)
        assert entry["triage"] == expected
    page = (report_dir / "report.html").read_text()
    parser = _Links()
    parser.feed(page)
    for href in parser.links + parser.images:
        assert "://" not in href and not href.startswith("/"), href  # relative: opens offline
        assert (report_dir / href).is_file(), href
    assert "<script" not in page and "http" not in page.replace(CONFIG, "")
    # Slides by decreasing triage score in the table; galleries hold the top crops by score.
    by_triage = sorted(summary["slides"], key=lambda s: -s["triage"])
    positions = [page.index(f'>{os.path.basename(s["slide"])}</a>') for s in by_triage]
    assert positions == sorted(positions)
    slide = next(s for s in summary["slides"] if s["kind"] == "slide")
    crops = [src for src in parser.images if src.startswith("crops/slide/")]
    assert len(crops) == sum(min(GALLERY, n) for n in slide["counts"].values())
    captions = [float(c) for c in _captions(page, "slide.tif")]
    for k in range(len(CLASSES)):  # each class's run of captions decreases
        run = captions[: min(GALLERY, slide["counts"][CLASSES[k]])]
        captions = captions[len(run) :]
        assert run == sorted(run, reverse=True)
    crop = cv2.imread(str(report_dir / crops[0]))
    assert 64 <= max(crop.shape[:2]) <= 256


def _captions(page, name):
    section = page[page.index(f"<h2>{name}</h2>") :]
    section = section[: section.index("</section>")]
    return [part.split("</figcaption>")[0] for part in section.split("<figcaption>")[1:]]


def test_format_subset_and_triage_max(inputs, tmp_path):
    out = tmp_path / "out"
    assert _predict(inputs, out, "--format", "geojson", "--triage", "max") == 0
    assert sorted(os.listdir(out)) == ["geojson", "summary.csv", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    slide = next(s for s in summary["slides"] if s["kind"] == "slide")
    features = json.loads((out / slide["geojson"]).read_text())["features"]
    assert slide["triage"] == max(f["properties"]["measurements"]["score"] for f in features)
    assert slide["overlay"] is None


def test_bad_report_flags_are_setup_errors(inputs, tmp_path, capsys):
    assert _predict(inputs, tmp_path / "o", "--triage-classes", "HSIL,CIN3") == 2
    err = capsys.readouterr().err
    assert "--triage-classes: ['CIN3'] not among the model's classes" in err
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and the message, exit 2
        _predict(inputs, tmp_path / "o", "--format", "coco,pdf")
    assert exit_info.value.code == 2
    assert (
        "unknown output format(s) ['pdf']; choose among coco,csv,geojson" in capsys.readouterr().err
    )


def _browser():
    """A headless Chromium driven by Selenium, or a reason why there is none."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed (make test installs it)"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        return None, (
            "no chromium/chromedriver on PATH (make test installs Debian's chromium and "
            "chromium-driver when apt-get works)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1200,1400")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(driver), options=options), None
    except Exception as e:  # a browser that does not start is an environment problem
        return None, f"chromium did not start: {type(e).__name__}: {str(e).splitlines()[0]}"


def test_report_in_a_headless_browser(report_dir, tmp_path):
    browser, reason = _browser()
    if browser is None:
        pytest.skip(f"no headless browser: {reason}")
    try:
        browser.get((report_dir / "report.html").as_uri())
        assert browser.execute_script("return document.readyState") == "complete"
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete,"
            " i.naturalWidth]);"
        )
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        browser.save_screenshot(str(tmp_path / "report.png"))
    finally:
        browser.quit()
    assert errors == []
    assert len(images) > 10 and any(src.startswith("crops/") for src, _, _ in images)
    assert [src for src, done, width in images if not (done and width > 0)] == []
    shot = cv2.imread(str(tmp_path / "report.png"))
    assert shot is not None and shot.shape[1] >= 1000 and shot.std() > 10  # not a blank page
    # Kept with the test's temp folder (pytest keeps those of failed tests), and where
    # DUALALIGN_TEST_ARTIFACTS points, if set (CI can upload that folder).
    keep = os.environ.get("DUALALIGN_TEST_ARTIFACTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(tmp_path / "report.png", os.path.join(keep, "report_screenshot.png"))
