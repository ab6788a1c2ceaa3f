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

from typing import List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from ..modeling.detector_steps import (
    box_head_outputs,
    supervised_losses_and_extra_features,
    top_proposal_boxes,
)
from ..modeling.semi_rcnn import SemiSupervisedRCNN
from ..utils.graph import zero_with_graph
from .consistency import flip_image, image_widths, mirror, softmax_mse

__all__ = ["MeanTeacherRCNN"]


@META_ARCH_REGISTRY.register()
class MeanTeacherRCNN(SemiSupervisedRCNN):
    """Faster R-CNN student with an EMA teacher (see module docstring).

    ``forward(labeled, unlabeled)`` returns the supervised losses of the labelled images and the
    unweighted ``loss_mt_cons``; the teacher, its start, its EMA and the teacher/student switch
    of inference are :class:`~dualalign.modeling.semi_rcnn.SemiSupervisedRCNN`'s.
    """

    semi_loss_names = ("loss_mt_cons",)
    uses_teacher = True
    student_flip_prob = 0.5  # probability that the student's view of an image is mirrored

    @configurable
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.proposal_generator is None:
            raise ValueError("MeanTeacherRCNN needs an RPN (MODEL.PROPOSAL_GENERATOR.NAME RPN)")

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        m = cfg.DUALALIGN.MEAN_TEACHER
        ret.update(weight=m.WEIGHT, rampup_iters=m.RAMPUP_ITERS)
        return ret

    def semi_forward(self, labeled: List[dict], unlabeled: List[dict]):
        n = len(unlabeled)
        flips = (torch.rand(n) < self.student_flip_prob).tolist()
        views = [flip_image(x) if f else x for x, f in zip(unlabeled, flips)]
        losses, images_s, features_s = supervised_losses_and_extra_features(self, labeled, views)
        boxes = top_proposal_boxes(
            self.proposal_generator, images_s, features_s, self.proposals_per_image
        )
        logits_s, _ = box_head_outputs(self.roi_heads, features_s, boxes)
        boxes_t = mirror(boxes, image_widths(images_s), flips)  # back to the teacher's view
        logits_t = self.teacher_logits(self.preprocess_image(unlabeled), boxes_t)
        cons = softmax_mse(logits_s, logits_t)
        losses["loss_mt_cons"] = cons.mean() if len(cons) else zero_with_graph(logits_s)
        return losses
