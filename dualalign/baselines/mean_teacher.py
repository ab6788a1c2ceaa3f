"""``MeanTeacherRCNN``: Mean Teacher on Faster R-CNN (Table 2's "Mean Teacher").

Tarvainen and Valpola, "Mean teachers are better role models", NeurIPS 2017, with the reference
code (CuriousAI/mean-teacher, ``pytorch/main.py`` and ``pytorch/mean_teacher/losses.py``),
adapted to a two-stage detector as is usual: the consistency is on the box classifier of shared
proposals.

* Teacher: an EMA copy of the student's backbone, RPN and ROI heads, made in ``__init__``. Its
  parameters have ``requires_grad=False``, so neither the optimizer nor DDP treats them as
  trainable, but they are registered under ``teacher.`` and are in ``state_dict()``: a
  checkpoint holds both networks. The teacher always runs in eval mode.
* EMA (``after_step``): ``teacher = a * teacher + (1 - a) * student`` for parameters, with the
  reference code's warm-up ``a = min(EMA_DECAY, 1 - 1 / (k + 1))`` at the k-th update
  (``update_ema_variables``: "use the true average until the exponential average is more
  correct"), see :func:`ema_decay_at`. Buffers (BN statistics) are copied, since the teacher
  never updates its own. The update count is the ``ema_updates`` buffer, so resuming continues
  the schedule.
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
* Weight: ``sigmoid_rampup(t, MEAN_TEACHER.RAMPUP_ITERS, MEAN_TEACHER.WEIGHT)``, the reference
  ramp-up; no ramp-down (the reference ramps down the learning rate, not the weight).
* Inference uses the teacher when ``DUALALIGN.MEAN_TEACHER.EVAL_TEACHER`` (the EMA model is
  usually the more accurate of the two), else the student;
  :meth:`MeanTeacherRCNN.use_teacher_for_inference` switches.

Loading weights that have no ``teacher.`` entries (ImageNet, a supervised checkpoint) copies the
loaded student weights into the teacher, so both start from the same network.
"""

import copy
from typing import List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from torch import nn

from ..modeling.rampup import sigmoid_rampup
from .common import (
    box_head_outputs,
    flip_image,
    image_widths,
    mirror,
    supervised_losses_and_extra_features,
    top_proposal_boxes,
)
from .consistency import softmax_mse, zero_with_graph

__all__ = ["MeanTeacherRCNN", "ema_decay_at"]

# The student's parts that the teacher copies, in state_dict order.
STUDENT_PARTS = ("backbone", "proposal_generator", "roi_heads")


def ema_decay_at(update: int, decay: float) -> float:
    """EMA decay of the ``update``-th teacher update (1-based): ``min(decay, 1 - 1/(update+1))``.

    The Mean Teacher reference code's warm-up (``update_ema_variables`` is called with
    ``global_step`` already incremented): 1/2, 2/3, 3/4, ... until ``decay`` is reached, i.e. the
    teacher is the plain average of the networks seen so far, then an EMA.
    """
    return min(float(decay), 1.0 - 1.0 / (update + 1))


def _fill_missing_teacher(module, state_dict, prefix, *args):
    """load_state_dict pre-hook: without ``teacher.*`` entries, load the student into both."""
    teacher_prefix = prefix + module.teacher_prefix
    if any(k.startswith(teacher_prefix) for k in state_dict):
        return
    student_keys = [
        k
        for k in state_dict
        if k.startswith(prefix) and k[len(prefix) :].split(".")[0] in STUDENT_PARTS
    ]
    if not student_keys:
        return
    for k in student_keys:
        state_dict[teacher_prefix + k[len(prefix) :]] = state_dict[k]
    state_dict.setdefault(prefix + "ema_updates", torch.zeros((), dtype=torch.long))


@META_ARCH_REGISTRY.register()
class MeanTeacherRCNN(GeneralizedRCNN):
    """Faster R-CNN student with an EMA teacher (see module docstring).

    ``forward(labeled, unlabeled)`` returns the supervised losses of the labelled images and the
    unweighted ``loss_mt_cons``; the trainer scales it by :meth:`semi_loss_weight` and calls
    :meth:`after_step` after each optimizer step.
    """

    semi_loss_names = ("loss_mt_cons",)
    teacher_prefix = "teacher."
    student_flip_prob = 0.5  # probability that the student's view of an image is mirrored

    @configurable
    def __init__(
        self,
        *args,
        ema_decay: float = 0.999,
        weight: float = 1.0,
        rampup_iters: int = 0,
        eval_teacher: bool = True,
        proposals_per_image: int = 512,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if self.proposal_generator is None:
            raise ValueError("MeanTeacherRCNN needs an RPN (MODEL.PROPOSAL_GENERATOR.NAME RPN)")
        self.ema_decay = ema_decay
        self.weight = weight
        self.rampup_iters = rampup_iters
        self.eval_teacher = eval_teacher
        self.proposals_per_image = proposals_per_image
        self.teacher = nn.ModuleDict({n: copy.deepcopy(getattr(self, n)) for n in STUDENT_PARTS})
        self.teacher.requires_grad_(False)
        self.teacher.train(False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.register_load_state_dict_pre_hook(_fill_missing_teacher)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        m = cfg.DUALALIGN.MEAN_TEACHER
        ret.update(
            ema_decay=m.EMA_DECAY,
            weight=m.WEIGHT,
            rampup_iters=m.RAMPUP_ITERS,
            eval_teacher=m.EVAL_TEACHER,
            proposals_per_image=cfg.DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE,
        )
        return ret

    def train(self, mode: bool = True):
        """Switch the student; the teacher stays in eval mode (its BN uses copied statistics)."""
        super().train(mode)
        self.teacher.train(False)
        return self

    def use_teacher_for_inference(self, flag: bool = True):
        """Run :meth:`inference` with the teacher (True) or the student (False)."""
        self.eval_teacher = bool(flag)

    def semi_loss_weight(self, iteration: int) -> float:
        """The reference sigmoid ramp-up of the consistency weight."""
        return sigmoid_rampup(iteration, self.rampup_iters, self.weight)

    def forward(self, batched_inputs: List[dict], unlabeled_inputs: Optional[List[dict]] = None):
        if not self.training:
            return self.inference(batched_inputs)
        if not unlabeled_inputs:
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

    def _paired_tensors(self):
        """(student params, teacher params, student buffers, teacher buffers), aligned lists."""
        out = ([], [], [], [])
        for n in STUDENT_PARTS:
            student, teacher = getattr(self, n), self.teacher[n]
            out[0].extend(p.detach() for p in student.parameters())
            out[1].extend(teacher.parameters())
            out[2].extend(student.buffers())
            out[3].extend(teacher.buffers())
        return out

    @torch.no_grad()
    def after_step(self):
        """EMA update of the teacher after the optimizer step (module docstring)."""
        self.ema_updates += 1
        a = ema_decay_at(int(self.ema_updates), self.ema_decay)
        s_params, t_params, s_bufs, t_bufs = self._paired_tensors()
        torch._foreach_mul_(t_params, a)
        torch._foreach_add_(t_params, s_params, alpha=1.0 - a)
        if t_bufs:
            torch._foreach_copy_(t_bufs, s_bufs)
