"""``DualAlignRCNN``: GeneralizedRCNN that also takes an unlabelled batch in training."""

from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import ImageList

from .dual_alignment import LOSS_NAMES
from .rampup import sigmoid_rampup


def slice_batch(images: ImageList, features: Dict[str, torch.Tensor], start: int, end: int):
    """Views of images ``[start, end)`` of a padded batch and its feature maps."""
    sub = ImageList(images.tensor[start:end], images.image_sizes[start:end])
    return sub, {k: v[start:end] for k, v in features.items()}


@torch.no_grad()
def proposals_without_loss(rpn, images: ImageList, features: Dict[str, torch.Tensor]):
    """RPN proposals for images without ground truth (no RPN loss on unlabelled data).

    The RPN is switched to inference mode for the call, so its test-time top-k applies; the
    ROI heads take only the highest-objectness proposals of each unlabelled image anyway.
    """
    was_training = rpn.training
    rpn.train(False)
    try:
        proposals, _ = rpn(images, features, None)
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

    The labelled and extra images go through the backbone in one batch (the same cost as two
    passes, fewer launches, one set of BN statistics per step). Used by ``DualAlignRCNN`` when no
    term reads unlabelled proposals, and by the CSD and Mean Teacher baselines.

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


@META_ARCH_REGISTRY.register()
class DualAlignRCNN(GeneralizedRCNN):
    """Faster R-CNN whose training step reads a labelled and an unlabelled batch (Eq. 9).

    ``forward(labeled, unlabeled)`` returns the supervised Faster R-CNN losses of the labelled
    images (L_s) and the metric terms of ``DualAlignROIHeads``, unweighted. The trainer scales
    the terms named in ``semi_loss_names`` by :meth:`semi_loss_weight`. At inference (and with
    no unlabelled batch) it is exactly ``GeneralizedRCNN``.
    """

    semi_loss_names = LOSS_NAMES

    @configurable
    def __init__(self, *args, rampup_iters: int = 0, loss_weight: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.rampup_iters = rampup_iters
        self.loss_weight = loss_weight

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["rampup_iters"] = cfg.DUALALIGN.RAMPUP_ITERS
        ret["loss_weight"] = cfg.DUALALIGN.LOSS_WEIGHT
        return ret

    def semi_loss_weight(self, iteration: int) -> float:
        """lambda(t) of Eq. 9 (sigmoid ramp-up)."""
        return sigmoid_rampup(iteration, self.rampup_iters, self.loss_weight)

    def forward(self, batched_inputs: List[dict], unlabeled_inputs: Optional[List[dict]] = None):
        if not self.training:
            return self.inference(batched_inputs)
        if not unlabeled_inputs:
            return super().forward(batched_inputs)
        if not self.roi_heads.uses_unlabeled:
            # No term reads unlabelled proposals: that half only goes through the backbone.
            losses, _, _ = supervised_losses_and_extra_features(
                self, batched_inputs, unlabeled_inputs
            )
            return losses
        n = len(batched_inputs)
        images, features, gt_instances = joint_backbone(self, batched_inputs, unlabeled_inputs)
        images_l, features_l = slice_batch(images, features, 0, n)
        images_u, features_u = slice_batch(images, features, n, len(images))
        proposals_l, losses = self.proposal_generator(images_l, features_l, gt_instances)
        proposals_u = proposals_without_loss(self.proposal_generator, images_u, features_u)
        _, detector_losses = self.roi_heads(
            images, features, proposals_l, gt_instances, unlabeled_proposals=proposals_u
        )
        losses.update(detector_losses)
        return losses

    def after_step(self):
        """Post-optimizer-step update: push this step's labelled prototypes into the bank."""
        self.roi_heads.push_prototypes()

    def step_statistics(self):
        """Pseudo-label and memory-bank statistics of the step, logged by the trainer."""
        return self.roi_heads.step_statistics()
