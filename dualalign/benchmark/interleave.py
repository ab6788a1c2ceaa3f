"""Speed ratios that hold on a noisy machine: interleaved repeats and per-round ratios.

Timing method A for a while and then method B lets any drift of the machine (another process,
clock scaling, thermal state) land on one side of the ratio. Here the timed calls are
interleaved (a b c a b c ..., the order rotated each cycle so that no method always follows
the same one), grouped into rounds, and a ratio is taken within each round; the reported
figure is the median of the per-round ratios, with its spread.
"""

import statistics
from typing import Callable, Dict, List, Sequence

__all__ = ["interleaved_times", "ratio_summary", "round_medians"]


def interleaved_times(
    calls: Dict[str, Callable[[], float]], rounds: int, repeats: int = 1
) -> Dict[str, List[List[float]]]:
    """Call every ``calls[name]()`` ``repeats`` times per round, interleaved, for ``rounds`` rounds.

    Args:
        calls: name -> a callable that runs one timed unit and returns its seconds.
        rounds: number of rounds.
        repeats: cycles per round; a cycle calls every name once.

    Returns:
        ``times[name][r]``: the ``repeats`` seconds of ``name`` in round ``r``.
    """
    names = list(calls)
    times = {name: [[] for _ in range(rounds)] for name in names}
    cycle = 0
    for r in range(rounds):
        for _ in range(repeats):
            shift = cycle % len(names)
            for name in names[shift:] + names[:shift]:
                times[name][r].append(calls[name]())
            cycle += 1
    return times


def round_medians(times: Dict[str, List[List[float]]]) -> Dict[str, List[float]]:
    """``{name: [median seconds of each round]}`` of :func:`interleaved_times`' output."""
    return {name: [statistics.median(t) for t in per_round] for name, per_round in times.items()}


def ratio_summary(numerator: Sequence[float], denominator: Sequence[float]) -> Dict[str, float]:
    """Median and spread of the per-round ratios ``numerator[r] / denominator[r]``.

    Returns:
        ``{"median", "q25", "q75", "min", "max", "rounds"}``: the quartiles are those of
        ``statistics.quantiles`` (exclusive method); with one round they equal the median.
    """
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(
            f"per-round ratios need as many rounds on each side, got {len(numerator)} and "
            f"{len(denominator)}"
        )
    ratios = [n / d for n, d in zip(numerator, denominator)]
    median = statistics.median(ratios)
    q25, _, q75 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (median,) * 3
    return {
        "median": median,
        "q25": q25,
        "q75": q75,
        "min": min(ratios),
        "max": max(ratios),
        "rounds": len(ratios),
    }
