"""``DualAlignRCNN``: GeneralizedRCNN that also takes an unlabelled batch in training."""

from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes

from ..baselines.consistency import flip_boxes, flip_image, image_widths

from .detector_steps import (
    joint_backbone,
    proposals_without_loss,
    slice_batch,
    supervised_losses_and_extra_features,
)
from .dual_alignment import LOSS_NAMES
from .flip_fusion import fuse_two_views
from .pseudo_boxes import box_thresh_from_config, oracle_box_targets, pseudo_box_targets
from .pseudo_rpn import rpn_head_pass, unlabeled_rpn_losses
from .semi_rcnn import SemiSupervisedRCNN
from .strong_view import StrongViewSettings, strong_views


@META_ARCH_REGISTRY.register()
class DualAlignRCNN(SemiSupervisedRCNN):
    """Faster R-CNN whose training step reads a labelled and an unlabelled batch (Eq. 9).

    ``forward(labeled, unlabeled)`` returns the supervised Faster R-CNN losses of the labelled
    images (L_s) and the metric terms of ``DualAlignROIHeads``, unweighted. The trainer scales
    the terms named in ``semi_loss_names`` by :meth:`semi_loss_weight` (lambda(t) of Eq. 9:
    ``DUALALIGN.LOSS_WEIGHT`` and ``DUALALIGN.RAMPUP_ITERS``; opt-in, a ramp-down and a
    supervised-only tail, ``DUALALIGN.RAMPDOWN_ITERS`` and ``DUALALIGN.TAIL_ITERS``). At
    inference (and with no unlabelled batch) it is exactly ``GeneralizedRCNN``.

    The teacher pipeline (opt-in; the paper's configs keep the paper's step):

    * ``DUALALIGN.PSEUDO.SOURCE teacher``: an EMA teacher (``DUALALIGN.TEACHER.*``) labels the
      unlabelled images as the loader gives them (the weak view); its class logits of the
      student's top proposals give the pseudo-labels and their scores q_i.
    * ``DUALALIGN.PSEUDO.BOXES``: instead, the teacher's detections above
      ``DUALALIGN.PSEUDO.BOX_THRESH`` (or, per class, ``BOX_THRESH_PER_CLASS``) are
      pseudo-boxes (:mod:`.pseudo_boxes`) against which the
      ROI heads sample the unlabelled proposals; ``DUALALIGN.PSEUDO.CLS_LOSS`` adds the
      classification loss ``loss_cls_u`` on them (with every metric term off, this is the
      self-training baseline); ``DUALALIGN.PSEUDO.IGNORE_THRESH`` below the box threshold makes
      the detections between the two ignore regions (neither foreground nor background);
      ``DUALALIGN.PSEUDO.FLIP_FUSION``: the teacher labels the weak view and its mirror, fused
      (:mod:`.flip_fusion`); ``DUALALIGN.PSEUDO.SOFT_BACKGROUND``: the unlabelled proposals
      sampled as background take the teacher's class distribution of their box as the target
      of ``loss_cls_u`` (:mod:`.soft_background`); ``DUALALIGN.PSEUDO.RPN_LOSS``: the RPN's
      losses on the unlabelled images against their pseudo-boxes (:mod:`.pseudo_rpn`);
      ``DUALALIGN.PSEUDO.BOX_REG_LOSS``: the ROI heads' box regression ``loss_box_reg_u`` on the
      unlabelled proposals matched to a pseudo-box.
    * ``DUALALIGN.STRONG_AUG.ENABLED``: the student sees a strong view of the unlabelled images
      (:mod:`.strong_view`; the geometry is unchanged, so the teacher's boxes apply as they are).
    """

    semi_loss_names = LOSS_NAMES + (
        "loss_cls_u", "loss_box_reg_u", "loss_rpn_cls_u", "loss_rpn_loc_u"
    )  # fmt: skip

    @configurable
    def __init__(
        self,
        *args,
        pseudo_boxes: bool = False,
        box_thresh: Union[float, Sequence[float]] = 0.7,
        ignore_thresh: float = 1.0,
        flip_fusion: bool = False,
        strong_view: Optional[StrongViewSettings] = None,
        oracle_pseudo_boxes: bool = False,
        oracle_recall: float = 1.0,
        rpn_loss: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.pseudo_boxes = pseudo_boxes
        self.box_thresh = box_thresh
        self.ignore_thresh = ignore_thresh
        self.flip_fusion = flip_fusion
        self.strong_view = strong_view
        self.oracle_pseudo_boxes = oracle_pseudo_boxes
        self.oracle_recall = oracle_recall
        self.rpn_loss = rpn_loss

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        d = cfg.DUALALIGN
        ret.update(
            weight=d.LOSS_WEIGHT,
            rampup_iters=d.RAMPUP_ITERS,
            rampdown_iters=d.RAMPDOWN_ITERS,
            tail_iters=d.TAIL_ITERS,
            use_teacher=d.PSEUDO.SOURCE == "teacher",
            pseudo_boxes=d.PSEUDO.BOXES,
            box_thresh=box_thresh_from_config(d.PSEUDO),
            ignore_thresh=d.PSEUDO.IGNORE_THRESH,
            flip_fusion=d.PSEUDO.FLIP_FUSION,
            strong_view=StrongViewSettings.from_config(cfg) if d.STRONG_AUG.ENABLED else None,
            oracle_pseudo_boxes=d.DIAGNOSTICS.ORACLE_PSEUDO_BOXES,
            oracle_recall=d.DIAGNOSTICS.ORACLE_RECALL,
            rpn_loss=d.PSEUDO.RPN_LOSS,
        )
        return ret

    def semi_forward(self, labeled: List[dict], unlabeled: List[dict]):
        if not self.roi_heads.uses_unlabeled and not self.rpn_loss:
            # No term reads unlabelled proposals: that half only goes through the backbone.
            losses, _, _ = supervised_losses_and_extra_features(self, labeled, unlabeled)
            return losses
        n = len(labeled)
        student_view = strong_views(unlabeled, self.strong_view) if self.strong_view else unlabeled
        images, features, gt_instances = joint_backbone(self, labeled, student_view)
        images_l, features_l = slice_batch(images, features, 0, n)
        images_u, features_u = slice_batch(images, features, n, len(images))
        rpn = self.proposal_generator
        proposals_l, losses = rpn(images_l, features_l, gt_instances)
        roi_u = self.roi_heads.uses_unlabeled  # else only the RPN reads the unlabelled half
        # one RPN head pass on the unlabelled maps, for their proposals and their RPN losses
        head_u = rpn_head_pass(rpn, features_u) if self.rpn_loss else None
        proposals_u = proposals_without_loss(rpn, images_u, features_u, head_u) if roi_u else None
        teacher = self.teacher is not None
        pseudo = self._teacher_pseudo_labels(unlabeled, proposals_u) if teacher else {}
        if roi_u:
            _, detector_losses = self.roi_heads(
                images, features, proposals_l, gt_instances, unlabeled_proposals=proposals_u,
                **pseudo,
            )  # fmt: skip
        else:
            _, detector_losses = self.roi_heads(images_l, features_l, proposals_l, gt_instances)
        losses.update(detector_losses)
        if self.rpn_loss:  # after the ROI heads: their sampling draws the same random numbers
            targets_u = pseudo["unlabeled_targets"]
            losses.update(unlabeled_rpn_losses(rpn, head_u, targets_u))
        return losses

    def _teacher_pseudo_labels(self, unlabeled: List[dict], proposals_u) -> dict:
        """The teacher's pseudo-labels of the weak view, as keyword arguments of the ROI heads:
        pseudo-boxes (with ``DUALALIGN.PSEUDO.SOFT_BACKGROUND``, also the teacher's class
        probabilities of given boxes, from the same backbone pass), or its class logits of the
        student's top proposals."""
        if self.pseudo_boxes:
            soft = self.roi_heads.soft_background
            # the teacher's backbone pass: for its detections and / or the soft targets
            view = self.teacher_view(unlabeled) if soft or not self.oracle_pseudo_boxes else None
            if self.oracle_pseudo_boxes:  # the diagnostic: the images' truth, not the teacher
                targets = oracle_box_targets(unlabeled, self.device, self.oracle_recall)
            else:
                _, detections = self.pseudo_label_detections(unlabeled, view)
                targets = pseudo_box_targets(detections, self.box_thresh, self.ignore_thresh)
            out = {"unlabeled_targets": targets}
            if soft:
                features_w = view[1]
                out["unlabeled_teacher_probs"] = lambda boxes: F.softmax(
                    self.teacher_box_logits(features_w, boxes), dim=1
                )
            return out
        k = self.roi_heads.unlabeled_proposals_per_image
        boxes = [p.proposal_boxes.tensor[:k] for p in proposals_u]
        images_w = self.preprocess_image(unlabeled)
        return {"unlabeled_logits": self.teacher_logits(images_w, boxes)}

    @torch.no_grad()
    def pseudo_label_detections(self, batched_inputs: List[dict], view=None):
        """The teacher's detections of the weak view, or with ``flip_fusion`` those of the view
        and of its mirror (mapped back), fused (:func:`~.flip_fusion.fuse_two_views`)."""
        images, detections = super().pseudo_label_detections(batched_inputs, view)
        if not self.flip_fusion:
            return images, detections
        mirrored = self.preprocess_image([flip_image(x) for x in batched_inputs])
        fused = []
        for det, det_m, width in zip(
            detections, self.teacher_detections(mirrored), image_widths(mirrored)
        ):
            det_m.pred_boxes = Boxes(flip_boxes(det_m.pred_boxes.tensor, width))
            fused.append(fuse_two_views(det, det_m))
        return images, fused

    def after_step(self):
        """Post-optimizer-step update: push this step's labelled prototypes into the bank."""
        super().after_step()
        self.roi_heads.push_prototypes()

    def step_statistics(self):
        """Pseudo-label and memory-bank statistics of the step, logged by the trainer."""
        return self.roi_heads.step_statistics()
