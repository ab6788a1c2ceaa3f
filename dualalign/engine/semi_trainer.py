"""``SemiSupervisedTrainer``: the training step of every method, labelled + unlabelled.

Each step: (1) fetch the paired batch, (2) the model's pre-step hook (teacher start) and
lambda(t), (3) forward, (4) the weighted total, backward and optimizer step, (5) the model's
post-step update (memory bank push, EMA teacher). The method itself lives in the model, a
:class:`~dualalign.modeling.semi_rcnn.SemiSupervisedRCNN`: it names its unsupervised loss terms
(``semi_loss_names``), gives their weight (``semi_loss_weight(iter)``) and implements the hooks.
CSD, Mean Teacher and dual alignment share this trainer; supervised training uses it with a
labelled-only loader and a plain ``GeneralizedRCNN``, which has no unsupervised part.
"""

import logging
import time
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch.nn.parallel import DistributedDataParallel

from ..modeling.semi_rcnn import SemiSupervisedRCNN
from .diagnostics import diagnostic_parts, gradient_norm_ratio

logger = logging.getLogger(__name__)


class _SupervisedOnly:
    """The unsupervised part of a model that has none (plain ``GeneralizedRCNN``)."""

    semi_loss_names = ()

    def semi_loss_weight(self, iteration: int) -> float:
        return 0.0

    def before_step(self, iteration: int) -> None:
        pass

    def after_step(self) -> None:
        pass

    def step_statistics(self) -> Dict[str, torch.Tensor]:
        return {}


def weighted_total(terms: Dict[str, Any], semi_names, weight: float):
    """Eq. 9's total: the supervised terms plus ``weight`` x the unsupervised ones (tensors or
    floats alike, so the optimised loss and the logged one are the same sum)."""
    return sum(v * weight if k in semi_names else v for k, v in terms.items())


def unwrap(model):
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


class SemiSupervisedTrainer(SimpleTrainer):
    """SimpleTrainer over ``(labeled, unlabeled)`` batches with weighted unsupervised terms.

    Args:
        model, data_loader, optimizer: as for ``SimpleTrainer``; ``data_loader`` yields pairs
            when ``paired`` is True, plain labelled batches otherwise.
        paired: whether batches are ``(labeled, unlabeled)`` pairs.
        amp: mixed precision on CUDA (autocast fp16 + GradScaler), like ``AMPTrainer``.
        max_bad_steps: non-finite-loss steps skipped (no update) before the run stops.
        last_checkpoint: callable returning the newest checkpoint path, for error messages.
        grad_share_period: every this many steps, log the unsupervised / supervised gradient
            norm ratio per part (:mod:`.diagnostics`); 0 = never. Single-process runs only.
    """

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        *,
        paired: bool = True,
        amp: bool = False,
        max_bad_steps: int = 0,
        last_checkpoint: Optional[Callable[[], Optional[str]]] = None,
        grad_share_period: int = 0,
    ):
        super().__init__(model, data_loader, optimizer)
        self.paired = paired
        self.amp = amp and torch.cuda.is_available()
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.max_bad_steps = max_bad_steps
        self.num_bad_steps = 0
        self._last_terms = {}
        self.last_checkpoint = last_checkpoint or (lambda: None)
        core = unwrap(model)
        self.method = core if isinstance(core, SemiSupervisedRCNN) else _SupervisedOnly()
        self.grad_share_period = grad_share_period if comm.get_world_size() == 1 else 0
        self._diagnostic_parts = diagnostic_parts(core) if self.grad_share_period else {}

    def run_step(self):
        assert self.model.training, "[SemiSupervisedTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        labeled, unlabeled = data if self.paired else (data, None)
        data_time = time.perf_counter() - start

        method = self.method
        method.before_step(self.iter)
        weight = method.semi_loss_weight(self.iter)
        semi_names = set(method.semi_loss_names)
        try:
            with torch.autocast("cuda", enabled=self.amp):
                if unlabeled is None:
                    loss_dict = self.model(labeled)
                else:
                    loss_dict = self.model(labeled, unlabeled)
                losses = weighted_total(loss_dict, semi_names, weight)
                diagnostics = self._gradient_diagnostics(loss_dict, semi_names, weight)
        except FloatingPointError as e:
            # detectron2's RPN raises this itself once the weights hold Inf/NaN (no losses yet).
            where = self.last_checkpoint() or "none written yet"
            listed = ", ".join(f"{k}={v:.6g}" for k, v in sorted(self._last_terms.items()))
            raise FloatingPointError(
                f"{e} At iteration {self.iter}; loss terms of the previous step: {listed}. "
                f"Last good checkpoint: {where}. Lower SOLVER.BASE_LR or the loss weights."
            ) from e
        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()  # harmless when a term is not finite: then no step is taken

        # The step's only host-device sync: loss terms and the model's statistics together.
        stats = {**method.step_statistics(), **diagnostics}
        values = self._to_host({**loss_dict, **stats})
        terms = {k: values[k] for k in loss_dict}
        if not self._all_finite(weighted_total(terms, semi_names, weight)):
            self.optimizer.zero_grad()
            self._bad_step(terms)
            return
        self._last_terms = terms
        self._write_semi_metrics(
            terms, {k: values[k] for k in stats}, semi_names, weight, data_time
        )
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        method.after_step()

    def _gradient_diagnostics(self, loss_dict, semi_names, weight: float):
        """The gradient-norm ratios of :mod:`.diagnostics`, on the steps they are due."""
        due = self.grad_share_period and self.iter % self.grad_share_period == 0
        if not due or not semi_names & loss_dict.keys():
            return {}
        supervised = sum(v for k, v in loss_dict.items() if k not in semi_names)
        unsupervised = sum(v * weight for k, v in loss_dict.items() if k in semi_names)
        return gradient_norm_ratio(supervised, unsupervised, self._diagnostic_parts)

    @staticmethod
    def _to_host(tensors: Dict[str, torch.Tensor]) -> Dict[str, float]:
        if not tensors:
            return {}
        flat = torch.stack(
            [torch.as_tensor(v).detach().float().reshape(()) for v in tensors.values()]
        )
        return dict(zip(tensors.keys(), flat.cpu().tolist()))

    def _all_finite(self, total: float) -> bool:
        finite = float(np.isfinite(total))
        if comm.get_world_size() > 1:
            # All ranks must agree, or a rank skipping the step would hang the others in DDP.
            flag = torch.tensor(finite, device=self._comm_device())
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = float(flag.item())
        return finite > 0

    @staticmethod
    def _comm_device():
        return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")

    def _bad_step(self, terms: Dict[str, float]):
        self.num_bad_steps += 1
        listed = ", ".join(f"{k}={v:.6g}" for k, v in sorted(terms.items()))
        where = self.last_checkpoint() or "none written yet"
        msg = f"non-finite loss at iteration {self.iter}: {listed}. Last good checkpoint: {where}"
        if self.num_bad_steps > self.max_bad_steps:
            raise FloatingPointError(
                msg + f" ({self.num_bad_steps} bad steps; DUALALIGN.SOLVER.MAX_BAD_STEPS = "
                f"{self.max_bad_steps}). Lower SOLVER.BASE_LR or check the data."
            )
        get_event_storage().put_scalar("bad_steps", self.num_bad_steps, smoothing_hint=False)
        logger.warning(msg + " -- step skipped, no update")

    def _write_semi_metrics(self, terms, stats, semi_names, weight: float, data_time: float):
        """Log every raw term, lambda(t), the weighted total actually optimised, the stats."""
        all_metrics = comm.gather(dict(terms, data_time=data_time))
        if not comm.is_main_process():
            return
        storage = get_event_storage()
        storage.put_scalar("data_time", np.max([m.pop("data_time") for m in all_metrics]))
        means = {k: float(np.mean([m[k] for m in all_metrics])) for k in all_metrics[0]}
        storage.put_scalar("total_loss", weighted_total(means, semi_names, weight))
        storage.put_scalar("lambda", weight, smoothing_hint=False)
        if means:
            storage.put_scalars(**means)
        if stats:  # rank 0's pseudo-label and bank statistics
            storage.put_scalars(smoothing_hint=False, **stats)

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        ret["num_bad_steps"] = self.num_bad_steps
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
        self.num_bad_steps = state_dict.get("num_bad_steps", 0)
