"""Random-number-generator state as a checkpointable, so ``--resume`` continues the same stream.

torch, numpy and Python RNGs drive proposal sampling and (with ``DATALOADER.NUM_WORKERS=0``)
augmentation. Their states are stored as tensors and plain Python types, so checkpoints still
load with ``torch.load(weights_only=True)``.
"""

import contextlib
import functools
import random

import numpy as np
import torch


class RNGState:
    """``state_dict``/``load_state_dict`` over the process's global RNGs."""

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": str(kind),
                "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            },
            "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict):
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])


def stream_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed derived from ``seed`` and ``keys`` (e.g. rank, step): distinct streams for
    distinct keys, the same for the same ones (numpy's ``SeedSequence``)."""
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1)[0])


def seed_all(seed: int) -> None:
    """torch's, numpy's and Python's global generators seeded with ``seed`` (32-bit).

    Not detectron2's ``seed_all_rng``: that one also writes ``PYTHONHASHSEED`` into the
    environment, which :func:`private_rng` (once per training step) must not leave behind.
    """
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@contextlib.contextmanager
def restored_rng():
    """The global RNGs are after the block as they were before it."""
    state = RNGState().state_dict()
    try:
        yield
    finally:
        RNGState().load_state_dict(state)


@contextlib.contextmanager
def private_rng(seed: int):
    """Inside the block the global RNGs are seeded with ``seed``; after it they are as before.

    What the block draws then depends on ``seed`` only, and what is drawn after it does not
    depend on the block (:class:`~dualalign.data.build.PairedDataLoader` draws the unlabelled
    batches so, so that the labelled stream is the same with or without them).
    """
    with restored_rng():
        seed_all(seed)
        yield


def rng_isolated(fn):
    """``fn`` wrapped so that the global RNGs are the same after it as before it.

    Used for the evaluations and diagnostics run inside training: their test-time augmentation
    draws from numpy's global generator (``ResizeShortestEdge`` picks its size with
    ``np.random.choice`` even for one size), which, with ``DATALOADER.NUM_WORKERS=0``, is the
    generator of the training augmentation. Without this, the weights a run ends with depend on
    how many images were evaluated along the way (measured: three val sizes, three different
    final models), so a longer val set or another ``TEST.EVAL_PERIOD`` changed the experiment.
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with restored_rng():
            return fn(*args, **kwargs)

    return wrapped
