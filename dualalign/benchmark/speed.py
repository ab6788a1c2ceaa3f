"""Timing helpers of ``scripts/bench.py``: training steps, inference, evaluator and loader.

Every step timing uses the same fixed batch, median over repeats after warm-up, with CUDA
synchronisation around each step. Peak memory is CUDA's max allocated bytes per measurement
(``None`` on the CPU, where no per-measurement figure exists).
"""

import statistics
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from ..data.synthetic import render_patch
from ..engine.semi_trainer import SemiSupervisedTrainer


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
    """Step (b) of the speed issue: supervised losses, plus the unlabelled half *forwarded*.

    The unavoidable cost of an unlabelled batch for any method that reads the detector's view of
    it: backbone (one batch with the labelled images), RPN proposals and the box head on the top
    ``DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE`` proposals of each unlabelled image, exactly as
    ``DualAlignRCNN`` does, but no loss reads them. What (c) adds on top is the method itself:
    projection head, Eq. 1-8 and the bank, and the backward pass of those terms.
    """
    from ..modeling.meta_arch import proposals_without_loss, supervised_losses_and_extra_features

    losses, images_u, features_u = supervised_losses_and_extra_features(model, labeled, unlabeled)
    heads = model.roi_heads
    proposals = proposals_without_loss(model.proposal_generator, images_u, features_u)
    k = heads.unlabeled_proposals_per_image
    box_features = heads.box_pooler(
        [features_u[f] for f in heads.box_in_features], [p.proposal_boxes[:k] for p in proposals]
    )
    heads.box_predictor(heads.box_head(box_features))
    return losses


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

    The step is the trainer's: forward (labelled only when ``unlabeled`` is None; ``forward(model,
    labeled, unlabeled)`` when given), loss sum with the model's unsupervised weight, backward,
    SGD step, ``after_step``.
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    semi = set(getattr(model, "semi_loss_names", ()))
    weight = model.semi_loss_weight(10**9) if hasattr(model, "semi_loss_weight") else 1.0
    times = []
    is_cuda = torch.device(device).type == "cuda"
    if is_cuda:
        torch.cuda.reset_peak_memory_stats()
    with EventStorage():
        for i in range(warmup + repeats):
            _sync(device)
            start = time.perf_counter()
            with torch.autocast("cuda", enabled=amp):
                if forward is not None:
                    losses = forward(model, labeled, unlabeled)
                elif unlabeled is None:
                    losses = model(labeled)
                else:
                    losses = model(labeled, unlabeled)
                total = sum(v * weight if k in semi else v for k, v in losses.items())
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(total).backward()
                scaler.step(opt)
                scaler.update()
            else:
                total.backward()
                opt.step()
            # The trainer's single host copy of the step (losses + statistics).
            stats = model.step_statistics() if hasattr(model, "step_statistics") else {}
            SemiSupervisedTrainer._to_host({**losses, **stats})
            if hasattr(model, "after_step"):
                model.after_step()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if is_cuda else None
    return {"s_per_step": statistics.median(times), "peak_gib": peak}


@torch.no_grad()
def images_per_second(
    model, inputs: List[dict], *, device, batch_size: int, warmup: int, repeats: int, amp=False
) -> float:
    """Inference throughput over ``inputs`` in batches of ``batch_size`` (median of repeats)."""
    model.eval()
    rates = []
    for i in range(warmup + repeats):
        _sync(device)
        start = time.perf_counter()
        with torch.autocast("cuda", enabled=amp):
            for k in range(0, len(inputs), batch_size):
                model(inputs[k : k + batch_size])
        _sync(device)
        if i >= warmup:
            rates.append(len(inputs) / (time.perf_counter() - start))
    return statistics.median(rates)


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
