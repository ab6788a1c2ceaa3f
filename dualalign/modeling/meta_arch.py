"""``DualAlignRCNN``: GeneralizedRCNN that also takes an unlabelled batch in training."""

from typing import List

from detectron2.modeling import META_ARCH_REGISTRY

from .detector_steps import (
    joint_backbone,
    proposals_without_loss,
    slice_batch,
    supervised_losses_and_extra_features,
)
from .dual_alignment import LOSS_NAMES
from .semi_rcnn import SemiSupervisedRCNN


@META_ARCH_REGISTRY.register()
class DualAlignRCNN(SemiSupervisedRCNN):
    """Faster R-CNN whose training step reads a labelled and an unlabelled batch (Eq. 9).

    ``forward(labeled, unlabeled)`` returns the supervised Faster R-CNN losses of the labelled
    images (L_s) and the metric terms of ``DualAlignROIHeads``, unweighted. The trainer scales
    the terms named in ``semi_loss_names`` by :meth:`semi_loss_weight` (lambda(t) of Eq. 9:
    ``DUALALIGN.LOSS_WEIGHT`` and ``DUALALIGN.RAMPUP_ITERS``). At inference (and with no
    unlabelled batch) it is exactly ``GeneralizedRCNN``.
    """

    semi_loss_names = LOSS_NAMES

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(weight=cfg.DUALALIGN.LOSS_WEIGHT, rampup_iters=cfg.DUALALIGN.RAMPUP_ITERS)
        return ret

    def semi_forward(self, labeled: List[dict], unlabeled: List[dict]):
        if not self.roi_heads.uses_unlabeled:
            # No term reads unlabelled proposals: that half only goes through the backbone.
            losses, _, _ = supervised_losses_and_extra_features(self, labeled, unlabeled)
            return losses
        n = len(labeled)
        images, features, gt_instances = joint_backbone(self, labeled, unlabeled)
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
        super().after_step()
        self.roi_heads.push_prototypes()

    def step_statistics(self):
        """Pseudo-label and memory-bank statistics of the step, logged by the trainer."""
        return self.roi_heads.step_statistics()
