"""Paired differences and their intervals (dualalign/benchmark/paired.py) against known values."""

import math

import pytest

from dualalign.benchmark.paired import (
    bootstrap_mean_delta_interval,
    cluster_t_interval,
    paired_deltas,
    pairs_needed,
    student_t_cdf,
    student_t_quantile,
    t_interval,
)
from dualalign.evaluation.range_ap import coco_from_dict, evaluate_coco_range


@pytest.mark.parametrize(
    "df, q975", [(1, 12.7062), (2, 4.3027), (7, 2.3646), (30, 2.0423), (1000, 1.9623)]
)
def test_student_t_quantile_matches_tables(df, q975):
    assert student_t_quantile(0.975, df) == pytest.approx(q975, abs=1e-4)
    assert student_t_quantile(0.025, df) == pytest.approx(-q975, abs=1e-4)
    assert student_t_cdf(q975, df) == pytest.approx(0.975, abs=1e-5)
    assert student_t_cdf(0.0, df) == pytest.approx(0.5)


def test_t_interval_of_known_differences():
    out = t_interval([1.0, 2.0, 3.0])
    half = 4.30265 / math.sqrt(3)  # sd 1, t(0.975, 2)
    assert out["mean"] == 2.0 and out["n"] == 3 and out["sd"] == pytest.approx(1.0)
    assert out["ci95"] == pytest.approx([2.0 - half, 2.0 + half], abs=1e-4)
    assert t_interval([0.5])["ci95"] == [None, None]  # one pair says nothing


def test_cluster_t_interval_counts_each_burn_in_once():
    # split 0: three pairs at +1, split 1: one pair at +3, split 2: one at +2 -> means 1, 3, 2
    deltas = {(0, 0): 1.0, (0, 1): 0.5, (0, 2): 1.5, (1, 0): 3.0, (2, 0): 2.0}
    out = cluster_t_interval(deltas, lambda k: k[0])
    assert out["n"] == 3 and out["pairs"] == 5
    assert out["ci95"] == pytest.approx(t_interval([1.0, 3.0, 2.0])["ci95"])
    # wider than the pairs' own interval, which counts split 0 three times
    lo, hi = out["ci95"]
    plo, phi = t_interval(list(deltas.values()))["ci95"]
    assert hi - lo > phi - plo
    assert cluster_t_interval({(0, 0): 1.0, (0, 1): 2.0}, lambda k: k[0])["ci95"] == [None, None]


def test_paired_deltas_use_common_pairs_only():
    arm = {(0, 0): 41.0, (0, 1): 43.0, (1, 0): 40.0}
    ref = {(0, 0): 40.0, (0, 1): 40.5, (2, 0): 10.0}
    assert paired_deltas(arm, ref) == {(0, 0): 1.0, (0, 1): 2.5}
    with pytest.raises(ValueError, match="no common pairs"):
        paired_deltas({(5, 5): 1.0}, ref)


def _tiny_gt():
    images = [{"id": i, "width": 64, "height": 64} for i in (10, 20, 30)]
    box = {"category_id": 1, "bbox": [8, 8, 20, 20], "area": 400.0, "iscrowd": 0}
    anns = [dict(box, id=k + 1, image_id=i) for k, i in enumerate((10, 20, 30))]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "c"}]}


def test_bootstrap_interval_of_a_perfect_against_a_partial_model():
    gt = _tiny_gt()
    perfect = [
        {"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
    ]
    half = perfect[:1]  # finds the cell of image 10 only
    score_half = evaluate_coco_range(coco_from_dict(gt), half, [0.5])["mAP"]

    same = bootstrap_mean_delta_interval(gt, [(perfect, perfect)], [0.5], num_samples=20)
    assert same["delta"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["pairs"] == 1
    out = bootstrap_mean_delta_interval(gt, [(perfect, half)], [0.5], num_samples=50, seed=1)
    assert out["delta"] == pytest.approx(100.0 - score_half)
    lo, hi = out["ci95"]
    assert 0.0 <= lo <= out["delta"] <= hi <= 100.0 and lo < hi
    again = bootstrap_mean_delta_interval(gt, [(perfect, half)], [0.5], num_samples=50, seed=1)
    assert again == out  # the seed fixes the draws
    two = bootstrap_mean_delta_interval(
        gt, [(perfect, half), (perfect, perfect)], [0.5], num_samples=50, seed=1
    )
    assert two["pairs"] == 2 and two["delta"] == pytest.approx(out["delta"] / 2)
    assert two["ci95"] == pytest.approx([lo / 2, hi / 2])  # one draw serves every pair
    with pytest.raises(ValueError, match="at least one pair"):
        bootstrap_mean_delta_interval(gt, [], [0.5])


def test_pairs_needed_inverts_the_t_interval():
    # sd 1: t(0.975, 6) / sqrt(7) = 0.925 > 0.9 >= t(0.975, 7) / sqrt(8) = 0.836
    assert pairs_needed(1.0, 0.9) == 8
    assert pairs_needed(0.0, 1.5) == 2  # no spread: the smallest n with an interval
    n = pairs_needed(2.3, 1.5)
    half = lambda k: student_t_quantile(0.975, k - 1) * 2.3 / math.sqrt(k)  # noqa: E731
    assert half(n) <= 1.5 < half(n - 1)
    with pytest.raises(ValueError):
        pairs_needed(1.0, 0.0)
