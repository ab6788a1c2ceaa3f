"""The report's pieces: triage rules, top-N selection, crops at the slide's edge, the page."""

import numpy as np
import pytest

from dualalign.report import (
    TriageRule,
    crop_detection,
    describe_triage,
    render_report,
    top_per_class,
    triage_score,
)
from dualalign.utils.visualize import class_colour, draw_markers
from dualalign.wsi.reader import _ArrayReader

NAMES = ["ASC-US", "LSIL", "HSIL"]
SCORES = np.array([0.9, 0.4, 0.8, 0.95, 0.6, 0.7])
CLASSES = np.array([0, 2, 2, 1, 2, 0])


def test_triage_count_and_max():
    assert triage_score(SCORES, CLASSES, NAMES, TriageRule("count", ["HSIL"], 0.5)) == 2
    assert triage_score(SCORES, CLASSES, NAMES, TriageRule("count", None, 0.75)) == 3
    assert triage_score(SCORES, CLASSES, NAMES, TriageRule("max", ["HSIL", "LSIL"])) == 0.95
    assert triage_score(SCORES[:1], CLASSES[:1], NAMES, TriageRule("max", ["HSIL"])) == 0.0
    with pytest.raises(ValueError, match="triage mode must be one of"):
        triage_score(SCORES, CLASSES, NAMES, TriageRule("mean"))
    assert describe_triage(TriageRule("count", ["HSIL"], 0.8)) == (
        "number of detections of HSIL with score >= 0.8"
    )
    assert describe_triage(TriageRule("max")) == "highest detection score among all classes"


def test_top_per_class_best_first():
    top = top_per_class(SCORES, CLASSES, 4, 2)
    assert [t.tolist() for t in top] == [[0, 5], [3], [2, 4], []]


def test_crop_at_the_slide_edge_is_padded_and_outlined():
    image = np.full((100, 120, 3), 200, np.uint8)
    reader = _ArrayReader("x.png", image, None)
    crop = crop_detection(reader, [0, 0, 10, 8], (255, 0, 0))
    assert crop.shape[:2] == (64, 64)  # small cells get at least 64 px of context
    assert (crop[0, 0] == 255).all()  # beyond the slide's edge: white
    assert (crop == [255, 0, 0]).all(axis=2).any()  # the box outline
    big = crop_detection(reader, [0, 0, 400, 300], (0, 0, 255))
    assert max(big.shape[:2]) == 256  # large crops are shrunk for the page


def test_markers_and_legend():
    background = np.full((600, 800, 3), 128, np.uint8)
    boxes = np.array([[3000.0, 2000.0, 3040.0, 2040.0], [6000.0, 4000.0, 6030.0, 4030.0]])
    out = draw_markers(background, boxes, np.array([2, 2]), np.array([0.9, 0.8]), NAMES, 0.1)
    assert out.shape == background.shape and (background == 128).all()  # a copy
    assert out[202, 302].tolist() == list(class_colour(2))  # a dot at the box centre
    assert out[50:, 400:].astype(int).sum() != background[50:, 400:].astype(int).sum()
    assert (out[5:60, 5:100] > 128).any()  # the legend's white panel in the corner


def test_page_escapes_names_and_sorts_by_triage():
    run = {
        "title": "t",
        "created": "2026-12-02 00:00",
        "config_file": "c.yaml",
        "weights": "w.pth",
        "score_thresh": 0.5,
        "triage": "highest detection score among all classes",
        "links": [("detections.csv", "detections.csv")],
        "errors": [{"slide": "bad.svs", "error": "cannot read <it>"}],
    }
    slide = {
        "slide": "/d/a.svs",
        "kind": "slide",
        "width": 10,
        "height": 10,
        "counts": {"ASC-US": 1, "LSIL": 0, "HSIL": 0},
        "total": 1,
        "overlay": "overlays/a.png",
        "geojson": None,
        "gallery": {"ASC-US": [{"src": "crops/a/c0_000.png", "score": 0.5}]},
    }
    slides = [
        {**slide, "name": "<b>low</b>.svs", "triage": 0.2},
        {**slide, "name": "high.svs", "triage": 0.9},
    ]
    page = render_report(run, NAMES, slides)
    assert "<b>low</b>" not in page and "&lt;b&gt;low&lt;/b&gt;.svs" in page
    assert "cannot read &lt;it&gt;" in page
    assert page.index(">high.svs</a>") < page.index(">&lt;b&gt;low")
    assert page.count("<figure>") == 2 and "no detection" in page
    assert "<script" not in page
