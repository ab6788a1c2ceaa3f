"""The labelled-feature agreement diagnostic (dualalign/evaluation/feature_agreement.py,
scripts/feature_agreement.py): each rule by hand, the bank's hard negatives, the report's counts,
the script on a tiny model, with the labelled images outside a split held out."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from dualalign_testing import quick_cfg

from dualalign.evaluation.feature_agreement import (
    HARD_NEGATIVE,
    agreement,
    agreement_report,
    format_agreement_report,
    label_bank,
)
from dualalign.utils.paths import repo_root

# A 2-D bank: class 0 along x, class 1 along y, one hard negative on the diagonal.
BANK_F = F.normalize(
    torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0], [1.0, 1.0]]), dim=1
)
BANK_Y = torch.tensor([0, 0, 1, 1, HARD_NEGATIVE])


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_nearest_mean_by_hand():
    f = unit([1.0, 0.2], [0.2, 1.0], [1.0, 0.9])
    agrees = agreement(f, torch.tensor([0, 0, 0]), BANK_F, BANK_Y, 2, "nearest_mean")
    # the third row sits by the hard negative, but the class means ignore hard negatives
    assert agrees.tolist() == [True, False, True]
    # a class with no true box in the bank never wins, even for a row right on its axis
    no_class_1 = BANK_Y != 1
    agrees = agreement(f[1:2], torch.tensor([1]), BANK_F[no_class_1], BANK_Y[no_class_1], 2,
                       "nearest_mean")  # fmt: skip
    assert agrees.tolist() == [False]


def test_neighbour_rules_by_hand():
    near_negative = unit([1.0, 0.95])
    assert agreement(near_negative, torch.tensor([0]), BANK_F, BANK_Y, 2, "nn1").tolist() == [False]
    on_x = unit([1.0, 0.05])
    assert agreement(on_x, torch.tensor([0]), BANK_F, BANK_Y, 2, "nn1").tolist() == [True]
    # 5 nearest = the whole bank: labels 0, 0, 1, 1, -1 -> a tie of 0 and 1 goes to 0
    assert agreement(on_x, torch.tensor([0]), BANK_F, BANK_Y, 2, "knn5").tolist() == [True]
    assert agreement(on_x, torch.tensor([1]), BANK_F, BANK_Y, 2, "knn5").tolist() == [False]
    # k larger than the bank uses the whole bank
    assert agreement(on_x, torch.tensor([0]), BANK_F, BANK_Y, 2, "knn10").tolist() == [True]
    # three hard negatives outvote two true boxes
    bank_f = torch.cat([BANK_F, unit([1.0, 1.1], [1.1, 1.0])])
    bank_y = torch.cat([BANK_Y, torch.tensor([HARD_NEGATIVE, HARD_NEGATIVE])])
    assert agreement(on_x, torch.tensor([0]), bank_f, bank_y, 2, "knn5").tolist() == [False]


def test_agreement_edge_cases():
    empty = torch.zeros(0, 2)
    none = torch.zeros(0, dtype=torch.long)
    assert agreement(empty, none, BANK_F, BANK_Y, 2, "knn5").numel() == 0
    no_bank = agreement(unit([1.0, 0.0]), torch.tensor([0]), empty, none, 2, "nn1")
    assert no_bank.tolist() == [False]
    with pytest.raises(ValueError, match="one of nearest_mean"):
        agreement(unit([1.0, 0.0]), torch.tensor([0]), BANK_F, BANK_Y, 2, "knn3")


def image(boxes, classes, scores, features, gt_boxes, gt_classes, gt_features):
    t = torch.tensor
    return {
        "boxes": t(boxes, dtype=torch.float32).reshape(-1, 4), "classes": t(classes).long(),
        "scores": t(scores, dtype=torch.float32), "features": unit(*features) if features
        else torch.zeros(0, 2), "gt_boxes": t(gt_boxes, dtype=torch.float32).reshape(-1, 4),
        "gt_classes": t(gt_classes).long(),
        "gt_features": unit(*gt_features) if gt_features else torch.zeros(0, 2),
    }  # fmt: skip


def test_label_bank_keeps_true_boxes_and_confident_lone_detections():
    images = [
        image(
            boxes=[[0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]],
            classes=[0, 1, 1], scores=[0.9, 0.7, 0.3],
            features=[[1, 0], [0, 1], [1, 1]],
            gt_boxes=[[0, 0, 10, 10]], gt_classes=[0], gt_features=[[1, 0.1]],
        ),  # on the true box: not a hard negative; at 0.7 alone: one; at 0.3: too unsure
        image(
            boxes=[[20, 20, 30, 30]], classes=[1], scores=[0.6], features=[[0.5, 1]],
            gt_boxes=[], gt_classes=[], gt_features=[],
        ),  # an image without true boxes: its confident detection is a hard negative
    ]
    feats, labels = label_bank(images, hard_negative_score=0.5)
    assert labels.tolist() == [0, HARD_NEGATIVE, HARD_NEGATIVE]
    assert torch.allclose(feats, torch.cat([unit([1, 0.1]), unit([0, 1]), unit([0.5, 1])]))


def test_label_bank_negatives_only_leaves_out_the_true_boxes():
    images = [
        image(
            boxes=[[50, 50, 60, 60]], classes=[1], scores=[0.8], features=[[0, 1]],
            gt_boxes=[[0, 0, 10, 10]], gt_classes=[0], gt_features=[[1, 0]],
        ),
    ]
    feats, labels = label_bank(images, negatives_only=True)
    assert labels.tolist() == [HARD_NEGATIVE] and torch.allclose(feats, unit([0, 1]))


def test_report_counts_by_hand():
    bank = (unit([1, 0], [0, 1], [1, 1]), torch.tensor([0, 1, HARD_NEGATIVE]))
    images = [
        image(
            boxes=[[0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90], [0, 0, 10, 10]],
            classes=[0, 0, 1, 0], scores=[0.99, 0.95, 0.91, 0.5],
            features=[[1, 0], [1, 0.9], [0, 1], [1, 0]],
            gt_boxes=[[0, 0, 10, 10], [80, 80, 90, 90]], gt_classes=[0, 1], gt_features=[],
        ),
    ]
    # >= 0.9: right (0.99), background by the hard negative (0.95), right (0.91); 0.5 below base
    report = agreement_report(bank, images, 2, base=0.9, thresholds=[0.9, 0.96], rules=["nn1"])
    assert (report["detections"], report["right"]) == (3, 2)
    assert report["thresholds"]["0.9"] == {
        "detections": 3, "right": 2, "precision": pytest.approx(200 / 3), "right_kept": 100.0
    }
    assert report["thresholds"]["0.96"]["right_kept"] == 50.0
    nn1 = report["rules"]["nn1"]
    assert (nn1["detections"], nn1["right"], nn1["precision"]) == (2, 2, 100.0)
    assert nn1["dropped"] == {"background": 1}
    table = format_agreement_report("val", report)
    assert "| nn1 | 2 | 100.0 | 100.0 | background 1 |" in table


def run_script(*args):
    cmd = [sys.executable, os.path.join(repo_root(), "scripts", "feature_agreement.py"), *args]
    return subprocess.run(cmd, cwd=repo_root(), capture_output=True, text=True, timeout=600)


def test_script_on_a_tiny_model(tiny_synthetic, tmp_path):
    cfg = quick_cfg("supervised_R18_instant_test", tiny_synthetic, tmp_path, "fa")
    config = tmp_path / "config.yaml"
    config.write_text(cfg.dump())
    out = tmp_path / "fa.json"
    proc = run_script("--config-file", str(config), "--labeled", "lab_fa", "--eval", "test_fa",
                      "--min-score", "0", "--device", "cpu", "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["labeled_images"] == 8 and record["bank_true_boxes"] > 0
    report = record["reports"]["test_fa"]
    assert report["thresholds"]["0"]["detections"] == report["detections"] > 0
    for rule in report["rules"].values():  # a rule only drops: what it keeps + drops = all
        assert rule["detections"] + sum(rule["dropped"].values()) == report["detections"]
    assert "test_fa: " in proc.stdout and "| knn10 |" in proc.stdout

    # held out: the labelled images outside the split add their true boxes ("all") to the bank
    with open(tiny_synthetic["labeled"]) as f:
        coco = json.load(f)
    ids = [im["id"] for im in coco["images"]]
    split = tmp_path / "labeled_split.json"
    split.write_text(json.dumps({"image_ids": ids[:3]}))
    proc = run_script("--config-file", str(config), "--labeled", "lab_fa", "--eval", "test_fa",
                      "--split-file", str(split), "--held-out", "all", "--min-score", "0",
                      "--device", "cpu", "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    held = json.loads(out.read_text())
    assert (held["labeled_images"], held["held_out_images"]) == (3, 5)
    assert held["bank_true_boxes"] == len(coco["annotations"])
    assert "3 images + 5 held out (all)" in proc.stdout

    bad = run_script("--config-file", str(config), "--labeled", "lab_fa", "--eval", "test_fa",
                     "--held-out", "negatives")  # fmt: skip
    assert bad.returncode == 2 and "--held-out negatives: needs --split-file" in bad.stderr
    bad = run_script("--config-file", str(config), "--labeled", "lab_fa", "--eval", "nope")
    assert bad.returncode == 2 and "--eval 'nope' is not a data set" in bad.stderr
    bad = run_script("--config-file", str(config), "--labeled", "lab_fa", "--eval", "test_fa",
                     "--weights", str(tmp_path / "missing.pth"))  # fmt: skip
    assert bad.returncode == 2 and "missing.pth: no such file" in bad.stderr
    bad = run_script("--config-file", str(config), "--labeled", "lab_fa", "--eval", "test_fa",
                     "--min-score", "1")  # fmt: skip
    assert bad.returncode == 2 and "--min-score 1.0: a score in [0, 1)" in bad.stderr
