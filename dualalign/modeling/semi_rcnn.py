"""``SemiSupervisedRCNN``: the semi-supervised protocol of every method, written once.

A training step of a method is four named parts, each a method that a subclass may override:

1. :meth:`~SemiSupervisedRCNN.forward` decides what runs: inference in eval mode; the plain
   supervised Faster R-CNN step when there is no unlabelled batch or the unsupervised part has
   not started; otherwise :meth:`~SemiSupervisedRCNN.semi_forward`.
2. :meth:`~SemiSupervisedRCNN.semi_forward` (the one method every subclass writes) returns the
   supervised losses of the labelled images and the unweighted unsupervised terms, named in
   ``semi_loss_names``.
3. :meth:`~SemiSupervisedRCNN.semi_loss_weight` is lambda(t) of those terms: 0 before the start,
   then :meth:`~SemiSupervisedRCNN.weight_schedule` of the iterations since the start (a sigmoid
   ramp-up, and optionally a Gaussian ramp-down that ends ``tail_iters`` before the last
   iteration, the weight at its floor after it). The trainer computes the weighted total.
4. :meth:`~SemiSupervisedRCNN.before_step` / :meth:`~SemiSupervisedRCNN.after_step` are the
   trainer's hooks around the optimizer step (teacher copy and EMA here; the memory bank in
   dual alignment), :meth:`~SemiSupervisedRCNN.step_statistics` what the step logs.

A subclass with ``uses_teacher = True`` gets an :class:`~.teacher.EMATeacher` of its backbone,
RPN and ROI heads (``DUALALIGN.TEACHER.*``); the unsupervised part then starts with the teacher,
and inference runs the teacher or the student (:meth:`use_teacher_for_inference`). The structure
follows mmdetection 3.x's ``SemiBaseDetector`` (supervised loss, pseudo-labels, unsupervised
loss, weighting as overridable steps).
"""

from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import ImageList, Instances

from .detector_steps import box_head_outputs
from .rampup import sigmoid_rampdown, sigmoid_rampup
from .teacher import EMATeacher, fill_missing_teacher

__all__ = ["SemiSupervisedRCNN"]


class SemiSupervisedRCNN(GeneralizedRCNN):
    """Faster R-CNN trained on ``(labelled, unlabelled)`` batches (see the module docstring).

    Args (besides ``GeneralizedRCNN``'s):
        weight: the maximum weight of the unsupervised terms (w_max of lambda(t)).
        rampup_iters: the sigmoid ramp-up length T of lambda(t), from the start.
        rampdown_iters: the Gaussian ramp-down length of lambda(t) (0: none), ending
            ``tail_iters`` before ``max_iter`` (SOLVER.MAX_ITER); the weight is at its floor
            ``weight * exp(-12.5)`` over the last ``tail_iters`` iterations.
        proposals_per_image: unlabelled proposals per image that a method scores.
        teacher_start_iter, ema_decay, eval_teacher, eval_pseudo_labels:
            ``DUALALIGN.TEACHER.*`` (used when ``uses_teacher``; ``eval_pseudo_labels`` needs it).
        use_teacher: overrides the class's ``uses_teacher`` (a method whose teacher is a
            config switch, as dual alignment's ``DUALALIGN.PSEUDO.SOURCE``).
    """

    semi_loss_names = ()  # the unsupervised terms of the loss dict, scaled by lambda(t)
    uses_teacher = False  # whether the method has an EMA teacher
    student_parts = ("backbone", "proposal_generator", "roi_heads")  # what a teacher copies

    @configurable
    def __init__(
        self,
        *args,
        weight: float = 1.0,
        rampup_iters: int = 0,
        rampdown_iters: int = 0,
        tail_iters: int = 0,
        max_iter: int = 1,
        proposals_per_image: int = 512,
        teacher_start_iter: int = 0,
        ema_decay: float = 0.999,
        eval_teacher: bool = True,
        eval_pseudo_labels: bool = False,
        use_teacher: Optional[bool] = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if use_teacher is not None:
            self.uses_teacher = bool(use_teacher)
        self.weight = weight
        self.rampup_iters = rampup_iters
        self.rampdown_iters = rampdown_iters
        self.tail_iters = tail_iters
        self.max_iter = max_iter
        self.proposals_per_image = proposals_per_image
        self.eval_teacher = eval_teacher
        self.teacher = None
        if self.uses_teacher:
            self.teacher = EMATeacher(self.student(), ema_decay, teacher_start_iter)
            self.register_load_state_dict_pre_hook(fill_missing_teacher)
        elif eval_pseudo_labels:
            raise ValueError(
                "config error: DUALALIGN.TEACHER.EVAL_PSEUDO_LABELS = True needs a method with a "
                "teacher (DUALALIGN.PSEUDO.SOURCE teacher, or Mean Teacher); set it False"
            )
        self.use_pseudo_labels_for_inference(eval_pseudo_labels)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        t = cfg.DUALALIGN.TEACHER
        ret.update(
            max_iter=cfg.SOLVER.MAX_ITER,
            proposals_per_image=cfg.DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE,
            teacher_start_iter=t.START_ITER,
            ema_decay=t.EMA_DECAY,
            eval_teacher=t.EVAL_TEACHER,
            eval_pseudo_labels=t.EVAL_PSEUDO_LABELS,
        )
        return ret

    # -- the training step --------------------------------------------------------------------

    @property
    def start_iter(self) -> int:
        """The iteration at which the unsupervised part starts (the teacher's, else 0)."""
        return self.teacher.start_iter if self.teacher is not None else 0

    @property
    def unsupervised_started(self) -> bool:
        return self.teacher is None or self.teacher.is_started

    def forward(self, batched_inputs: List[dict], unlabeled_inputs: Optional[List[dict]] = None):
        if not self.training:
            return self.inference(batched_inputs)
        if not unlabeled_inputs or not self.unsupervised_started:
            return super().forward(batched_inputs)
        return self.semi_forward(batched_inputs, unlabeled_inputs)

    def semi_forward(self, labeled: List[dict], unlabeled: List[dict]) -> Dict[str, torch.Tensor]:
        """Supervised losses of ``labeled`` plus the unweighted terms in ``semi_loss_names``."""
        raise NotImplementedError

    def semi_loss_weight(self, iteration: int) -> float:
        """lambda(t): 0 before the start, then :meth:`weight_schedule` of ``t - start``."""
        if iteration < self.start_iter:
            return 0.0
        return self.weight_schedule(iteration - self.start_iter)

    def weight_schedule(self, t: int) -> float:
        """The weight ``t`` iterations after the start: a sigmoid ramp-up to ``weight``, times a
        Gaussian ramp-down (:func:`~.rampup.sigmoid_rampdown`) that ends ``tail_iters`` before
        ``max_iter`` (none when ``rampdown_iters`` is 0)."""
        up = sigmoid_rampup(t, self.rampup_iters, self.weight)
        end = self.max_iter - self.start_iter - self.tail_iters  # in iterations since the start
        return sigmoid_rampdown(t, end, self.rampdown_iters, up)

    def before_step(self, iteration: int) -> None:
        """Before the step of ``iteration``: the teacher is copied from the student at its
        start."""
        if self.teacher is not None:
            self.teacher.start_if_due(iteration, self.student())

    def after_step(self) -> None:
        """After the optimizer step: the teacher follows the student by EMA."""
        if self.teacher is not None:
            self.teacher.follow(self.student())

    def step_statistics(self) -> Dict[str, torch.Tensor]:
        """Scalars of the step the trainer logs with the losses (0-d tensors, one sync)."""
        return {}

    # -- the teacher ----------------------------------------------------------------------------

    def student(self) -> Dict[str, torch.nn.Module]:
        """The networks a teacher copies, by name."""
        return {n: getattr(self, n) for n in self.student_parts}

    def use_teacher_for_inference(self, flag: bool = True):
        """Run :meth:`inference` with the teacher (True) or the student (False)."""
        self.eval_teacher = bool(flag)

    def use_pseudo_labels_for_inference(self, flag: bool = True):
        """Make :meth:`inference` return what the teacher labels the images with
        (:meth:`pseudo_label_detections`): the pseudo-label diagnostics measure the labeller
        this way, and ``DUALALIGN.TEACHER.EVAL_PSEUDO_LABELS`` sets it. Needs a teacher."""
        assert self.teacher is not None or not flag, "pseudo-label inference needs a teacher"
        self.infer_pseudo_labels = bool(flag)

    def inference(self, batched_inputs, detected_instances=None, do_postprocess: bool = True):
        """``GeneralizedRCNN.inference`` with the teacher's networks when it is evaluated (or
        the teacher's pseudo-label detections, :meth:`use_pseudo_labels_for_inference`)."""
        if self.infer_pseudo_labels and detected_instances is None:
            assert not self.training
            images, results = self.pseudo_label_detections(batched_inputs)
            if not do_postprocess:
                return results
            return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
        if self.teacher is None or not self.eval_teacher:
            return super().inference(batched_inputs, detected_instances, do_postprocess)
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        if detected_instances is None:
            results = self.teacher_detections(images)
        else:
            features = self.teacher["backbone"](images.tensor)
            detected = [x.to(self.device) for x in detected_instances]
            results = self.teacher["roi_heads"].forward_with_given_boxes(features, detected)
        if not do_postprocess:
            return results
        return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)

    @torch.no_grad()
    def teacher_view(self, batched_inputs: List[dict]) -> Tuple[ImageList, Dict[str, torch.Tensor]]:
        """``batched_inputs`` preprocessed, and the teacher's feature maps of them."""
        images = self.preprocess_image(batched_inputs)
        return images, self.teacher["backbone"](images.tensor)

    @torch.no_grad()
    def teacher_box_logits(
        self, features: Dict[str, torch.Tensor], boxes: List[torch.Tensor]
    ) -> torch.Tensor:
        """The teacher's class logits of given XYXY ``boxes`` per image, from its ``features``
        of those images (rows in image order; no gradient)."""
        logits, _ = box_head_outputs(self.teacher["roi_heads"], features, boxes)
        return logits

    @torch.no_grad()
    def teacher_logits(self, images: ImageList, boxes: List[torch.Tensor]) -> torch.Tensor:
        """The teacher's class logits of given XYXY ``boxes`` per image of preprocessed
        ``images`` (rows in image order; no gradient)."""
        return self.teacher_box_logits(self.teacher["backbone"](images.tensor), boxes)

    @torch.no_grad()
    def pseudo_label_detections(self, batched_inputs: List[dict], view=None):
        """What the teacher labels ``batched_inputs`` (the weak view) with: their preprocessed
        ``ImageList`` and, per image, detections in its frame. Here the teacher's detections;
        a method with another labeller overrides this. ``view``: :meth:`teacher_view` of
        ``batched_inputs`` when the caller has it already (one backbone pass, not two)."""
        images, features = view if view is not None else self.teacher_view(batched_inputs)
        return images, self.teacher_detections(images, features)

    @torch.no_grad()
    def teacher_detections(
        self, images: ImageList, features: Optional[Dict[str, torch.Tensor]] = None
    ) -> List[Instances]:
        """The teacher's detections on preprocessed ``images`` (test-time RPN, ROI heads, NMS
        and score threshold), in the frame of ``images``: its inference, and its pseudo-boxes
        in training. ``features``: the teacher's feature maps of ``images``, when known."""
        backbone, rpn, roi_heads = (self.teacher[n] for n in self.student_parts)
        if features is None:
            features = backbone(images.tensor)
        proposals, _ = rpn(images, features, None)
        results, _ = roi_heads(images, features, proposals, None)
        return results
