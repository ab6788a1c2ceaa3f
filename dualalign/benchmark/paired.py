"""Paired differences against a reference arm, with 95 % intervals (pure functions).

A claim about a method is the difference of its mAP from the reference arm's (supervised
training) on the same pair, i.e. the same labelled split, data order and seed, over enough pairs
that the interval is narrower than the effect. Two intervals:

* :func:`t_interval`: Student's t over the pairs (runs differ by split and data order);
* :func:`bootstrap_delta_interval`: percentile bootstrap over the test images of one pair (how
  much of a difference the test set alone can produce), AP recomputed on each resample.

The t quantile is computed here (regularised incomplete beta by continued fraction, inverted by
bisection), so nothing beyond numpy is needed.
"""

import math
from typing import Any, Callable, Dict, Hashable, List, Mapping, Sequence, Tuple

import numpy as np

__all__ = [
    "bootstrap_delta_interval",
    "paired_deltas",
    "resample_coco",
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
) -> List[float]:
    """``arm[k] - reference[k]`` for every pair key the two share, in sorted key order.

    Args:
        arm, reference: ``{pair key: score}``, e.g. ``{(split_seed, order_seed): mAP}``.

    Raises:
        ValueError: when they share no pair (an unpaired comparison is not a result).
    """
    keys = sorted(set(arm) & set(reference), key=repr)
    if not keys:
        raise ValueError("no common pairs between the arm and the reference")
    return [float(arm[k]) - float(reference[k]) for k in keys]


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


def resample_coco(
    gt: Dict[str, Any], predictions: Sequence[Dict[str, Any]], image_ids: Sequence[Any]
) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """A COCO ground truth and predictions over ``image_ids`` drawn with replacement.

    The j-th drawn image becomes image ``j + 1`` (its annotations and predictions copied), so an
    image drawn twice counts twice, as the bootstrap requires.
    """
    anns_by_image: Dict[Any, list] = {}
    for a in gt["annotations"]:
        anns_by_image.setdefault(a["image_id"], []).append(a)
    preds_by_image: Dict[Any, list] = {}
    for p in predictions:
        preds_by_image.setdefault(p["image_id"], []).append(p)
    images = {im["id"]: im for im in gt["images"]}
    out_images, out_anns, out_preds = [], [], []
    for j, old in enumerate(image_ids):
        new = j + 1
        out_images.append(dict(images[old], id=new))
        for a in anns_by_image.get(old, []):
            out_anns.append(dict(a, id=len(out_anns) + 1, image_id=new))
        out_preds.extend(dict(p, image_id=new) for p in preds_by_image.get(old, []))
    resampled = dict(gt, images=out_images, annotations=out_anns)
    return resampled, out_preds


def bootstrap_delta_interval(
    gt: Dict[str, Any],
    predictions_a: Sequence[Dict[str, Any]],
    predictions_b: Sequence[Dict[str, Any]],
    score: Callable[[Dict[str, Any], List[Dict[str, Any]]], float],
    num_samples: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> Dict[str, Any]:
    """Percentile bootstrap over test images of ``score(a) - score(b)`` on the same images.

    Args:
        gt: a COCO ground-truth dict (``images``, ``annotations``, ``categories``).
        predictions_a, predictions_b: COCO result records of the two models on ``gt``.
        score: ``score(gt_dict, predictions) -> mAP`` (e.g. :func:`evaluate_coco_range`'s mAP).
        num_samples: bootstrap resamples.
        seed: of the resampling generator (the same draws serve both models: paired).

    Returns:
        ``{"delta": score(a) - score(b) on the full set, "ci95": [lo, hi], "samples": n}``.
    """
    ids = [im["id"] for im in gt["images"]]
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(num_samples):
        draw = [ids[i] for i in rng.integers(0, len(ids), size=len(ids))]
        g, pa = resample_coco(gt, predictions_a, draw)
        _, pb = resample_coco(gt, predictions_b, draw)
        deltas.append(score(g, pa) - score(g, pb))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(deltas), [alpha, 1.0 - alpha])
    full = score(gt, list(predictions_a)) - score(gt, list(predictions_b))
    return {"delta": float(full), "ci95": [float(lo), float(hi)], "samples": num_samples}
