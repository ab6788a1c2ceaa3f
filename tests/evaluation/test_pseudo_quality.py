"""Pseudo-label precision / recall against hidden truth: matching by hand, and in training."""

import json
import math
import os
import uuid

import numpy as np
import pytest
import torch

from dualalign.evaluation.pseudo_quality import match_counts, precision_recall

T = torch.tensor


def test_match_counts_greedy_by_score_and_class():
    gt_boxes = T([[0.0, 0, 10, 10], [20.0, 20, 30, 30], [40.0, 40, 50, 50]])
    gt_classes = T([0, 0, 1])
    pred_boxes = T(
        [
            [0.0, 0, 10, 10],  # class 0, exact: tp
            [1.0, 1, 10, 10],  # class 0, same cell, lower score: fp (already taken)
            [40.0, 40, 50, 50],  # class 0 on a class-1 cell: fp
            [60.0, 60, 70, 70],  # nowhere: fp (class 1)
        ]
    )
    scores = T([0.9, 0.8, 0.7, 0.6])
    counts = match_counts(pred_boxes, T([0, 0, 0, 1]), scores, gt_boxes, gt_classes, 2)
    # class 0: tp 1, fp 2, fn 1 (the cell at 20..30); class 1: tp 0, fp 1, fn 1
    assert counts.tolist() == [[1, 2, 1], [0, 1, 1]]


def test_match_counts_without_predictions_or_truth():
    empty = torch.zeros((0, 4))
    none = torch.zeros((0,), dtype=torch.long)
    assert match_counts(empty, none, torch.zeros(0), T([[0.0, 0, 5, 5]]), T([1]), 2).tolist() == [
        [0, 0, 0],
        [0, 0, 1],
    ]
    assert match_counts(T([[0.0, 0, 5, 5]]), T([1]), T([0.9]), empty, none, 2).tolist() == [
        [0, 0, 0],
        [0, 1, 0],
    ]


def test_precision_recall_in_percent():
    out = precision_recall(np.array([[1, 2, 1], [0, 0, 0]]))
    assert out["precision_c0"] == pytest.approx(100 / 3) and out["recall_c0"] == 50.0
    assert math.isnan(out["precision_c1"]) and math.isnan(out["recall_c1"])
    assert out["precision"] == pytest.approx(100 / 3) and out["count"] == 3.0


def test_evaluator_counts_detections_above_their_class_threshold():
    from detectron2.data import DatasetCatalog
    from detectron2.structures import Boxes, BoxMode, Instances

    from dualalign.evaluation.pseudo_quality import PseudoLabelQualityEvaluator

    name = f"pq_{uuid.uuid4().hex[:8]}"
    anns = [{"bbox": [0, 0, 10, 10], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0},
            {"bbox": [20, 20, 30, 30], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1}]  # fmt: skip
    DatasetCatalog.register(name, lambda: [{"image_id": 1, "annotations": anns}])
    det = Instances((64, 64))
    det.pred_boxes = Boxes(T([[0.0, 0, 10, 10], [20.0, 20, 30, 30]]))
    det.scores, det.pred_classes = T([0.8, 0.8]), T([0, 1])
    counts = {}
    for thresh in (0.5, (0.5, 0.9)):  # class 1's detection is below its own threshold
        ev = PseudoLabelQualityEvaluator(name, thresh, 2)
        ev.process([{"image_id": 1}], [{"instances": det}])
        counts[thresh] = ev._counts.tolist()
    DatasetCatalog.remove(name)
    assert counts[0.5] == [[1, 0, 0], [1, 0, 0]]
    assert counts[(0.5, 0.9)] == [[1, 0, 0], [0, 0, 1]]


@pytest.mark.slow
def test_pseudo_label_quality_is_logged_during_training(tmp_path):
    from dualalign.data.synthetic import generate_dataset
    from dualalign.engine.trainer import Trainer
    from dualalign_testing import dataset_opts, quick_schedule

    from dualalign.engine.setup import build_cfg

    paths = generate_dataset(
        str(tmp_path / "data"), num_labeled=4, num_unlabeled=4, num_val=2, num_test=2, image_size=64
    )
    truth = os.path.join(os.path.dirname(paths["unlabeled"]), "unlabeled_with_gt.json")
    tag = uuid.uuid4().hex[:8]
    coco = [
        [f"lab_{tag}", paths["labeled"], paths["image_root"]],
        [f"test_{tag}", paths["test"], paths["image_root"]],
        [f"pool_truth_{tag}", truth, paths["image_root"]],  # read by the diagnostic only
    ]
    opts = dataset_opts(paths, tmp_path / "out", tag) + [
        "DUALALIGN.DATASETS.COCO", str(coco),
        "DUALALIGN.DIAGNOSTICS.PSEUDO_DATASET", f"pool_truth_{tag}",
        "DUALALIGN.DIAGNOSTICS.PSEUDO_PERIOD", "2",
        "DUALALIGN.PSEUDO.SCORE_THRESH", "0.0",
        "SOLVER.MAX_ITER", "4",
    ]  # fmt: skip
    cfg = build_cfg(quick_schedule("dualalign_R18_instant_test.yaml"), opts)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    with open(os.path.join(cfg.OUTPUT_DIR, "metrics.json")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    logged = [r for r in records if "pseudo_quality/precision" in r]
    # After iteration 1 (every 2 iterations), then detectron2's EvalHook runs the last one
    # after training.
    assert len(logged) == 2 and logged[0]["iteration"] == 1
    assert all(0.0 <= r["pseudo_quality/count"] for r in logged)
    with open(truth) as f:
        assert json.load(f)["annotations"]  # the truth exists; training read unlabeled.json only
