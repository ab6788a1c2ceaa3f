"""Detector steps shared by the baselines: one student pass, proposals, box-head scores, flips."""

from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.structures import Boxes, ImageList

from ..modeling.meta_arch import proposals_without_loss, supervised_losses_and_extra_features
from .consistency import flip_boxes

__all__ = [
    "box_head_outputs",
    "flip_image",
    "image_widths",
    "mirror",
    "supervised_losses_and_extra_features",
    "top_proposal_boxes",
]


def flip_image(inputs: dict) -> dict:
    """A shallow copy of a model input dict whose ``image`` (CHW) is mirrored left-right."""
    return dict(inputs, image=torch.flip(inputs["image"], dims=[-1]))


def image_widths(images: ImageList) -> List[int]:
    """Unpadded widths of the images of a batch (the frame boxes are mirrored in)."""
    return [int(w) for _, w in images.image_sizes]


def top_proposal_boxes(rpn, images: ImageList, features: Dict[str, torch.Tensor], k: int):
    """The ``k`` highest-objectness RPN boxes of each image, without RPN loss or gradient.

    Returns:
        list[Tensor[n_i, 4]]: XYXY boxes per image, n_i <= k.
    """
    proposals = proposals_without_loss(rpn, images, features)
    return [p.proposal_boxes.tensor[:k] for p in proposals]


def mirror(boxes: Sequence[torch.Tensor], widths: Sequence[int], which: Sequence[bool]):
    """Mirror the boxes of the images flagged in ``which`` (others unchanged)."""
    return [flip_boxes(b, w) if f else b for b, w, f in zip(boxes, widths, which)]


def box_head_outputs(
    roi_heads, features: Dict[str, torch.Tensor], boxes: Sequence[torch.Tensor]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class logits and regression deltas of given boxes, one pooler + box-head pass.

    Args:
        roi_heads: a ``StandardROIHeads`` (its pooler, box head and predictor are used; works in
            train or eval mode).
        features: feature maps of exactly ``len(boxes)`` images.
        boxes: XYXY boxes per image.

    Returns:
        (Tensor[N, C + 1] logits, Tensor[N, 4C or 4] deltas), rows in image order.
    """
    x = roi_heads.box_pooler(
        [features[f] for f in roi_heads.box_in_features], [Boxes(b) for b in boxes]
    )
    return roi_heads.box_predictor(roi_heads.box_head(x))
