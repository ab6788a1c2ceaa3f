"""Soft background targets: the teacher's class distribution on the unlabelled background rows.

With ``DUALALIGN.PSEUDO.SOFT_BACKGROUND`` the classification loss on the unlabelled proposals
(``loss_cls_u``, ``DUALALIGN.PSEUDO.CLS_LOSS``) keeps the hard class of a proposal matched to a
pseudo-box (a detection the teacher scored above ``BOX_THRESH``), and gives every proposal
sampled as background the teacher's softmax over the C classes and background of that same box
as its target, instead of hard background.

Why: at the box threshold the self-training search chose (0.9) the pseudo-boxes hold about half
of the objects (docs/RESULTS.md). A proposal on an object the teacher is unsure of is then
background to the student (a wrong label) or, inside an ignore region, not trained at all. With
the teacher's distribution as target it is trained towards what the teacher believes: mostly
background where the teacher sees nothing, partly the object's class where it is unsure. It is
the soft-label distillation of Humble Teacher (Tang et al., CVPR 2021) restricted to the rows a
hard threshold gets wrong; Soft Teacher (Xu et al., ICCV 2021) instead weights those rows'
background loss by the teacher's background score.

Loss (cross-entropy against a distribution, mean over the sampled rows like the supervised
``loss_cls``)::

    L_cls_u = -1/N sum_i sum_k t_ik log softmax(z_i)_k,
    t_i = onehot(y_i) (foreground rows),  t_i = softmax(z_i^teacher) (background rows).
"""

import torch
import torch.nn.functional as F

from ..utils.graph import zero_with_graph

__all__ = ["soft_background_targets", "soft_cross_entropy"]


def soft_background_targets(
    gt_classes: torch.Tensor, background_probs: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Per-row target distributions over ``num_classes + 1`` classes (background last).

    Args:
        gt_classes: int64 [N], the sampled rows' classes in [0, C] (C = background).
        background_probs: [N_bg, C + 1], the teacher's softmax of the background rows' boxes,
            in row order (N_bg = number of rows of class C).
        num_classes: C.

    Returns:
        [N, C + 1]: one-hot of the class for foreground rows, the teacher's softmax for
        background rows.
    """
    bg = gt_classes == num_classes
    assert background_probs.shape == (int(bg.sum()), num_classes + 1), background_probs.shape
    targets = F.one_hot(gt_classes, num_classes + 1).to(background_probs.dtype)
    targets[bg] = background_probs
    return targets


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_k targets_k log softmax(logits)_k`` (0 with the graph kept when
    there is no row). Equal to ``F.cross_entropy`` when ``targets`` are one-hot."""
    if len(logits) == 0:
        return zero_with_graph(logits)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
