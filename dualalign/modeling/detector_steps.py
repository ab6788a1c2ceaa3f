"""The Faster R-CNN steps that the semi-supervised methods compose, as functions of a model.

One backbone pass over labelled + unlabelled images, the labelled images' supervised losses,
RPN proposals without loss and box-head features and outputs of given boxes. ``DualAlignRCNN``,
``CSDRCNN`` and ``MeanTeacherRCNN`` are built from these, so each method's file holds only its
own step.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.structures import Boxes, ImageList

from .pseudo_rpn import RPNHeadPass

__all__ = [
    "box_head_features",
    "box_head_outputs",
    "joint_backbone",
    "proposals_without_loss",
    "slice_batch",
    "supervised_losses_and_extra_features",
    "top_proposal_boxes",
]


def slice_batch(images: ImageList, features: Dict[str, torch.Tensor], start: int, end: int):
    """Views of images ``[start, end)`` of a padded batch and its feature maps."""
    sub = ImageList(images.tensor[start:end], images.image_sizes[start:end])
    return sub, {k: v[start:end] for k, v in features.items()}


@torch.no_grad()
def proposals_without_loss(
    rpn, images: ImageList, features: Dict[str, torch.Tensor], head: Optional[RPNHeadPass] = None
):
    """RPN proposals for images without ground truth (no RPN loss on unlabelled data).

    The RPN is switched to inference mode for the call, so its test-time top-k applies; the
    ROI heads take only the highest-objectness proposals of each unlabelled image anyway.
    ``head``: the RPN head's pass on ``features`` when the step already has one
    (:func:`~.pseudo_rpn.rpn_head_pass`), decoded instead of running the head again.
    """
    was_training = rpn.training
    rpn.train(False)
    try:
        if head is None:
            proposals, _ = rpn(images, features, None)
        else:
            proposals = rpn.predict_proposals(*head, images.image_sizes)
    finally:
        rpn.train(was_training)
    return proposals


def joint_backbone(model, labeled: List[dict], extra: List[dict]):
    """One backbone pass over the labelled images followed by ``extra`` (same cost as two,
    fewer kernel launches, one set of BN statistics per step).

    Returns:
        (padded ImageList of both, their feature maps dict, the labelled images' GT on device).
    """
    images = model.preprocess_image(list(labeled) + list(extra))
    gt_instances = [x["instances"].to(model.device) for x in labeled]
    return images, model.backbone(images.tensor), gt_instances


def supervised_losses_and_extra_features(model, labeled: List[dict], extra: List[dict]):
    """Faster R-CNN losses of the labelled images, plus features of ``extra`` images.

    The labelled and extra images go through the backbone in one batch (:func:`joint_backbone`).

    Args:
        model: a ``GeneralizedRCNN`` in training mode.
        labeled: input dicts with ``instances``.
        extra: input dicts without annotations (already in the view the caller wants).

    Returns:
        (losses dict, ImageList of the extra images, their feature maps dict).
    """
    images, features, gt_instances = joint_backbone(model, labeled, extra)
    images_l, features_l = slice_batch(images, features, 0, len(labeled))
    images_x, features_x = slice_batch(images, features, len(labeled), len(images))
    proposals, losses = model.proposal_generator(images_l, features_l, gt_instances)
    _, detector_losses = model.roi_heads(images_l, features_l, proposals, gt_instances)
    losses.update(detector_losses)
    return losses, images_x, features_x


def top_proposal_boxes(rpn, images: ImageList, features: Dict[str, torch.Tensor], k: int):
    """The ``k`` highest-objectness RPN boxes of each image, without RPN loss or gradient.

    Returns:
        list[Tensor[n_i, 4]]: XYXY boxes per image, n_i <= k.
    """
    proposals = proposals_without_loss(rpn, images, features)
    return [p.proposal_boxes.tensor[:k] for p in proposals]


def box_head_features(
    roi_heads, features: Dict[str, torch.Tensor], boxes: Sequence[torch.Tensor]
) -> torch.Tensor:
    """H of given boxes: the box head's output, the input of the class and box predictors.

    Args:
        roi_heads: a ``StandardROIHeads`` (its pooler and box head are used; works in train or
            eval mode).
        features: feature maps of exactly ``len(boxes)`` images.
        boxes: XYXY boxes per image.

    Returns:
        Tensor[N, D], rows in image order.
    """
    x = roi_heads.box_pooler(
        [features[f] for f in roi_heads.box_in_features], [Boxes(b) for b in boxes]
    )
    return roi_heads.box_head(x)


def box_head_outputs(
    roi_heads, features: Dict[str, torch.Tensor], boxes: Sequence[torch.Tensor]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class logits and regression deltas of given boxes, one pooler + box-head pass
    (:func:`box_head_features`, then the predictor).

    Returns:
        (Tensor[N, C + 1] logits, Tensor[N, 4C or 4] deltas), rows in image order.
    """
    return roi_heads.box_predictor(box_head_features(roi_heads, features, boxes))
