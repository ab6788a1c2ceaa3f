"""Image-weighted AP (dualalign/evaluation/weighted_ap.py) against pycocotools on copied images.

The reference builds the resampled set the slow way (each drawn image copied with its boxes and
detections, renumbered) and evaluates it with :func:`evaluate_coco_range`; the fast path must
give the same mAP from the one matching of the original set.
"""

import numpy as np
import pytest

from dualalign.evaluation.range_ap import coco_from_dict, evaluate_coco_range
from dualalign.evaluation.weighted_ap import image_matches, weighted_map

IOUS = [0.1, 0.3, 0.5, 0.7]


def resample_coco(gt, predictions, image_ids):
    """``gt`` and ``predictions`` over ``image_ids`` drawn with replacement: the j-th drawn
    image becomes image j + 1 with copies of its boxes and detections."""
    images = {im["id"]: im for im in gt["images"]}
    out_images, out_anns, out_preds = [], [], []
    for j, old in enumerate(image_ids):
        out_images.append(dict(images[old], id=j + 1))
        for a in gt["annotations"]:
            if a["image_id"] == old:
                out_anns.append(dict(a, id=len(out_anns) + 1, image_id=j + 1))
        out_preds += [dict(p, image_id=j + 1) for p in predictions if p["image_id"] == old]
    return dict(gt, images=out_images, annotations=out_anns), out_preds


def _random_set(seed, n_images=12, n_classes=3):
    """Boxes on a 128 px grid; detections jittered from them, some missing, some spurious, a
    class with ground truth in a few images only."""
    rng = np.random.default_rng(seed)
    images = [{"id": 100 + i, "width": 128, "height": 128} for i in range(n_images)]
    cats = [{"id": 3 + 4 * k, "name": f"c{k}"} for k in range(n_classes)]
    anns, preds = [], []
    for im in images:
        for _ in range(rng.integers(0, 4)):
            cat = cats[rng.integers(0, n_classes - 1 if im["id"] % 4 else n_classes)]["id"]
            x, y = rng.uniform(0, 90, size=2)
            w, h = rng.uniform(10, 35, size=2)
            box = [float(x), float(y), float(w), float(h)]
            anns.append(
                {"id": len(anns) + 1, "image_id": im["id"], "category_id": cat, "bbox": box,
                 "area": float(w * h), "iscrowd": 0}
            )  # fmt: skip
            if rng.random() < 0.8:
                jitter = (np.asarray(box) + rng.normal(0, 4, size=4)).clip(1, None).tolist()
                preds.append({"image_id": im["id"], "category_id": cat, "bbox": jitter,
                              "score": float(rng.uniform(0.05, 1))})  # fmt: skip
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 100, size=2)
            cat = cats[rng.integers(0, n_classes)]["id"]
            preds.append({"image_id": im["id"], "category_id": cat,
                          "bbox": [float(x), float(y), 20.0, 20.0],
                          "score": float(rng.uniform(0.05, 1))})  # fmt: skip
    return {"images": images, "annotations": anns, "categories": cats}, preds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unit_weights_give_the_range_ap(seed):
    gt, preds = _random_set(seed)
    expected = evaluate_coco_range(coco_from_dict(gt), preds, IOUS)["mAP"]
    m = image_matches(coco_from_dict(gt), preds, IOUS)
    assert weighted_map(m, np.ones(len(gt["images"]))) == pytest.approx(expected, abs=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_integer_weights_equal_evaluating_the_resampled_copies(seed):
    gt, preds = _random_set(seed)
    m = image_matches(coco_from_dict(gt), preds, IOUS)
    ids = [im["id"] for im in gt["images"]]
    rng = np.random.default_rng(100 + seed)
    for _ in range(3):
        drawn = rng.integers(0, len(ids), size=len(ids))
        g, p = resample_coco(gt, preds, [ids[i] for i in drawn])
        expected = evaluate_coco_range(coco_from_dict(g), p, IOUS)["mAP"]
        got = weighted_map(m, np.bincount(drawn, minlength=len(ids)))
        assert got == pytest.approx(expected, abs=1e-8)


def test_a_class_whose_ground_truth_is_not_drawn_is_left_out():
    gt, preds = _random_set(0, n_images=4, n_classes=2)
    gt["annotations"] = [
        dict(a, category_id=7 if i == 0 else 3) for i, a in enumerate(gt["annotations"])
    ]
    only = gt["annotations"][0]["image_id"]
    m = image_matches(coco_from_dict(gt), preds, IOUS)
    weights = np.array([0.0 if im["id"] == only else 1.0 for im in gt["images"]])
    g = dict(gt, images=[im for im in gt["images"] if im["id"] != only],
             annotations=[a for a in gt["annotations"] if a["image_id"] != only])  # fmt: skip
    p = [x for x in preds if x["image_id"] != only]
    expected = evaluate_coco_range(coco_from_dict(g), p, IOUS)
    assert np.isnan(expected["per_class"]["c1"])  # the reference leaves class c1 out too
    assert weighted_map(m, weights) == pytest.approx(expected["mAP"], abs=1e-8)


def test_no_detections_score_zero_and_bad_weights_are_refused():
    gt, _ = _random_set(1)
    m = image_matches(coco_from_dict(gt), [], IOUS)
    assert weighted_map(m, np.ones(len(gt["images"]))) == 0.0
    with pytest.raises(ValueError, match="expected"):
        weighted_map(m, np.ones(3))
