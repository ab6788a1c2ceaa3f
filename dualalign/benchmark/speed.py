"""Timing helpers of the speed benchmark: training steps, inference, evaluator and loader.

Every step timing uses the same fixed batch, with CUDA synchronisation around each step. Peak
memory is CUDA's max allocated bytes per measurement (``None`` on the CPU, where no
per-measurement figure exists).
"""

import statistics
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from ..data.synthetic import render_patch
from ..engine.semi_trainer import SemiSupervisedTrainer, weighted_total
from ..modeling.semi_rcnn import SemiSupervisedRCNN


def synthetic_batch(n: int, size: int, labeled: bool, seed: int, device) -> List[dict]:
    """``n`` synthetic patches as model inputs (BGR CHW uint8), with GT when ``labeled``."""
    rng = np.random.default_rng(seed)
    batch = []
    for _ in range(n):
        rgb, annos = render_patch(rng, image_size=size)
        item = {
            "image": torch.as_tensor(np.ascontiguousarray(rgb[..., ::-1].transpose(2, 0, 1))),
            "height": size,
            "width": size,
        }
        if labeled:
            inst = Instances((size, size))
            xywh = torch.tensor([a["bbox"] for a in annos], dtype=torch.float32).reshape(-1, 4)
            inst.gt_boxes = Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1))
            inst.gt_classes = torch.tensor([a["category_id"] - 1 for a in annos], dtype=torch.long)
            item["instances"] = inst
        batch.append(item)
    return batch


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def forward_same_images(model, labeled: List[dict], unlabeled: List[dict]):
    """Step (b) of the speed benchmark: supervised losses, plus the unlabelled half *forwarded*.

    The unavoidable cost of an unlabelled batch for any method that reads the detector's view of
    it: backbone (one batch with the labelled images), RPN proposals and the box head on the top
    ``DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE`` proposals of each unlabelled image, exactly as
    ``DualAlignRCNN`` does, but no loss reads them. What (c) adds on top is the method itself:
    projection head, Eq. 1-8 and the bank, and the backward pass of those terms.
    """
    from ..modeling.detector_steps import (
        proposals_without_loss,
        supervised_losses_and_extra_features,
    )

    losses, images_u, features_u = supervised_losses_and_extra_features(model, labeled, unlabeled)
    heads = model.roi_heads
    proposals = proposals_without_loss(model.proposal_generator, images_u, features_u)
    k = heads.unlabeled_proposals_per_image
    box_features = heads.box_pooler(
        [features_u[f] for f in heads.box_in_features], [p.proposal_boxes[:k] for p in proposals]
    )
    heads.box_predictor(heads.box_head(box_features))
    return losses


class TrainingStep:
    """One SGD step of ``model`` on a fixed batch, as the trainer runs it; call it to time one.

    The step is the trainer's (``SemiSupervisedTrainer.run_step``) at a late iteration: the
    model's ``before_step``, forward (labelled only when ``unlabeled`` is None; ``forward(model,
    labeled, unlabeled)`` when given), loss sum with the model's unsupervised weight, backward,
    SGD step, the single host copy of losses and statistics, ``after_step``. Call it inside an
    ``EventStorage``.
    """

    LATE = 10**9  # the iteration the step is timed at

    def __init__(self, model, labeled, unlabeled, *, device, amp: bool, forward=None):
        model.train()
        self.model, self.labeled, self.unlabeled = model, labeled, unlabeled
        self.device, self.amp, self.forward = device, amp, forward
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
        self.scaler = torch.amp.GradScaler("cuda") if amp else None
        # A semi-supervised model is timed long after its start (teacher copied, full weight).
        self.method = model if isinstance(model, SemiSupervisedRCNN) else None
        self.semi = set(self.method.semi_loss_names) if self.method else set()
        self.weight = self.method.semi_loss_weight(self.LATE) if self.method else 1.0

    def __call__(self) -> float:
        """Run one step; return its wall seconds (CUDA synchronised before and after)."""
        model, method = self.model, self.method
        _sync(self.device)
        start = time.perf_counter()
        if method is not None:
            method.before_step(self.LATE)
        with torch.autocast("cuda", enabled=self.amp):
            if self.forward is not None:
                losses = self.forward(model, self.labeled, self.unlabeled)
            elif self.unlabeled is None:
                losses = model(self.labeled)
            else:
                losses = model(self.labeled, self.unlabeled)
            total = weighted_total(losses, self.semi, self.weight)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            total.backward()
            self.opt.step()
        # The trainer's single host copy of the step (losses + statistics).
        stats = method.step_statistics() if method is not None else {}
        SemiSupervisedTrainer._to_host({**losses, **stats})
        if method is not None:
            method.after_step()
        _sync(self.device)
        return time.perf_counter() - start


def time_training_steps(
    model,
    labeled,
    unlabeled,
    *,
    device,
    amp: bool,
    warmup: int,
    repeats: int,
    forward: Optional[Callable] = None,
) -> Dict[str, Optional[float]]:
    """Median seconds per SGD step of ``model`` on a fixed batch, and peak CUDA memory (GiB).

    The step is :class:`TrainingStep`'s; ``warmup`` steps are run first and not counted.
    """
    step = TrainingStep(model, labeled, unlabeled, device=device, amp=amp, forward=forward)
    is_cuda = torch.device(device).type == "cuda"
    if is_cuda:
        torch.cuda.reset_peak_memory_stats()
    with EventStorage():
        times = [step() for _ in range(warmup + repeats)][warmup:]
    peak = torch.cuda.max_memory_allocated() / 2**30 if is_cuda else None
    return {"s_per_step": statistics.median(times), "peak_gib": peak}


class InferencePass:
    """Inference of ``model`` over ``inputs`` in batches; call it to time one pass (seconds)."""

    def __init__(self, model, inputs: List[dict], *, device, batch_size: int, amp=False):
        self.model, self.inputs = model, inputs
        self.device, self.batch_size, self.amp = device, batch_size, amp

    @torch.no_grad()
    def __call__(self) -> float:
        self.model.eval()
        _sync(self.device)
        start = time.perf_counter()
        with torch.autocast("cuda", enabled=self.amp):
            for k in range(0, len(self.inputs), self.batch_size):
                self.model(self.inputs[k : k + self.batch_size])
        _sync(self.device)
        return time.perf_counter() - start


def time_call(fn: Callable[[], object], repeats: int = 1) -> float:
    """Median wall seconds of ``fn()``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fake_predictions(num_images: int, per_image: int, num_classes: int, size: int, seed: int):
    """A COCO GT dict and jittered predictions (TPs plus FPs) for timing the evaluator."""
    rng = np.random.default_rng(seed)
    images, annotations, preds = [], [], []
    for img in range(1, num_images + 1):
        images.append({"id": img, "file_name": f"{img}.png", "width": size, "height": size})
        xy = rng.uniform(0, size - 64, (per_image, 2))
        wh = rng.uniform(16, 64, (per_image, 2))
        cls = rng.integers(1, num_classes + 1, per_image)
        for j in range(per_image):
            box = [float(xy[j, 0]), float(xy[j, 1]), float(wh[j, 0]), float(wh[j, 1])]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img,
                    "bbox": box,
                    "category_id": int(cls[j]),
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
            jitter = (np.array(box) + rng.normal(0, 3, 4)).tolist()
            preds.append(
                {
                    "image_id": img,
                    "category_id": int(cls[j]),
                    "bbox": jitter,
                    "score": float(rng.uniform(0.3, 1.0)),
                }
            )
            preds.append(
                {
                    "image_id": img,
                    "category_id": int(rng.integers(1, num_classes + 1)),
                    "bbox": [float(v) for v in rng.uniform(0, size - 32, 2)] + [24.0, 24.0],
                    "score": float(rng.uniform(0.0, 0.6)),
                }
            )
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": annotations, "categories": cats}, preds


def loader_images_per_second(loader, num_batches: int, warmup: int = 2) -> float:
    """Images per second delivered by an infinite loader of (labelled, unlabelled) pairs."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    count = 0
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(it)
        count += sum(len(b) for b in batch) if isinstance(batch, tuple) else len(batch)
    return count / (time.perf_counter() - start)
