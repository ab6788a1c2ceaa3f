"""``EMATeacher``: a frozen copy of the student's networks that starts late and follows by EMA.

* Start. Until ``DUALALIGN.TEACHER.START_ITER`` there is no teacher: the method adds no
  unsupervised term and no EMA runs. At that iteration the teacher becomes an exact copy of the
  student (parameters and buffers), then follows it by EMA. With ``START_ITER 0`` the copy is the
  network as built and loaded: from a checkpoint (``MODEL.WEIGHTS``) the teacher is that
  checkpoint. A teacher averaged from random weights (the Mean Teacher reference's warm-up
  ``min(decay, 1 - 1/(k+1))`` from iteration 0) is the mean of every student since random
  init in a run of a few hundred steps, which is why the start is explicit and the warm-up gone.
* EMA (:func:`ema_update_`): ``teacher = a * teacher + (1 - a) * student`` with the constant
  ``a = DUALALIGN.TEACHER.EMA_DECAY`` after the copy.
* Buffers: floating-point buffers (BN running mean and variance) follow the same EMA as the
  parameters, so that the teacher's statistics are the average of the statistics that went with
  the students it averages (a copy would pair averaged weights with the last student's
  statistics; keeping its own would pair them with the statistics at the start). Integer
  buffers (``num_batches_tracked``) are copied. FrozenBN buffers are constants: EMA keeps them.
* The teacher is always in eval mode and its parameters have ``requires_grad=False``: neither
  the optimizer nor DDP sees them, but they are in ``state_dict()`` under ``teacher.``, with the
  ``started`` flag, so a checkpoint restores both networks and where the schedule stands.
"""

import copy
from typing import Dict, Iterable, List

import torch
from torch import nn

__all__ = ["EMATeacher", "TEACHER_PREFIX", "ema_update_", "fill_missing_teacher"]

# The attribute name of the teacher in its model, and so its state_dict prefix.
TEACHER_PREFIX = "teacher."


@torch.no_grad()
def ema_update_(teacher: List[torch.Tensor], student: List[torch.Tensor], decay: float) -> None:
    """In place: ``t = decay * t + (1 - decay) * s`` for floating tensors, ``t = s`` otherwise.

    Args:
        teacher, student: aligned lists of tensors of equal shapes (parameters or buffers).
        decay: EMA decay ``a`` in [0, 1).
    """
    floats = [(t, s) for t, s in zip(teacher, student) if t.is_floating_point()]
    others = [(t, s) for t, s in zip(teacher, student) if not t.is_floating_point()]
    if floats:
        t_f, s_f = [t for t, _ in floats], [s.detach() for _, s in floats]
        torch._foreach_mul_(t_f, decay)
        torch._foreach_add_(t_f, s_f, alpha=1.0 - decay)
    for t, s in others:
        t.copy_(s)


class EMATeacher(nn.ModuleDict):
    """Frozen copies of named student modules (``teacher[name]``), see the module docstring.

    Args:
        student: ``{name: module}`` of the student's networks to copy (e.g. backbone, RPN, ROI
            heads). The teacher's ``state_dict`` keys mirror theirs.
        decay: EMA decay after the copy.
        start_iter: iteration at which the teacher is copied from the student.
    """

    def __init__(self, student: Dict[str, nn.Module], decay: float, start_iter: int = 0):
        super().__init__({name: copy.deepcopy(m) for name, m in student.items()})
        self.requires_grad_(False)
        self.decay = float(decay)
        self.start_iter = int(start_iter)
        # A copy of the student as built exists already: with start 0 it is the copy.
        self.register_buffer("started", torch.tensor(self.start_iter == 0))
        self._started = self.start_iter == 0  # host copy: reading it costs no device sync
        super().train(False)

    @property
    def is_started(self) -> bool:
        """Whether the teacher exists yet (copied from the student)."""
        return self._started

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._started = bool(self.started)

    def train(self, mode: bool = True):
        """The teacher stays in eval mode (its BN uses its own statistics)."""
        return super().train(False)

    @staticmethod
    def _tensors(modules: Iterable[nn.Module]):
        params, bufs = [], []
        for m in modules:
            params.extend(m.parameters())
            bufs.extend(m.buffers())
        return params, bufs

    def _pairs(self, student: Dict[str, nn.Module]):
        names = list(self.keys())
        t_params, t_bufs = self._tensors(self[n] for n in names)
        s_params, s_bufs = self._tensors(student[n] for n in names)
        return t_params + t_bufs, s_params + s_bufs

    @torch.no_grad()
    def start_if_due(self, iteration: int, student: Dict[str, nn.Module]) -> None:
        """Before the step of ``iteration``: copy the student when the start is reached."""
        if not self._started and iteration >= self.start_iter:
            teacher, stud = self._pairs(student)
            ema_update_(teacher, stud, 0.0)  # decay 0 is a copy of every tensor
            self.started.fill_(True)
            self._started = True

    @torch.no_grad()
    def follow(self, student: Dict[str, nn.Module]) -> None:
        """After the optimizer step: EMA of the student, once started."""
        if self._started:
            teacher, stud = self._pairs(student)
            ema_update_(teacher, stud, self.decay)


def fill_missing_teacher(module, state_dict, prefix, *args):
    """``load_state_dict`` pre-hook of a model with ``module.teacher``: a checkpoint without
    ``teacher.*`` entries (ImageNet, a supervised run) loads its student weights into both, so
    the teacher is a copy of that checkpoint."""
    teacher_prefix = prefix + TEACHER_PREFIX
    if any(k.startswith(teacher_prefix) for k in state_dict):
        return
    parts = set(module.teacher.keys())
    for k in [k for k in state_dict if k.startswith(prefix)]:
        rest = k[len(prefix) :]
        if rest.split(".")[0] in parts:
            state_dict[teacher_prefix + rest] = state_dict[k]
    # With a later start the copy made now is provisional: the student is copied again then.
    state_dict[teacher_prefix + "started"] = torch.tensor(module.teacher.start_iter == 0)
