"""Slide triage: one number per slide that sorts the slides a reviewer should look at first.

Two rules, chosen on the command line (``predict.py --triage``):

- ``count``: the number of detections of the triage classes with score >= the threshold. With
  the highest-grade classes (e.g. ``--triage-classes HSIL,AGC``) it counts the strongest
  evidence on the slide; it grows with the slide's size and the amount of abnormal tissue.
- ``max``: the highest score among detections of the triage classes (0 when there is none):
  how sure the model is of the single most suspicious cell, whatever the slide's size.
"""

from typing import NamedTuple, Optional, Sequence

import numpy as np

__all__ = ["TRIAGE_MODES", "TriageRule", "describe_triage", "triage_score"]

TRIAGE_MODES = ("count", "max")


class TriageRule(NamedTuple):
    """How a slide's triage score is computed.

    Attributes:
        mode (str): ``"count"`` or ``"max"`` (see the module docstring).
        classes (list[str] or None): the triage classes; None: every class.
        threshold (float): ``count`` counts detections with score >= this; ``max`` ignores it.
    """

    mode: str = "count"
    classes: Optional[Sequence[str]] = None
    threshold: float = 0.5


def triage_score(
    scores: np.ndarray, classes: np.ndarray, class_names: Sequence[str], rule: TriageRule
) -> float:
    """A slide's triage score.

    Args:
        scores (np.ndarray[N]): the slide's detection scores.
        classes (np.ndarray[N]): their 0-based class ids (index ``class_names``).
        class_names (list[str]): names by class id.
        rule (TriageRule): the rule.

    Returns:
        float: the count (a whole number) or the top score.
    """
    if rule.mode not in TRIAGE_MODES:
        raise ValueError(f"triage mode must be one of {TRIAGE_MODES}, got {rule.mode!r}")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    wanted = set(class_names if rule.classes is None else rule.classes)
    ids = [i for i, name in enumerate(class_names) if name in wanted]
    mine = scores[np.isin(classes, ids)]
    if rule.mode == "count":
        return float(np.count_nonzero(mine >= rule.threshold))
    return float(mine.max()) if len(mine) else 0.0


def describe_triage(rule: TriageRule) -> str:
    """The rule in words, for the report's header."""
    which = "all classes" if rule.classes is None else ", ".join(rule.classes)
    if rule.mode == "count":
        return f"number of detections of {which} with score >= {rule.threshold:g}"
    return f"highest detection score among {which}"
