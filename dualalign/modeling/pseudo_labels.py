"""Pseudo labels for unlabelled proposals and confidence weights for prototypes (Eq. 3, 4)."""

from typing import Tuple

import torch
import torch.nn.functional as F


@torch.no_grad()
def pseudo_label(class_logits: torch.Tensor, score_thresh: float) -> Tuple[torch.Tensor, ...]:
    """Label unlabelled proposals with the box classifier's arg-max foreground class (Eq. 3).

    A proposal keeps its label when the softmax score of that class is strictly greater than
    ``score_thresh`` (0.5 in the paper). Computed without gradient.

    Args:
        class_logits (Tensor[N, C + 1]): box-classifier logits, background last (detectron2).
        score_thresh (float): keep proposals whose max foreground probability exceeds this.

    Returns:
        keep (Tensor[N] bool): proposals that receive a pseudo label.
        labels (Tensor[K] long): pseudo labels in [0, C) of the kept proposals.
        scores (Tensor[K]): their softmax scores q_i, used as prototype weights (Eq. 4).
    """
    probs = F.softmax(class_logits.float(), dim=1)[:, :-1]
    if probs.shape[0] == 0:
        empty = probs.new_zeros((0,), dtype=torch.long)
        return probs.new_zeros((0,), dtype=torch.bool), empty, probs.new_zeros((0,))
    scores, labels = probs.max(dim=1)
    keep = scores > score_thresh
    return keep, labels[keep], scores[keep]


@torch.no_grad()
def gt_class_scores(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Detached softmax score of each labelled proposal's ground-truth class (q_i of Eq. 4).

    Args:
        class_logits (Tensor[N, C + 1]): box-classifier logits.
        labels (Tensor[N] long): ground-truth classes in [0, C].

    Returns:
        Tensor[N]: the probability assigned to the ground-truth class.
    """
    probs = F.softmax(class_logits.float(), dim=1)
    return probs.gather(1, labels[:, None]).squeeze(1)
