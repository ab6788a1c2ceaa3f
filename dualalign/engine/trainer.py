"""``Trainer``: detectron2's ``DefaultTrainer`` wired to the semi-supervised step.

It overrides only what differs: the inner trainer (``SemiSupervisedTrainer``), the paired loader,
the optimizer's proxy param group, the AP10-70 evaluator, the atomic checkpointer and the
resume position of the samplers. Hooks, writers, LR schedule and evaluation are detectron2's.
"""

import logging
import os
import weakref
from collections import OrderedDict

import torch
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.evaluation import inference_on_dataset
from detectron2.solver import build_optimizer as d2_build_optimizer
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from ..data.build import (
    build_labeled_loader,
    build_paired_loader,
    build_test_loader,
    per_worker_batch,
    training_records,
    unlabeled_batch_size,
)
from ..evaluation import RangeAPEvaluator
from ..evaluation.pseudo_quality import PseudoLabelQualityEvaluator
from ..modeling.pseudo_boxes import box_thresh_from_config
from ..modeling.teacher import EMATeacher
from .checkpoint import AtomicCheckpointer
from .rng_state import RNGState, rng_isolated, seed_all, stream_seed
from .semi_trainer import SemiSupervisedTrainer, unwrap

logger = logging.getLogger(__name__)


def create_ddp_model(model):
    """DDP wrapper for CUDA (NCCL) and CPU (gloo) processes; the model itself for one process."""
    if comm.get_world_size() == 1:
        return model
    on_cuda = next(model.parameters()).is_cuda
    device_ids = [comm.get_local_rank()] if on_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def is_semi_supervised(cfg) -> bool:
    return cfg.DUALALIGN.METHOD != "supervised"


class EvalFromHook(hooks.EvalHook):
    """detectron2's EvalHook whose periodic evaluations start at ``start_iter``
    (``DUALALIGN.EVAL.START_ITER``); the evaluation after training always runs. The evaluation
    leaves the global RNGs as it found them (``rng_isolated``), so what a run trains does not
    depend on how often or on how many images it is evaluated."""

    def __init__(self, eval_period, eval_function, start_iter: int = 0):
        super().__init__(eval_period, rng_isolated(eval_function))
        self.start_iter = start_iter

    def after_step(self):
        if self.trainer.iter + 1 >= self.start_iter:
            super().after_step()


class IsolatedPreciseBN(hooks.PreciseBN):
    """detectron2's PreciseBN (``TEST.PRECISE_BN``): before each evaluation and after the last
    step, the BN layers' running statistics become their average over ``NUM_ITER`` training
    batches. Its passes leave the global RNGs as they found them, so the weights a run ends with
    are those of the same run without it; only the statistics that evaluation and a later
    frozen-BN run read change. With batch 2 and momentum 0.1 the running statistics hold about
    the last 20 batches, and at fixed weights they moved val mAP by 1.1 points (docs/RESULTS.md).
    """

    def update_stats(self):
        rng_isolated(super().update_stats)()


class Trainer(DefaultTrainer):
    """DefaultTrainer for every method of the project (see module docstring)."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            from detectron2.utils.logger import setup_logger

            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        per_worker_batch(cfg.SOLVER.IMS_PER_BATCH, "SOLVER.IMS_PER_BATCH")
        if is_semi_supervised(cfg):
            per_worker_batch(unlabeled_batch_size(cfg), "DUALALIGN.UNLABELED_IMS_PER_BATCH")

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model)
        self.checkpointer = None
        self._trainer = SemiSupervisedTrainer(
            model,
            data_loader,
            optimizer,
            paired=is_semi_supervised(cfg),
            amp=cfg.SOLVER.AMP.ENABLED,
            max_bad_steps=cfg.DUALALIGN.SOLVER.MAX_BAD_STEPS,
            last_checkpoint=lambda: self.checkpointer.last_checkpoint_path(),
            grad_share_period=cfg.DUALALIGN.DIAGNOSTICS.GRAD_SHARE_PERIOD,
        )
        self.data_loader = data_loader
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self), rng=RNGState()
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())
        if cfg.SEED >= 0:
            # Training starts from a state of the global RNGs that depends on SEED and the rank
            # only, not on what building this method's model drew (a projection head, proxies):
            # the proposal sampling of the labelled images then draws the same numbers in every
            # method given the same SEED. A resume loads the checkpoint's states over it.
            seed_all(stream_seed(cfg.SEED, comm.get_rank()))

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if self.start_iter == 0:
            return
        # lambda(t) follows self.iter; the samplers skip what the interrupted run consumed. The
        # loader iterator is re-created so that worker processes see the new start.
        self.data_loader.set_start_iter(self.start_iter)
        self._trainer._data_loader_iter = iter(self.data_loader)

    def state_dict(self):
        # detectron2 v0.6's DefaultTrainer saves only the iteration and hooks; the optimizer
        # (momentum buffers), grad scaler and bad-step count live in the inner trainer.
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])

    def build_hooks(self):
        if self.cfg.TEST.PRECISE_BN.ENABLED:  # its loader draws its sampler's seed
            ret = rng_isolated(super().build_hooks)()
        else:
            ret = super().build_hooks()
        for i, hook in enumerate(ret):
            if type(hook) is hooks.PreciseBN:
                period, loader, n = hook._period, hook._data_loader, hook._num_iter
                ret[i] = IsolatedPreciseBN(period, hook._model, loader, n)
            if isinstance(hook, hooks.PeriodicWriter):
                hook._period = self.cfg.DUALALIGN.LOG_PERIOD
            if type(hook) is hooks.EvalHook:
                start = self.cfg.DUALALIGN.EVAL.START_ITER
                ret[i] = EvalFromHook(hook._period, hook._func, start)
        diag = self.cfg.DUALALIGN.DIAGNOSTICS
        if diag.PSEUDO_DATASET:
            # Before the writers (the last hooks), so its metrics are written in the same step.
            quality = EvalFromHook(
                diag.PSEUDO_PERIOD, lambda: self.pseudo_label_quality(self.cfg, self.model)
            )
            writers = sum(isinstance(h, hooks.PeriodicWriter) for h in ret)
            ret.insert(len(ret) - writers, quality)
        if not comm.is_main_process():
            # detectron2 gives the checkpoint hook to rank 0 only; every rank needs it here,
            # because a save gathers every rank's RNG state (the other ranks write nothing).
            # Same place as on rank 0: before evaluation, whose collectives come after.
            at = next((i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook)), len(ret))
            ret.insert(
                at, hooks.PeriodicCheckpointer(self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD)
            )
        return ret

    @classmethod
    def build_checkpointer(cls, model, cfg):
        """The checkpointer used for ``--eval-only`` and scripts (atomic, safe loading)."""
        return AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR)

    @classmethod
    def build_train_loader(cls, cfg):
        labeled, unlabeled = training_records(cfg)
        logger.info(f"Training on {len(labeled)} labelled and {len(unlabeled)} unlabelled images")
        if not is_semi_supervised(cfg):
            return build_labeled_loader(cfg, labeled)
        return build_paired_loader(cfg, labeled, unlabeled)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None, **kwargs):
        """The AP10-70 evaluator; ``kwargs`` (``model_name``, ``primary``) go to it."""
        return RangeAPEvaluator(
            dataset_name,
            iou_thresholds=tuple(cfg.DUALALIGN.EVAL.IOU_THRESHOLDS),
            output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name),
            max_dets=cfg.TEST.DETECTIONS_PER_IMAGE,
            **kwargs,
        )

    @classmethod
    def pseudo_label_quality(cls, cfg, model):
        """Precision / recall of the model's pseudo labels on ``DIAGNOSTICS.PSEUDO_DATASET``
        (the unlabelled pool with its hidden truth), logged as ``pseudo_quality/*``. A model
        with an EMA teacher is measured by what the teacher labels with
        (:meth:`~dualalign.modeling.semi_rcnn.SemiSupervisedRCNN.pseudo_label_detections`)."""
        name = cfg.DUALALIGN.DIAGNOSTICS.PSEUDO_DATASET
        p = cfg.DUALALIGN.PSEUDO
        thresh = box_thresh_from_config(p) if p.BOXES else p.SCORE_THRESH  # the method's
        evaluator = PseudoLabelQualityEvaluator(name, thresh, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        core = unwrap(model)
        if not isinstance(getattr(core, "teacher", None), EMATeacher):
            return inference_on_dataset(model, cls.build_test_loader(cfg, name), evaluator)
        before = core.infer_pseudo_labels
        try:  # with a teacher, what it labels with (flip fusion included)
            core.use_pseudo_labels_for_inference(True)
            return inference_on_dataset(model, cls.build_test_loader(cfg, name), evaluator)
        finally:
            core.use_pseudo_labels_for_inference(before)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's evaluation; a model with an EMA teacher is scored as teacher and student.

        The evaluated network (``DUALALIGN.TEACHER.EVAL_TEACHER``) writes ``range_ap.json`` and
        is what is returned; both write ``range_ap_<teacher|student>.json`` and are returned
        under ``"teacher"`` and ``"student"`` too (logged as ``teacher/bbox/mAP``, ...).
        """
        core = unwrap(model)
        teacher = isinstance(getattr(core, "teacher", None), EMATeacher)
        # DUALALIGN.TEACHER.EVAL_PSEUDO_LABELS scores the labeller only, not teacher and student
        if evaluators is not None or not teacher or core.infer_pseudo_labels:
            return super().test(cfg, model, evaluators)
        evaluated = "teacher" if core.eval_teacher else "student"
        scores = {}
        try:
            for name in ("teacher", "student"):
                core.use_teacher_for_inference(name == "teacher")
                per_set = [
                    cls.build_evaluator(cfg, ds, model_name=name, primary=name == evaluated)
                    for ds in cfg.DATASETS.TEST
                ]
                scores[name] = super().test(cfg, model, per_set)
        finally:
            core.use_teacher_for_inference(evaluated == "teacher")
        return OrderedDict(scores[evaluated], teacher=scores["teacher"], student=scores["student"])

    @classmethod
    def build_optimizer(cls, cfg, model):
        """SGD exactly as detectron2 builds it, plus one group that holds the class proxies alone.

        Every other parameter keeps the (lr, weight decay) that ``detectron2.solver.
        build_optimizer`` gives it. The proxies get ``DUALALIGN.PROXY.BASE_LR`` and no weight
        decay (see :func:`split_proxy_group`).
        """
        optimizer = d2_build_optimizer(cfg, model)
        proxies = getattr(getattr(model, "roi_heads", None), "proxies", None)
        if proxies is None:
            return optimizer
        trainable = [p for p in proxies.parameters() if p.requires_grad]
        if trainable:  # frozen when no term reads them (no proposal alignment)
            split_proxy_group(optimizer, trainable, cfg.DUALALIGN.PROXY.BASE_LR)
        return optimizer


def split_proxy_group(optimizer: torch.optim.Optimizer, proxy_params, lr: float) -> None:
    """Move ``proxy_params`` out of the groups detectron2 built into a group of their own.

    detectron2 merges every parameter with equal hyper-parameters into one group
    (``reduce_param_groups``), so the group that holds the proxies holds most of the network
    too: it must be split, not re-tuned. The proxies' group has ``lr`` and weight decay 0: with
    ``DUALALIGN.EMBED.NORMALIZE`` the loss sees only their direction, so decay would only shrink
    their norm (raising their effective learning rate step by step), and without it decay would
    pull every proxy to the origin, which Eq. 2 does not ask for. Must run before the LR
    scheduler is built (it records each group's initial lr).
    """
    ids = {id(p) for p in proxy_params}
    groups = []
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in ids]
        if group["params"]:
            groups.append(group)
    optimizer.param_groups = groups
    optimizer.add_param_group({"params": list(proxy_params), "lr": float(lr), "weight_decay": 0.0})
