"""Assemble the four metric terms of Eq. 9 from embeddings, labels and confidences.

This module only composes the pure functions of :mod:`metric_losses`; the ROI heads
(:mod:`roi_heads`) produce its inputs and own the parameters (projection head, proxies) and the
memory bank.
"""

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from .metric_losses import class_prototypes, prototype_alignment_loss, proxy_loss

LOSS_NAMES = ("loss_pml_l", "loss_pml_u", "loss_pmb_l", "loss_pmb_u")


@dataclass
class MetricBatch:
    """Embeddings of one side (labelled or unlabelled) of a training step.

    Attributes:
        x (Tensor[N, D]): embeddings (Eq. 1) of the foreground proposals.
        y (Tensor[N] long): their classes in [0, C) (ground truth or pseudo label).
        q (Tensor[N]): detached confidence of class y, the weight of P_cg (Eq. 4).
    """

    x: torch.Tensor
    y: torch.Tensor
    q: torch.Tensor


def dual_alignment_losses(
    labeled: MetricBatch,
    unlabeled: Optional[MetricBatch],
    proxies: Callable[[bool], torch.Tensor],
    bank_means: torch.Tensor,
    bank_present: torch.Tensor,
    num_classes: int,
    margin: float,
    switches: Dict[str, bool],
    labeled_background: Optional[MetricBatch] = None,
    proxy_options: Optional[Dict[str, object]] = None,
    unlabeled_background: Optional[MetricBatch] = None,
) -> Dict[str, torch.Tensor]:
    """The bracket of Eq. 9: ``L_pml + L'_pml + L_pmb + L'_pmb``, each term under its own name.

    Args:
        labeled: foreground embeddings of the sampled labelled proposals (GT classes).
        unlabeled: pseudo-labelled embeddings of unlabelled proposals, or None.
        proxies: ``proxies(detach) -> Tensor[C', D]``; detached for the unlabelled term, since
            "we only update the proxies from the labeled data".
        bank_means (Tensor[C, D]) / bank_present (Tensor[C] bool): P_M of the memory bank.
        num_classes: C, the number of foreground classes.
        margin: m of Eq. 6.
        switches: ``{loss_name: enabled}`` for the names in ``LOSS_NAMES``.
        labeled_background: embeddings of labelled background proposals with label C, added to
            the proxy term when a background proxy exists (C == 1 needs one).
        unlabeled_background: background embeddings of unlabelled proposals sampled against
            pseudo-boxes (label C), added to the unlabelled proxy term likewise.
        proxy_options: keyword arguments of :func:`proxy_loss` (temperature, squared,
            include_positive); none is Eq. 2 as printed.

    Returns:
        dict[str, Tensor]: the enabled terms (scalars). Disabled terms are absent.
    """
    losses = {}
    opts = proxy_options or {}
    if switches.get("loss_pml_l", True):
        x, y = labeled.x, labeled.y
        if labeled_background is not None:
            x = torch.cat([x, labeled_background.x])
            y = torch.cat([y, labeled_background.y])
        losses["loss_pml_l"] = proxy_loss(x, y, proxies(False), **opts)  # Eq. 2
    if unlabeled is not None and switches.get("loss_pml_u", True):
        x, y = unlabeled.x, unlabeled.y
        if unlabeled_background is not None:
            x = torch.cat([x, unlabeled_background.x])
            y = torch.cat([y, unlabeled_background.y])
        losses["loss_pml_u"] = proxy_loss(x, y, proxies(True), **opts)  # Eq. 3
    sides = [("loss_pmb_l", labeled), ("loss_pmb_u", unlabeled)]
    for name, side in sides:
        if side is None or not switches.get(name, True):
            continue
        p_cg, present = class_prototypes(side.x, side.y, num_classes, weights=side.q)  # Eq. 4
        losses[name] = prototype_alignment_loss(
            bank_means, bank_present, p_cg, present, margin
        )  # Eq. 7 / Eq. 8
    return losses
