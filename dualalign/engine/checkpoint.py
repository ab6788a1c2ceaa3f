"""Checkpoints that are written atomically and loaded without unpickling code.

* ``save`` writes ``model_XXXX.pth`` to a temp file, fsyncs it and renames it into place; the
  ``last_checkpoint`` tag is updated the same way, and only after the checkpoint is complete. A
  ``kill -9`` at any moment leaves the previous checkpoint and tag loadable.
* Our own ``.pth`` files are loaded with ``torch.load(weights_only=True)``: they hold tensors and
  plain Python types only. Model-zoo ``.pkl`` files are pickles and are only read from a path
  the user named (``MODEL.WEIGHTS``); a checkpoint is code and must be trusted.
* ``detectron2://`` model-zoo URLs need internet; when the download fails the error says so.
* With several processes, every rank's RNG state (the ``rng`` checkpointable) is gathered into
  ``rng_per_rank`` at each save, and on load each rank takes its own back (rank 0's ``rng`` is
  kept for single-process loads and for a resume with another number of processes).
"""

import logging
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils import comm
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts

from ..modeling.teacher import TEACHER_PREFIX, EMATeacher
from ..utils.atomic import atomic_open

logger = logging.getLogger(__name__)

REMOTE_PREFIXES = ("detectron2://", "http://", "https://")


class WeightsNotFoundError(FileNotFoundError):
    """MODEL.WEIGHTS names nothing that can be read here."""


class AtomicCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with atomic saves and safe loading (see module docstring)."""

    def save(self, name: str, **kwargs):
        # A collective: every rank calls save at the same step (PeriodicCheckpointer does).
        rng_per_rank = self._gather_rng_states()
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        if rng_per_rank is not None:
            data["rng_per_rank"] = rng_per_rank
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        save_file = os.path.join(self.save_dir, f"{name}.pth")
        logger.info(f"Saving checkpoint to {save_file}")
        with atomic_open(save_file, "wb") as f:
            torch.save(data, f)
        self.tag_last_checkpoint(os.path.basename(save_file))

    def tag_last_checkpoint(self, last_filename_basename: str):
        with atomic_open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)

    def last_checkpoint_path(self):
        """Path of the newest complete checkpoint, or None."""
        return self.get_checkpoint_file() if self.has_checkpoint() else None

    def load(self, path, checkpointables=None):
        if path and path.startswith(REMOTE_PREFIXES):
            try:
                return super().load(path, checkpointables)
            except (OSError, RuntimeError, ValueError) as e:
                raise WeightsNotFoundError(
                    f"MODEL.WEIGHTS = {path}: could not download it ({type(e).__name__}: {e}). "
                    "Model-zoo weights need internet access; download the file on a machine that "
                    "has it and set MODEL.WEIGHTS to the local .pkl/.pth path."
                ) from e
        if path and not os.path.isfile(path):
            raise WeightsNotFoundError(
                f"MODEL.WEIGHTS = {path}: no such file. Give a local .pth/.pkl checkpoint, a "
                "detectron2:// model-zoo URL, or an empty string for random initialisation."
            )
        checkpoint = super().load(path, checkpointables)
        self._restore_own_rng(checkpoint.pop("rng_per_rank", None))
        return checkpoint

    def _gather_rng_states(self):
        if comm.get_world_size() == 1 or "rng" not in self.checkpointables:
            return None
        return comm.all_gather(self.checkpointables["rng"].state_dict())

    def _restore_own_rng(self, rng_per_rank):
        if rng_per_rank is None or "rng" not in self.checkpointables:
            return
        world, rank = comm.get_world_size(), comm.get_rank()
        if len(rng_per_rank) != world:
            logger.warning(
                f"checkpoint holds RNG states of {len(rng_per_rank)} processes, this run has "
                f"{world}: every rank continues from rank 0's state"
            )
            return
        self.checkpointables["rng"].load_state_dict(rng_per_rank[rank])

    def _load_model(self, checkpoint):
        # A model with an EMA teacher (Mean Teacher) has every student name twice; detectron2's
        # suffix matching of model-zoo .pkl names then refuses to pick one. Match the student's
        # names only; the model copies the student into the teacher when the teacher is absent.
        has_teacher = isinstance(getattr(self.model, "teacher", None), EMATeacher)
        if has_teacher and checkpoint.get("matching_heuristics", False):
            prefix = TEACHER_PREFIX
            self._convert_ndarray_to_tensor(checkpoint["model"])
            student = {k: v for k, v in self.model.state_dict().items() if not k.startswith(prefix)}
            checkpoint["model"] = align_and_update_state_dicts(
                student, checkpoint["model"], c2_conversion=checkpoint.get("__author__") == "Caffe2"
            )
            checkpoint["matching_heuristics"] = False
        return super()._load_model(checkpoint)

    def _load_file(self, filename: str):
        if filename.endswith(".pth"):
            # Our checkpoints: tensors and plain types only, so no code is unpickled.
            loaded = torch.load(filename, map_location="cpu", weights_only=True)
            if "model" not in loaded:
                loaded = {"model": loaded}
            return loaded
        return super()._load_file(filename)
