"""Paired differences against a reference arm, with 95 % intervals (pure functions).

A claim about a method is the difference of its mAP from the reference arm's (supervised
training) on the same pair, i.e. the same labelled split, data order and seed, over enough pairs
that the interval is narrower than the effect. Two intervals:

* :func:`t_interval`: Student's t over the pairs (runs differ by split and data order);
* :func:`cluster_t_interval`: Student's t over clusters of pairs, each cluster the mean of its
  pairs' differences (pairs that continue from one burn-in share it, so they are not
  independent draws: this interval is the honest one when the burn-ins differ more than the
  data orders);
* :func:`bootstrap_mean_delta_interval`: percentile bootstrap over the test images of the mean
  difference over pairs (how much of a difference the test set alone can produce), AP
  recomputed on each draw.

The t quantile is computed here (regularised incomplete beta by continued fraction, inverted by
bisection), so nothing beyond numpy is needed.
"""

import math
from typing import Any, Dict, Hashable, List, Mapping, Sequence, Tuple

import numpy as np

__all__ = [
    "bootstrap_mean_delta_interval",
    "cluster_t_interval",
    "paired_deltas",
    "pairs_needed",
    "student_t_cdf",
    "student_t_quantile",
    "t_interval",
]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        for aa in (even, odd):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(ln_front + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (``student_t_quantile(0.975, 7)`` = 2.3646)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if student_t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def paired_deltas(
    arm: Mapping[Hashable, float], reference: Mapping[Hashable, float]
) -> Dict[Hashable, float]:
    """``{k: arm[k] - reference[k]}`` for every pair key the two share, in sorted key order.

    Args:
        arm, reference: ``{pair key: score}``, e.g. ``{(split_seed, order_seed): mAP}``.

    Raises:
        ValueError: when they share no pair (an unpaired comparison is not a result).
    """
    keys = sorted(set(arm) & set(reference), key=repr)
    if not keys:
        raise ValueError("no common pairs between the arm and the reference")
    return {k: float(arm[k]) - float(reference[k]) for k in keys}


def t_interval(deltas: Sequence[float], level: float = 0.95) -> Dict[str, Any]:
    """Mean of paired differences with its two-sided Student-t interval.

    Returns:
        ``{"mean", "ci95": [lo, hi], "n", "sd"}``; with one pair the interval and sd are None
        (nothing can be said; None keeps the summary valid JSON).
    """
    x = np.asarray(deltas, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        raise ValueError("t_interval needs at least one difference")
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "ci95": [None, None], "n": 1, "sd": None}
    sd = float(x.std(ddof=1))
    half = student_t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n, "sd": sd}


def cluster_t_interval(
    deltas: Mapping[Hashable, float], cluster_of, level: float = 0.95
) -> Dict[str, Any]:
    """:func:`t_interval` over clusters: each cluster's mean difference is one observation.

    Args:
        deltas: ``{pair key: difference}``, e.g. ``{(split_seed, order_seed): delta}``.
        cluster_of: maps a pair key to its cluster, e.g. ``lambda k: k[0]`` (the burn-in).

    Returns:
        :func:`t_interval`'s dict over the cluster means (``n``: clusters), plus ``"pairs"``.
    """
    groups: Dict[Hashable, List[float]] = {}
    for k, d in deltas.items():
        groups.setdefault(cluster_of(k), []).append(float(d))
    means = [sum(v) / len(v) for _, v in sorted(groups.items(), key=lambda kv: repr(kv[0]))]
    return {**t_interval(means, level), "pairs": len(deltas)}


def pairs_needed(sd: float, half_width: float, level: float = 0.95, max_pairs: int = 10000) -> int:
    """The fewest pairs n whose t-interval half-width t_{n-1} * sd / sqrt(n) is at most
    ``half_width``, if the paired differences keep standard deviation ``sd`` (sizing n from a
    pilot's spread). At least 2 (one pair has no interval); ``max_pairs`` caps the search."""
    if sd < 0 or half_width <= 0:
        raise ValueError(f"need sd >= 0 and half_width > 0, got sd={sd}, half_width={half_width}")
    n = 2
    while n < max_pairs:
        if student_t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n) <= half_width:
            break
        n += 1
    return n


def bootstrap_mean_delta_interval(
    gt: Dict[str, Any],
    pairs: Sequence[Tuple[Sequence[Dict[str, Any]], Sequence[Dict[str, Any]]]],
    iou_thresholds: Sequence[float],
    num_samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Dict[str, Any]:
    """Percentile bootstrap over test images of the mean paired difference in mAP.

    Each draw takes the test images with replacement, once for all pairs (they share the test
    set), and recomputes every model's mAP on it through :mod:`dualalign.evaluation.weighted_ap`
    (an image drawn c times weighs c), so the interval is what the test set alone can move the
    mean difference by; the t-interval is what the runs move it by.

    Args:
        gt: a COCO ground-truth dict (``images``, ``annotations``, ``categories``).
        pairs: ``[(predictions_a, predictions_b)]``, COCO result records of the arm and the
            reference on ``gt``, one tuple per pair.
        iou_thresholds: the mAP's IoU grid.
        num_samples: bootstrap draws.
        seed: of the draws.

    Returns:
        ``{"delta": mean difference on the full set, "ci95": [lo, hi], "samples", "pairs"}``.
    """
    from ..evaluation.range_ap import coco_from_dict
    from ..evaluation.weighted_ap import image_matches, weighted_map

    if not pairs:
        raise ValueError("bootstrap_mean_delta_interval needs at least one pair")
    coco = coco_from_dict(gt)
    matches = [
        (image_matches(coco, a, iou_thresholds), image_matches(coco, b, iou_thresholds))
        for a, b in pairs
    ]
    n = len(matches[0][0].image_ids)

    def mean_delta(weights):
        deltas = [weighted_map(a, weights) - weighted_map(b, weights) for a, b in matches]
        return float(np.mean(deltas))

    rng = np.random.default_rng(seed)
    draws = [
        mean_delta(np.bincount(rng.integers(0, n, size=n), minlength=n))
        for _ in range(num_samples)
    ]
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(draws), [alpha, 1.0 - alpha])
    return {
        "delta": mean_delta(np.ones(n)),
        "ci95": [float(lo), float(hi)],
        "samples": int(num_samples),
        "pairs": len(pairs),
    }
