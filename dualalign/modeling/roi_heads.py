"""``DualAlignROIHeads``: StandardROIHeads plus the metric space of the paper (Eq. 1-8).

In training the labelled sampled proposals and the top unlabelled proposals go through the box
pooler and box head *together* (one pass), so the extra cost of the method is the box head on the
unlabelled rows, a small MLP, a C x D distance matrix and a few prototype means. At inference the
class behaves exactly as ``StandardROIHeads``: the projection head and proxies are not run.
"""

from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.structures import ImageList, Instances

from ..utils.graph import scale_gradient, zero_with_graph
from .dual_alignment import LOSS_NAMES, MetricBatch, dual_alignment_losses
from .memory_bank import PrototypeMemoryBank
from .metric_losses import class_prototypes
from .projection_head import ClassProxies, ProjectionHead
from .pseudo_boxes import detection_thresholds
from .pseudo_labels import gt_class_scores, pseudo_label
from .soft_background import soft_background_targets, soft_cross_entropy

# The teacher's class probabilities [N, C + 1] of given XYXY boxes per unlabelled image.
TeacherProbs = Callable[[List[torch.Tensor]], torch.Tensor]


@ROI_HEADS_REGISTRY.register()
class DualAlignROIHeads(StandardROIHeads):
    """ROI heads that own the projection head, the class proxies and the prototype memory bank.

    Training inputs: ``features`` cover the labelled images first and the unlabelled images
    after them; ``proposals`` are the labelled images' RPN proposals and ``unlabeled_proposals``
    the unlabelled images' ones (sorted by objectness, as the RPN returns them). Where the
    unlabelled pseudo-labels come from:

    * the paper (neither of the two below): the top ``unlabeled_proposals_per_image``
      proposals, labelled by this forward's own classifier (Eq. 3);
    * ``unlabeled_logits`` (``DUALALIGN.PSEUDO.SOURCE teacher``): the same proposals, labelled
      by the teacher's class logits of them;
    * ``unlabeled_targets`` (``DUALALIGN.PSEUDO.BOXES``): pseudo ground-truth boxes
      (:mod:`.pseudo_boxes`); the unlabelled proposals are matched and sampled against them
      like the labelled ones, foreground rows enter the metric terms with the matched box's
      class and score, background rows the background proxy's term when there is one, and with
      ``cls_loss_unlabeled`` the classifier gets ``loss_cls_u`` on every sampled row (with
      ``soft_background``, the background rows' target is ``unlabeled_teacher_probs`` of their
      boxes: the teacher's class distribution), and with ``box_reg_loss_unlabeled`` box
      regression gets ``loss_box_reg_u`` on the foreground rows (towards their pseudo-box).

    ``embed_grad_scale`` scales the metric terms' gradient where it enters the box-head features
    H (the features box regression reads too); 1 is the paper. ``metric_thresh_per_class``
    (pseudo-boxes only) keeps out of the unlabelled metric terms the foreground rows whose
    matched pseudo-box scores at or below its class's value; every other loss still reads them.
    """

    @configurable
    def __init__(
        self,
        *,
        projection_head: ProjectionHead,
        proxies: ClassProxies,
        memory_bank: PrototypeMemoryBank,
        pseudo_score_thresh: float,
        unlabeled_proposals_per_image: int,
        margin: float,
        loss_switches: Dict[str, bool],
        proxy_options: Optional[Dict[str, object]] = None,
        cls_loss_unlabeled: bool = False,
        soft_background: bool = False,
        box_reg_loss_unlabeled: bool = False,
        embed_grad_scale: float = 1.0,
        metric_thresh_per_class: Optional[Sequence[float]] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if self.mask_on or self.keypoint_on:
            raise ValueError("DualAlignROIHeads supports box detection only (MODEL.MASK_ON=False)")
        self.projection_head = projection_head
        self.proxies = proxies
        self.memory_bank = memory_bank
        self.pseudo_score_thresh = pseudo_score_thresh
        self.unlabeled_proposals_per_image = unlabeled_proposals_per_image
        self.margin = margin
        self.loss_switches = loss_switches
        self.proxy_options = dict(proxy_options or {})
        self.cls_loss_unlabeled = cls_loss_unlabeled
        self.soft_background = soft_background
        self.box_reg_loss_unlabeled = box_reg_loss_unlabeled
        self.embed_grad_scale = embed_grad_scale
        self.metric_thresh_per_class = tuple(metric_thresh_per_class or ()) or None
        if not (loss_switches["loss_pml_l"] or loss_switches["loss_pml_u"]):
            # Without proposal alignment nothing reads the proxies: freeze them, so DDP does not
            # wait for their gradient (and the optimizer leaves them untouched).
            self.proxies.requires_grad_(False)
        self.metric_on = any(loss_switches.values())
        if not self.metric_on:
            # No metric term (the null control, self-training): no embedding is computed, and
            # the projection head is frozen for the same reason as the proxies.
            self.projection_head.requires_grad_(False)
        self._step_prototypes = None
        self._step_stats: Dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        d = cfg.DUALALIGN
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        ret["projection_head"] = ProjectionHead(
            in_dim=ret["box_head"].output_shape.channels,
            hidden_dim=d.EMBED.HIDDEN_DIM,
            out_dim=d.EMBED.DIM,
            normalize=d.EMBED.NORMALIZE,
        )
        ret["proxies"] = ClassProxies(
            num_classes,
            d.EMBED.DIM,
            include_background=d.PROXY.INCLUDE_BACKGROUND,
            normalize=d.EMBED.NORMALIZE,
        )
        ret["memory_bank"] = PrototypeMemoryBank(d.MEMORY.SIZE, d.EMBED.DIM, num_classes)
        ret["pseudo_score_thresh"] = d.PSEUDO.SCORE_THRESH
        ret["unlabeled_proposals_per_image"] = d.PSEUDO.PROPOSALS_PER_IMAGE
        ret["margin"] = d.PROTO.MARGIN
        ret["proxy_options"] = {
            "temperature": d.PROXY.TEMPERATURE,
            "squared": d.PROXY.SQUARED_DISTANCE,
            "include_positive": d.PROXY.INCLUDE_POSITIVE,
        }
        ret["cls_loss_unlabeled"] = d.PSEUDO.CLS_LOSS
        ret["soft_background"] = d.PSEUDO.SOFT_BACKGROUND
        ret["box_reg_loss_unlabeled"] = d.PSEUDO.BOX_REG_LOSS
        ret["embed_grad_scale"] = d.EMBED.GRAD_SCALE
        ret["metric_thresh_per_class"] = tuple(d.PSEUDO.METRIC_THRESH_PER_CLASS)
        ret["loss_switches"] = {
            "loss_pml_l": d.LOSS.PML_LABELED,
            "loss_pml_u": d.LOSS.PML_UNLABELED,
            "loss_pmb_l": d.LOSS.PMB_LABELED,
            "loss_pmb_u": d.LOSS.PMB_UNLABELED,
        }
        return ret

    @property
    def uses_unlabeled(self) -> bool:
        """Whether any enabled term reads unlabelled proposals."""
        s = self.loss_switches
        return (
            s["loss_pml_u"] or s["loss_pmb_u"] or self.cls_loss_unlabeled
            or self.box_reg_loss_unlabeled
        )  # fmt: skip

    def embed(self, box_features: torch.Tensor) -> torch.Tensor:
        """x of Eq. 1 from H, the metric gradient into H scaled by ``embed_grad_scale``."""
        return self.projection_head(scale_gradient(box_features, self.embed_grad_scale))

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
        unlabeled_proposals: Optional[List[Instances]] = None,
        unlabeled_targets: Optional[List[Instances]] = None,
        unlabeled_logits: Optional[torch.Tensor] = None,
        unlabeled_teacher_probs: Optional[TeacherProbs] = None,
    ):
        if not self.training:
            return super().forward(images, features, proposals, targets)
        assert targets, "'targets' argument is required during training"
        if not self.uses_unlabeled:
            unlabeled_proposals = None
        n_img = len(proposals)
        if unlabeled_proposals is not None and unlabeled_targets is not None:
            # Pseudo-boxes: both sides matched and sampled in one call (its logged fg / bg
            # counts are then over both).
            sampled = self.label_and_sample_proposals(
                list(proposals) + list(unlabeled_proposals), list(targets) + list(unlabeled_targets)
            )
            proposals, unlabeled_proposals = sampled[:n_img], sampled[n_img:]
        else:
            proposals = self.label_and_sample_proposals(proposals, targets)
            if unlabeled_proposals is not None:
                k = self.unlabeled_proposals_per_image
                unlabeled_proposals = [p[:k] for p in unlabeled_proposals]
        boxes = [p.proposal_boxes for p in proposals]
        if unlabeled_proposals is not None:
            boxes += [p.proposal_boxes for p in unlabeled_proposals]
        box_features = self.box_pooler([features[f] for f in self.box_in_features], boxes)
        box_features = self.box_head(box_features)  # H, the proposal features of Eq. 1
        class_logits, deltas = self.box_predictor(box_features)
        n_l = sum(len(p) for p in proposals)
        losses = self.box_predictor.losses((class_logits[:n_l], deltas[:n_l]), proposals)
        unlabeled = background_u = None
        if unlabeled_proposals is not None:
            h_u, logits_u = box_features[n_l:], class_logits[n_l:]
            if unlabeled_targets is not None:
                unlabeled, background_u = self._pseudo_box_batches(h_u, unlabeled_proposals)
                if self.cls_loss_unlabeled:
                    losses["loss_cls_u"] = self._unlabeled_cls_loss(
                        logits_u, unlabeled_proposals, unlabeled_teacher_probs
                    )
                if self.box_reg_loss_unlabeled:
                    losses["loss_box_reg_u"] = self._unlabeled_box_reg_loss(
                        deltas[n_l:], unlabeled_proposals
                    )
            else:
                source = logits_u.detach() if unlabeled_logits is None else unlabeled_logits
                keep, y_u, q_u = pseudo_label(source, self.pseudo_score_thresh)
                unlabeled = MetricBatch(self.embed(h_u[keep]), y_u, q_u)
        if self.metric_on:
            losses.update(
                self._metric_losses(box_features[:n_l], class_logits[:n_l], proposals,
                                    unlabeled, background_u)
            )  # fmt: skip
        return proposals, losses

    def _unlabeled_cls_loss(
        self,
        logits_u: torch.Tensor,
        sampled: List[Instances],
        teacher_probs: Optional[TeacherProbs],
    ) -> torch.Tensor:
        """``loss_cls_u``: cross-entropy of the unlabelled rows sampled against pseudo-boxes,
        with hard targets, or with ``soft_background`` the teacher's class distribution as the
        target of the background rows (:mod:`.soft_background`)."""
        y = torch.cat([p.gt_classes for p in sampled])
        if not len(y):
            return zero_with_graph(logits_u)
        if not self.soft_background:
            return F.cross_entropy(logits_u, y)
        assert teacher_probs is not None, "soft background targets need the teacher's probabilities"
        bg_boxes = [p.proposal_boxes.tensor[p.gt_classes == self.num_classes] for p in sampled]
        targets = soft_background_targets(y, teacher_probs(bg_boxes), self.num_classes)
        return soft_cross_entropy(logits_u, targets)

    def _unlabeled_box_reg_loss(self, deltas_u: torch.Tensor, sampled: List[Instances]):
        """``loss_box_reg_u``: the box predictor's own regression loss (``box_reg_loss``: the
        foreground rows only, normalised by every sampled row) towards the matched pseudo-boxes;
        as ``losses`` does, an image without pseudo-boxes (background rows only) has its proposals
        stand in for them."""
        gt_boxes = [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes) for p in sampled]
        return self.box_predictor.box_reg_loss(
            torch.cat([p.proposal_boxes.tensor for p in sampled]),
            torch.cat([b.tensor for b in gt_boxes]),
            deltas_u,
            torch.cat([p.gt_classes for p in sampled]),
        )

    def _pseudo_box_batches(self, h_u: torch.Tensor, sampled: List[Instances]):
        """Foreground and background metric batches of unlabelled proposals sampled against
        pseudo-boxes: class and confidence q of a foreground row are its matched box's (with
        ``metric_thresh_per_class``, only rows whose q is above their class's value)."""
        if not self.loss_switches["loss_pml_u"] and not self.loss_switches["loss_pmb_u"]:
            return None, None  # the classification loss alone reads these rows
        y = torch.cat([p.gt_classes for p in sampled])
        q = torch.cat(
            [p.gt_scores if p.has("gt_scores") else h_u.new_zeros(len(p)) for p in sampled]
        )  # an image without pseudo-boxes has background rows only
        fg = y < self.num_classes
        metric = fg.clone()
        if self.metric_thresh_per_class is not None:  # only the more confident pseudo-boxes
            metric[fg] = q[fg] > detection_thresholds(y[fg], self.metric_thresh_per_class)
        unlabeled = MetricBatch(self.embed(h_u[metric]), y[metric], q[metric])
        background = None
        if self.proxies.background_index is not None:
            x_bg = self.embed(h_u[~fg])
            background = MetricBatch(x_bg, y[~fg], x_bg.new_ones(len(x_bg)))
        return unlabeled, background

    def _metric_losses(self, h_l, class_logits_l, proposals, unlabeled, background_u):
        num_classes = self.num_classes
        gt_classes = torch.cat([p.gt_classes for p in proposals])
        fg = (gt_classes >= 0) & (gt_classes < num_classes)
        y_l = gt_classes[fg]
        labeled = MetricBatch(
            self.embed(h_l[fg]), y_l, gt_class_scores(class_logits_l[fg], y_l)
        )
        background = None
        if self.proxies.background_index is not None:
            bg = gt_classes == num_classes
            x_bg = self.embed(h_l[bg])
            background = MetricBatch(x_bg, gt_classes[bg], x_bg.new_ones(len(x_bg)))
        bank_means, bank_present = self.memory_bank.class_means()
        losses = dual_alignment_losses(
            labeled,
            unlabeled,
            self.proxies,
            bank_means,
            bank_present,
            num_classes,
            self.margin,
            self.loss_switches,
            labeled_background=background,
            proxy_options=self.proxy_options,
            unlabeled_background=background_u,
        )
        # P_gg of this step, pushed into the bank by the trainer after the optimizer step.
        p_gg, present = class_prototypes(labeled.x.detach(), y_l, num_classes)
        self._step_prototypes = (p_gg[present], present.nonzero().squeeze(1))
        self._log_pseudo_label_stats(unlabeled)
        return losses

    def _log_pseudo_label_stats(self, unlabeled: Optional[MetricBatch]):
        # Kept as tensors: the trainer copies them to the host with the losses, in one sync.
        if unlabeled is None:
            return
        counts = torch.bincount(unlabeled.y, minlength=self.num_classes).float()
        mean_score = unlabeled.q.mean() if len(unlabeled.q) else unlabeled.q.new_zeros(())
        for c in range(self.num_classes):
            self._step_stats[f"pseudo/count_c{c}"] = counts[c]
        self._step_stats["pseudo/mean_score"] = mean_score

    def step_statistics(self) -> Dict[str, torch.Tensor]:
        """This step's pseudo-label counts / mean score, bank fill per class and bank age (steps
        since its oldest row was pushed), as 0-d tensors."""
        stats, self._step_stats = self._step_stats, {}
        fill = self.memory_bank.fill_per_class()
        stats.update({f"bank/fill_c{c}": fill[c] for c in range(self.num_classes)})
        stats["bank/age"] = self.memory_bank.age()
        return stats

    @torch.no_grad()
    def push_prototypes(self):
        """Push this step's labelled prototypes P_gg into the memory bank (after the update).

        Every rank must call it once per step: the bank all-gathers across ranks.
        """
        if self._step_prototypes is None:
            d = self.memory_bank.rows.shape[1]
            rows = self.memory_bank.rows.new_zeros((0, d))
            labels = self.memory_bank.labels.new_zeros((0,))
        else:
            rows, labels = self._step_prototypes
        self.memory_bank.push(rows, labels)
        self._step_prototypes = None


__all__ = ["DualAlignROIHeads", "LOSS_NAMES"]
