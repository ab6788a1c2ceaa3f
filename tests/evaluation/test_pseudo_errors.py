"""The kinds of a model's pseudo-labels (dualalign/evaluation/pseudo_errors.py): one of each by
hand, and on random images the kinds split match_counts' true and false positives exactly."""

import numpy as np
import torch

from dualalign.evaluation.pseudo_errors import ERROR_KINDS, error_kinds
from dualalign.evaluation.pseudo_quality import match_counts


def t(rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def test_one_of_each_kind_by_hand():
    gt_boxes = t([[0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110]])
    gt_classes = torch.tensor([0, 1, 2])
    pred = t(
        [
            [0, 0, 10, 10],  # class 0 on the class-0 cell: correct
            [0, 0, 10, 11],  # class 0 again, lower score: duplicate
            [50, 50, 60, 60],  # class 1 on the class-1 cell: correct
            [50, 50, 60, 61],  # class 2 on the class-1 cell, which class 1 took: beside right
            [100, 100, 110, 110],  # class 1 on the class-2 cell, nobody right: class only
            [0, 0, 10, 30],  # class 0, IoU 1/3 with its cell: localisation
            [200, 200, 210, 210],  # far from every cell: background
        ]
    )
    classes = torch.tensor([0, 0, 1, 2, 1, 0, 0])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.6, 0.5, 0.4])
    kinds, cells = error_kinds(pred, classes, scores, gt_boxes, gt_classes)
    assert kinds == [
        "correct",
        "duplicate",
        "correct",
        "class_beside_right",
        "class_only",
        "localisation",
        "background",
    ]
    assert cells == [-1, -1, -1, 1, 2, -1, -1]  # the true class of a wrong-class cell
    empty = torch.tensor([], dtype=torch.long)
    assert error_kinds(pred, classes, scores, t([]), empty) == (["background"] * 7, [-1] * 7)


def test_kinds_split_true_and_false_positives_on_random_images():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n, m = rng.integers(0, 12), rng.integers(0, 6)
        xy = rng.uniform(0, 80, (n + m, 2))
        wh = rng.uniform(5, 30, (n + m, 2))
        boxes = torch.tensor(np.hstack([xy, xy + wh]), dtype=torch.float32)
        pred, gt = boxes[:n], boxes[n:]
        classes = torch.tensor(rng.integers(0, 3, n), dtype=torch.long)
        gt_classes = torch.tensor(rng.integers(0, 3, m), dtype=torch.long)
        scores = torch.tensor(rng.uniform(0, 1, n), dtype=torch.float32)
        kinds, cells = error_kinds(pred, classes, scores, gt, gt_classes)
        counts = match_counts(pred, classes, scores, gt, gt_classes, 3)
        assert set(kinds) <= set(ERROR_KINDS)
        wrong_class = [k in ("class_beside_right", "class_only") for k in kinds]
        assert [c >= 0 for c in cells] == wrong_class
        assert all(c != int(p) for c, p, w in zip(cells, classes, wrong_class) if w)
        assert kinds.count("correct") == counts[:, 0].sum()
        assert len(kinds) - kinds.count("correct") == counts[:, 1].sum()
