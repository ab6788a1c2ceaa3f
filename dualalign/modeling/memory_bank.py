"""The memory bank of labelled prototypes (P_M of Eq. 7-8)."""

import logging

import torch
import torch.distributed as dist
from detectron2.utils import comm
from torch import nn

from .metric_losses import class_prototypes

__all__ = ["PrototypeMemoryBank"]


class PrototypeMemoryBank(nn.Module):
    """A FIFO ring of detached labelled prototype rows (P_gg of past steps), each with its class.

    Everything lives in buffers (``rows``, ``labels``, ``ptr``, ``count``, and for the age of
    the rows ``pushed_at`` and ``pushes``: the push, i.e. the step, that wrote each row and the
    number of pushes so far), so the bank follows
    the model across devices with ``.to()`` and travels in its ``state_dict`` as plain tensors
    (loadable with ``torch.load(weights_only=True)``). Empty slots have label -1.

    Under DDP every rank pushes the all-gathered rows of all ranks in rank order, so the banks
    of all ranks stay identical (docs/METHOD_NOTES.md).

    Note: ``len(bank)`` is the number of filled rows, but an empty bank is still truthy, as any
    other module is.
    """

    def __init__(self, size, dim, num_classes):
        """
        Args:
            size (int): S, the capacity in rows (DUALALIGN.MEMORY.SIZE; the paper uses 1024).
            dim (int): D, the metric-space dimension.
            num_classes (int): C, the foreground classes.
        """
        super().__init__()
        if size <= 0:
            raise ValueError(f"PrototypeMemoryBank: size must be > 0 rows, got {size}")
        self.num_classes = num_classes
        self.register_buffer("rows", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("pushed_at", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("pushes", torch.zeros((), dtype=torch.long))

    @property
    def size(self):
        return self.rows.shape[0]

    @property
    def dim(self):
        return self.rows.shape[1]

    def __len__(self):
        return int(self.count)

    def __bool__(self):
        return True

    @torch.no_grad()
    def push(self, prototypes, labels):
        """Append rows in FIFO order, overwriting the oldest ones once the bank is full.

        Must be called on every rank under DDP (it is a collective then), also with K == 0.

        Args:
            prototypes (Tensor[K, D]): rows to store (detached here).
            labels (Tensor[K]): long class of each row, in [0, C).
        """
        if prototypes.dim() != 2 or prototypes.shape[1] != self.dim:
            raise ValueError(
                f"PrototypeMemoryBank.push: prototypes must be [K, {self.dim}], "
                f"got {tuple(prototypes.shape)}"
            )
        if labels.shape != prototypes.shape[:1]:
            raise ValueError(
                f"PrototypeMemoryBank.push: labels must be [{prototypes.shape[0]}], "
                f"got {tuple(labels.shape)}"
            )
        rows = prototypes.detach().to(device=self.rows.device, dtype=self.rows.dtype)
        labels = labels.detach().to(device=self.labels.device, dtype=torch.long)
        rows, labels = self._gather_from_all_ranks(rows, labels)
        k = rows.shape[0]
        self.pushes += 1  # one push per training step, also an empty one
        if k == 0:
            return
        # Checked on the CPU only: on a GPU the check would stall every step on a sync.
        if not labels.is_cuda and (
            bool(labels.min() < 0) or bool(labels.max() >= self.num_classes)
        ):
            raise ValueError(
                f"PrototypeMemoryBank.push: labels must lie in [0, {self.num_classes}), got "
                f"min {int(labels.min())}, max {int(labels.max())}"
            )
        if k > self.size:
            # Only the newest S rows would survive the wrap anyway; writing them alone avoids
            # duplicate indices in one scatter, whose winner is unspecified.
            rows, labels, k = rows[-self.size :], labels[-self.size :], self.size
        index = (self.ptr + torch.arange(k, device=self.rows.device)) % self.size
        self.rows[index] = rows
        self.labels[index] = labels
        self.pushed_at[index] = self.pushes - 1
        self.ptr.copy_((self.ptr + k) % self.size)
        self.count.copy_((self.count + k).clamp(max=self.size))

    @staticmethod
    def _gather_from_all_ranks(rows, labels):
        """Concatenate every rank's rows and labels in rank order (identity without DDP)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return rows, labels
        # comm.all_gather pickles over a gloo group, so CPU tensors of any K per rank work
        # without padding; the payload is a few prototypes per rank.
        gathered = comm.all_gather((rows.cpu(), labels.cpu()))
        all_rows = torch.cat([r for r, _ in gathered]).to(rows.device)
        all_labels = torch.cat([lab for _, lab in gathered]).to(labels.device)
        return all_rows, all_labels

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A bank saved for other classes (fine-tuning with another NUM_CLASSES) or of another
        # size is meaningless here: start empty instead of indexing out of range.
        labels = state_dict.get(prefix + "labels")
        rows = state_dict.get(prefix + "rows")
        fits = (
            labels is not None
            and labels.shape == self.labels.shape
            and int(labels.max()) < self.num_classes
            and (rows is None or rows.shape == self.rows.shape)
        )
        if labels is not None and not fits:
            logging.getLogger(__name__).warning(
                f"{prefix}*: the checkpoint's memory bank does not fit this model (size "
                f"{self.size}, {self.num_classes} classes); starting with an empty bank"
            )
            self.reset()
            for key in ("rows", "labels", "ptr", "count", "pushed_at", "pushes"):
                state_dict[prefix + key] = getattr(self, key).detach().clone()
        elif labels is not None and prefix + "pushed_at" not in state_dict:
            # A bank saved before rows had an age: its rows count as pushed at step 0.
            state_dict[prefix + "pushed_at"] = torch.where(labels >= 0, 0, -1)
            state_dict[prefix + "pushes"] = torch.zeros((), dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def class_means(self):
        """P_M: the per-class mean of the filled rows.

        Returns:
            tuple: ``(P_M, present)`` with P_M (Tensor[C, D]) and present (Tensor[C], bool);
            classes without rows have a 0 row and present False.
        """
        filled = self.labels >= 0
        # Empty slots get weight 0 instead of being indexed out, which would sync the GPU.
        return class_prototypes(
            self.rows, self.labels.clamp_min(0), self.num_classes, weights=filled.to(self.rows)
        )

    def fill_per_class(self):
        """Tensor[C], long: the number of rows of each class in the bank."""
        filled = (self.labels >= 0).long()
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=self.labels.device)
        return counts.index_add(0, self.labels.clamp_min(0), filled)

    def age(self):
        """Tensor[], long: pushes (steps) since the oldest row in the bank was written; 0 when
        empty. With one push per step and a full bank it is about size / rows per step."""
        oldest = torch.where(self.labels >= 0, self.pushed_at, self.pushes).min()
        return self.pushes - oldest

    def reset(self):
        """Empty the bank."""
        self.rows.zero_()
        self.labels.fill_(-1)
        self.ptr.zero_()
        self.count.zero_()
        self.pushed_at.fill_(-1)
        self.pushes.zero_()

    def extra_repr(self):
        return f"num_classes={self.num_classes}, dim={self.dim}, size={self.size}"
