"""Labelled-fraction subsets: deterministic, grouped by patient, written and re-used."""

import json

import pytest
from detectron2.config import get_cfg

from dualalign.config import add_dualalign_config
from dualalign.data.splits import apply_split_file, labeled_subset, select_fraction


def records(n_patients=10, per_patient=4):
    return [
        {"image_id": p * per_patient + i, "patient_id": f"P{p:02d}"}
        for p in range(n_patients)
        for i in range(per_patient)
    ]


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75, 1.0, 0.33])
def test_fraction_size_and_determinism(fraction):
    recs = records()
    a, rest = select_fraction(recs, fraction, seed=3)
    b, _ = select_fraction(recs, fraction, seed=3)
    assert [r["image_id"] for r in a] == [r["image_id"] for r in b]
    assert len(a) + len(rest) == len(recs)
    # Whole patients of 4 images: the count is the target rounded up to a multiple of 4.
    target = round(fraction * len(recs))
    assert target <= len(a) < target + 4


def test_seed_changes_the_draw():
    recs = records()
    a, _ = select_fraction(recs, 0.5, seed=0)
    b, _ = select_fraction(recs, 0.5, seed=1)
    assert {r["image_id"] for r in a} != {r["image_id"] for r in b}


def test_a_patient_never_spans_both_parts():
    recs = records()
    selected, rest = select_fraction(recs, 0.5, seed=7)
    assert not {r["patient_id"] for r in selected} & {r["patient_id"] for r in rest}


def test_images_without_group_key_are_their_own_group():
    recs = [{"image_id": i} for i in range(20)]
    selected, _ = select_fraction(recs, 0.25, seed=0)
    assert len(selected) == 5


def test_invalid_fraction():
    with pytest.raises(ValueError, match="fraction"):
        select_fraction(records(), 0.0, seed=0)


def test_split_file_written_and_reused(tmp_path):
    cfg = get_cfg()
    add_dualalign_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.DUALALIGN.DATASETS.LABELED_FRACTION = 0.25
    recs = records()
    selected, _ = labeled_subset(cfg, recs)
    written = json.loads((tmp_path / "labeled_split.json").read_text())
    assert written["image_ids"] == [r["image_id"] for r in selected]
    assert written["labeled_fraction"] == 0.25
    # Another run pointed at the file reproduces it, whatever the fraction says now.
    cfg.DUALALIGN.DATASETS.SPLIT_FILE = str(tmp_path / "labeled_split.json")
    cfg.DUALALIGN.DATASETS.LABELED_FRACTION = 0.9
    again, _ = labeled_subset(cfg, recs)
    assert [r["image_id"] for r in again] == written["image_ids"]
    with pytest.raises(ValueError, match="not in the training set"):
        apply_split_file(str(tmp_path / "labeled_split.json"), recs[:3])
