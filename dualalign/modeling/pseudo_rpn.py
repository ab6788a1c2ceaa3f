"""RPN losses of the unlabelled images against their pseudo-boxes (``DUALALIGN.PSEUDO.RPN_LOSS``).

Without it the unlabelled images train the ROI classifier only (``loss_cls_u``): the RPN's
objectness and box regression learn from the labelled images alone. On the synthetic protocol
the pool's true boxes used as pseudo-boxes with that classifier-only loss recover about half of
what labelling the pool recovers (docs/RESULTS.md, the two oracles), so the other half is in
the terms the unlabelled images do not reach. This adds the RPN's two losses (Unbiased Teacher
keeps objectness only; here both, switched on together), class-agnostic: the confident
pseudo-boxes (class >= 0) are the objects, and an anchor that the RPN's matcher would call
background but that overlaps an ignore region (class -1, ``DUALALIGN.PSEUDO.IGNORE_THRESH``)
by at least the matcher's background threshold is left out of the sample (label -1), so the
objects the teacher is unsure of are neither objects nor background here either.

The losses are detectron2's own (``RPN.losses``: the objectness cross-entropy and the
regression loss of the sampled anchors, normalised by the anchors sampled per image), named
``loss_rpn_cls_u`` and ``loss_rpn_loc_u`` and weighted by lambda(t) like ``loss_cls_u``.
They read the same RPN head pass as the unlabelled images' proposals (:func:`rpn_head_pass`,
run once per step), so the switch adds the head's backward on those maps, not a second forward.
The anchors are labelled by the RPN's own matcher and sampler (:func:`label_and_sample_anchors`,
detectron2's steps) on the IoU of :func:`box_iou.pairwise_iou_blocked`: the same values, at less
cost for the up to 100 pseudo-boxes per image the teacher may give.
"""

from typing import Dict, List, NamedTuple, Tuple

import torch
from detectron2.modeling.proposal_generator import RPN
from detectron2.structures import Boxes, Instances

from .box_iou import pairwise_iou_blocked

__all__ = [
    "RPNHeadPass",
    "ignore_anchors",
    "label_and_sample_anchors",
    "rpn_head_pass",
    "unlabeled_rpn_losses",
]


class RPNHeadPass(NamedTuple):
    """The RPN's anchors and its head's outputs on a batch of feature maps, in the per-level
    shapes ``RPN.forward`` gives ``RPN.losses`` and ``RPN.predict_proposals``."""

    anchors: List[Boxes]
    logits: List[torch.Tensor]  # (N, Hi*Wi*A) per level
    deltas: List[torch.Tensor]  # (N, Hi*Wi*A, box_dim) per level


def rpn_head_pass(rpn: RPN, features: Dict[str, torch.Tensor]) -> RPNHeadPass:
    """One forward of ``rpn``'s anchor generator and head on ``features``, reshaped as in
    ``RPN.forward`` (which has no sub-call that returns them)."""
    feats = [features[f] for f in rpn.in_features]
    logits, deltas = rpn.rpn_head(feats)
    box_dim = rpn.anchor_generator.box_dim
    return RPNHeadPass(
        rpn.anchor_generator(feats),
        [score.permute(0, 2, 3, 1).flatten(1) for score in logits],
        [  # (N, A*B, Hi, Wi) -> (N, Hi, Wi, A, B) -> (N, Hi*Wi*A, B)
            x.view(x.shape[0], -1, box_dim, *x.shape[-2:]).permute(0, 3, 4, 1, 2).flatten(1, -2)
            for x in deltas
        ],
    )


@torch.no_grad()
def label_and_sample_anchors(
    rpn: RPN, anchors: Boxes, gt_instances: List[Instances]
) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """``RPN.label_and_sample_anchors``'s steps (the RPN's matcher, its legacy boundary rule,
    its sampler) on the IoU of :func:`pairwise_iou_blocked`, which equals detectron2's.

    Args:
        rpn: the RPN whose ``anchor_matcher`` and ``_subsample_labels`` are used.
        anchors (Boxes[R]): the anchors of all levels, concatenated.
        gt_instances: per image, the boxes to match (``gt_boxes``) and ``image_size``.

    Returns:
        Per image, the labels (Tensor[R], 1 object, 0 background, -1 not sampled) and the
        matched boxes (Tensor[R, 4], read only where the label is 1).
    """
    labels, matched = [], []
    for gt in gt_instances:
        matched_idxs, labels_i = rpn.anchor_matcher(pairwise_iou_blocked(gt.gt_boxes, anchors))
        if rpn.anchor_boundary_thresh >= 0:
            labels_i[~anchors.inside_box(gt.image_size, rpn.anchor_boundary_thresh)] = -1
        labels.append(rpn._subsample_labels(labels_i))
        matched.append(
            gt.gt_boxes[matched_idxs].tensor if len(gt) else torch.zeros_like(anchors.tensor)
        )
    return labels, matched


@torch.no_grad()
def ignore_anchors(
    labels: torch.Tensor, anchors: Boxes, ignore_boxes: Boxes, background_below: float
) -> torch.Tensor:
    """A copy of one image's anchor labels (1 object, 0 background, -1 not sampled) in which
    the background anchors overlapping an ignore box by IoU >= ``background_below`` are -1."""
    if not len(ignore_boxes):
        return labels
    near = pairwise_iou_blocked(ignore_boxes, anchors).max(dim=0).values >= background_below
    out = labels.clone()
    out[near & (labels == 0)] = -1
    return out


def unlabeled_rpn_losses(
    rpn: RPN, head: RPNHeadPass, targets: List[Instances]
) -> Dict[str, torch.Tensor]:
    """``{"loss_rpn_cls_u", "loss_rpn_loc_u"}`` of the unlabelled images' RPN head pass
    ``head`` (:func:`rpn_head_pass`) against ``targets`` (per image, pseudo-boxes with
    ``gt_boxes`` and ``gt_classes``, -1 marking ignore regions).

    The anchors are matched and sampled by the RPN's own matcher and sampler against the
    confident boxes.
    """
    objects = [t[t.gt_classes >= 0] for t in targets]
    all_anchors = Boxes.cat(head.anchors)
    labels, matched = label_and_sample_anchors(rpn, all_anchors, objects)
    background_below = rpn.anchor_matcher.thresholds[1]
    labels = [
        ignore_anchors(lab, all_anchors, t.gt_boxes[t.gt_classes < 0], background_below)
        for lab, t in zip(labels, targets)
    ]
    losses = rpn.losses(head.anchors, head.logits, labels, head.deltas, matched)
    return {f"{name}_u": value for name, value in losses.items()}
