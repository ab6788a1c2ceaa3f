"""``CSDRCNN``: Consistency-based Semi-supervised Detection on Faster R-CNN (Table 2's "CSD").

Jeong, Lee, Kim and Kwak, "Consistency-based Semi-supervised Learning for Object Detection",
NeurIPS 2019, two-stage variant, checked against the authors' code (soo89/CSD-RFCN,
``lib/model/rfcn/rfcn_consistency.py`` and ``train_csd.py``; soo89/CSD-SSD ``train_csd.py``).

What follows the authors:

* the flipped image x' goes through the backbone; the RPN runs on x only and its proposals are
  mirrored for x' (the code's ``consistency_rois_flip``), so both views score the same regions;
* classification consistency is a Jensen-Shannon divergence of the two softmax distributions
  (C + 1 classes), localisation consistency the mean squared difference of the deltas with dx
  negated for x', over every class's deltas as in the R-FCN code; the two terms are summed
  with equal weight (``consistency_cls + consistency_loc``);
* background elimination uses x's class probabilities, detached;
* the weight is a Gaussian ramp-up ``exp(-5 (1 - t/T_up)^2)`` times a Gaussian ramp-down
  ``exp(-12.5 (1 - (T - t)/T_down)^2)`` over the last ``T_down`` iterations (``rampweight``).

Where we differ (each a config-level or documented choice):

* the classification term is the true JSD the paper names; the code computes the symmetric
  KL ``(KL(p'|p) + KL(p|p'))/2`` with each target detached and ``+1e-7``;
* background elimination keeps a proposal when its best foreground probability exceeds
  ``DUALALIGN.CSD.BG_THRESH`` (0.5); the code keeps it when the best foreground probability
  exceeds the background probability. Identical for one class at 0.5; stricter for C > 1;
* consistency is applied to the unlabelled images only (the code also applies it to the
  labelled half of its batch), using the ``DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE`` top RPN
  proposals per image, the same number the dual-alignment model scores;
* the code's weight is exactly 0 at iteration 0; ours is ``WEIGHT * exp(-5)`` there;
* opt-in, not in the code: ``DUALALIGN.CSD.TAIL_ITERS`` ends the ramp-down that many iterations
  before ``SOLVER.MAX_ITER`` (T above becomes MAX_ITER - TAIL_ITERS) and holds the weight at
  its floor ``WEIGHT * exp(-12.5)`` after it, a supervised-only tail (0, the default, is the
  code's schedule).

At inference the model is exactly ``GeneralizedRCNN``.
"""

from typing import List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage

from ..modeling.detector_steps import (
    box_head_outputs,
    slice_batch,
    supervised_losses_and_extra_features,
    top_proposal_boxes,
)
from ..modeling.semi_rcnn import SemiSupervisedRCNN
from .consistency import csd_losses, flip_image, foreground_mask, image_widths, mirror

__all__ = ["CSDRCNN"]


@META_ARCH_REGISTRY.register()
class CSDRCNN(SemiSupervisedRCNN):
    """Faster R-CNN trained with CSD's flip consistency on the unlabelled batch.

    ``forward(labeled, unlabeled)`` returns the supervised losses of the labelled images and
    the unweighted ``loss_csd_cls`` / ``loss_csd_loc``; the trainer scales those two by
    :meth:`semi_loss_weight`.
    """

    semi_loss_names = ("loss_csd_cls", "loss_csd_loc")

    @configurable
    def __init__(self, *args, bg_thresh=0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.bg_thresh = bg_thresh

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        c = cfg.DUALALIGN.CSD
        ret.update(
            weight=c.WEIGHT,
            rampup_iters=c.RAMPUP_ITERS,
            rampdown_iters=c.RAMPDOWN_ITERS,
            tail_iters=c.TAIL_ITERS,
            bg_thresh=c.BG_THRESH,
        )
        return ret

    def semi_forward(self, labeled: List[dict], unlabeled: List[dict]):
        n = len(unlabeled)
        views = list(unlabeled) + [flip_image(x) for x in unlabeled]
        losses, images_v, features_v = supervised_losses_and_extra_features(self, labeled, views)
        images_x, features_x = slice_batch(images_v, features_v, 0, n)
        boxes = top_proposal_boxes(
            self.proposal_generator, images_x, features_x, self.proposals_per_image
        )
        boxes_flip = mirror(boxes, image_widths(images_x), [True] * n)
        # x and x' rows in one box-head pass, each pooled from its own view's feature maps.
        logits, deltas = box_head_outputs(self.roi_heads, features_v, boxes + boxes_flip)
        m = sum(len(b) for b in boxes)
        losses.update(csd_losses(logits[:m], logits[m:], deltas[:m], deltas[m:], self.bg_thresh))
        self._log_kept(logits[:m])
        return losses

    def _log_kept(self, logits: torch.Tensor):
        try:
            storage = get_event_storage()
        except AssertionError:  # outside a trainer (tests, scripts)
            return
        kept = foreground_mask(logits, self.bg_thresh).float()
        frac = kept.mean() if len(kept) else kept.new_zeros(())
        storage.put_scalar("csd/kept_fraction", float(frac), smoothing_hint=False)
