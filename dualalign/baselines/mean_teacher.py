"""``MeanTeacherRCNN``: Mean Teacher on Faster R-CNN (Table 2's "Mean Teacher").

Tarvainen and Valpola, "Mean teachers are better role models", NeurIPS 2017, with the reference
code (CuriousAI/mean-teacher, ``pytorch/main.py`` and ``pytorch/mean_teacher/losses.py``),
adapted to a two-stage detector as is usual: the consistency is on the box classifier of shared
proposals.

* Teacher: an :class:`~dualalign.modeling.teacher.EMATeacher` of the student's backbone, RPN
  and ROI heads. It is copied from the student at ``DUALALIGN.TEACHER.START_ITER`` (with 0: the
  network as built and loaded, so from ``MODEL.WEIGHTS`` it is that checkpoint), then follows
  it by EMA with the constant decay ``DUALALIGN.TEACHER.EMA_DECAY``, BN statistics included.
  Before the start there is no consistency term and no EMA: training is supervised. The
  reference code's warm-up ``min(decay, 1 - 1/(k+1))`` is not used: from random init it made
  the teacher of a short run the plain mean of every student since initialisation.
* Views: the teacher sees the unlabelled batch as given (already flipped / colour-jittered by
  the mapper). The student sees each image mirrored left-right with probability 0.5, drawn
  inside the model; the reference adds input noise and translations, and a flip is the one
  perturbation whose box mapping is exact here.
* Consistency ``loss_mt_cons``: the student's RPN proposals on its view (no gradient; the top
  ``DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE`` per image, as for the other methods) are scored by
  the student's box head and, mirrored back where the view was flipped, by the teacher's; the
  loss is the mean squared difference of the two softmax distributions (:func:`softmax_mse`,
  the reference ``softmax_mse_loss``). Applied to unlabelled images only (the reference also
  applies it to labelled ones).
* Weight: 0 before the teacher starts, then ``sigmoid_rampup(t - START_ITER,
  MEAN_TEACHER.RAMPUP_ITERS, MEAN_TEACHER.WEIGHT)``, the reference ramp-up; no ramp-down (the
  reference ramps down the learning rate, not the weight).
* Inference uses the teacher when ``DUALALIGN.TEACHER.EVAL_TEACHER`` (the EMA model is
  usually the more accurate of the two), else the student;
  :meth:`MeanTeacherRCNN.use_teacher_for_inference` switches. The trainer's evaluation
  reports both.

Loading weights that have no ``teacher.`` entries (ImageNet, a supervised checkpoint) copies the
loaded student weights into the teacher, so both start from the same network.
"""

from typing import List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from ..modeling.rampup import sigmoid_rampup
from ..modeling.teacher import EMATeacher, fill_missing_teacher
from .common import (
    box_head_outputs,
    flip_image,
    image_widths,
    mirror,
    supervised_losses_and_extra_features,
    top_proposal_boxes,
)
from .consistency import softmax_mse, zero_with_graph

__all__ = ["MeanTeacherRCNN"]

# The student's parts that the teacher copies, in state_dict order.
STUDENT_PARTS = ("backbone", "proposal_generator", "roi_heads")


@META_ARCH_REGISTRY.register()
class MeanTeacherRCNN(GeneralizedRCNN):
    """Faster R-CNN student with an EMA teacher (see module docstring).

    ``forward(labeled, unlabeled)`` returns the supervised losses of the labelled images and the
    unweighted ``loss_mt_cons``; the trainer scales it by :meth:`semi_loss_weight` and calls
    :meth:`after_step` after each optimizer step.
    """

    semi_loss_names = ("loss_mt_cons",)
    student_flip_prob = 0.5  # probability that the student's view of an image is mirrored

    @configurable
    def __init__(
        self,
        *args,
        ema_decay: float = 0.999,
        start_iter: int = 0,
        weight: float = 1.0,
        rampup_iters: int = 0,
        eval_teacher: bool = True,
        proposals_per_image: int = 512,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if self.proposal_generator is None:
            raise ValueError("MeanTeacherRCNN needs an RPN (MODEL.PROPOSAL_GENERATOR.NAME RPN)")
        self.weight = weight
        self.rampup_iters = rampup_iters
        self.eval_teacher = eval_teacher
        self.proposals_per_image = proposals_per_image
        self.teacher = EMATeacher(self._student(), ema_decay, start_iter)
        self.register_load_state_dict_pre_hook(fill_missing_teacher)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        m, t = cfg.DUALALIGN.MEAN_TEACHER, cfg.DUALALIGN.TEACHER
        ret.update(
            ema_decay=t.EMA_DECAY,
            start_iter=t.START_ITER,
            weight=m.WEIGHT,
            rampup_iters=m.RAMPUP_ITERS,
            eval_teacher=t.EVAL_TEACHER,
            proposals_per_image=cfg.DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE,
        )
        return ret

    def _student(self):
        return {n: getattr(self, n) for n in STUDENT_PARTS}

    def use_teacher_for_inference(self, flag: bool = True):
        """Run :meth:`inference` with the teacher (True) or the student (False)."""
        self.eval_teacher = bool(flag)

    def semi_loss_weight(self, iteration: int) -> float:
        """0 before the teacher starts, then the reference sigmoid ramp-up from its start."""
        start = self.teacher.start_iter
        if iteration < start:
            return 0.0
        return sigmoid_rampup(iteration - start, self.rampup_iters, self.weight)

    def before_step(self, iteration: int):
        """Copy the student into the teacher when ``iteration`` reaches the start."""
        self.teacher.start_if_due(iteration, self._student())

    def forward(self, batched_inputs: List[dict], unlabeled_inputs: Optional[List[dict]] = None):
        if not self.training:
            return self.inference(batched_inputs)
        if not unlabeled_inputs or not self.teacher.is_started:
            return super().forward(batched_inputs)
        n = len(unlabeled_inputs)
        flips = (torch.rand(n) < self.student_flip_prob).tolist()
        views = [flip_image(x) if f else x for x, f in zip(unlabeled_inputs, flips)]
        losses, images_s, features_s = supervised_losses_and_extra_features(
            self, batched_inputs, views
        )
        boxes = top_proposal_boxes(
            self.proposal_generator, images_s, features_s, self.proposals_per_image
        )
        logits_s, _ = box_head_outputs(self.roi_heads, features_s, boxes)
        boxes_t = mirror(boxes, image_widths(images_s), flips)  # back to the teacher's view
        logits_t = self._teacher_logits(unlabeled_inputs, boxes_t)
        cons = softmax_mse(logits_s, logits_t)
        losses["loss_mt_cons"] = cons.mean() if len(cons) else zero_with_graph(logits_s)
        return losses

    @torch.no_grad()
    def _teacher_logits(self, inputs: List[dict], boxes: List[torch.Tensor]) -> torch.Tensor:
        """The teacher's class logits of ``boxes`` on the images as given (no gradient)."""
        images = self.preprocess_image(inputs)
        features = self.teacher["backbone"](images.tensor)
        logits, _ = box_head_outputs(self.teacher["roi_heads"], features, boxes)
        return logits

    def inference(self, batched_inputs, detected_instances=None, do_postprocess: bool = True):
        """``GeneralizedRCNN.inference`` with the teacher's or the student's networks."""
        if not self.eval_teacher:
            return super().inference(batched_inputs, detected_instances, do_postprocess)
        assert not self.training
        backbone, rpn, roi_heads = (self.teacher[n] for n in STUDENT_PARTS)
        images = self.preprocess_image(batched_inputs)
        features = backbone(images.tensor)
        if detected_instances is None:
            proposals, _ = rpn(images, features, None)
            results, _ = roi_heads(images, features, proposals, None)
        else:
            detected = [x.to(self.device) for x in detected_instances]
            results = roi_heads.forward_with_given_boxes(features, detected)
        if not do_postprocess:
            return results
        return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)

    @torch.no_grad()
    def after_step(self):
        """EMA update of the teacher after the optimizer step, once it has started."""
        self.teacher.follow(self._student())
