"""Test-only main functions for the spawned processes of ``test_distributed.py``.

They live in a plain module (not a test module) so the spawned processes can unpickle them by
name: pytest puts this folder on ``sys.path``, which ``mp.spawn`` passes on to its children.
"""

import os
import sys

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from dualalign_testing import load_train_net

from dualalign.engine.semi_trainer import unwrap

train_net = load_train_net()

FAIL_RANK, FAIL_ITER = 1, 2
FAIL_MESSAGE = "injected failure on rank 1 at iteration 2"


def _output_dir(args) -> str:
    return args.opts[args.opts.index("OUTPUT_DIR") + 1]


def main_saving_state(args):
    """``train_net.main``, then every rank saves its model state to ``OUTPUT_DIR/rank{r}.pt``."""
    original_train = train_net.Trainer.train

    def train(self):
        result = original_train(self)
        state = {k: v.detach().clone() for k, v in unwrap(self.model).state_dict().items()}
        torch.save(state, os.path.join(self.cfg.OUTPUT_DIR, f"rank{comm.get_rank()}.pt"))
        return result

    train_net.Trainer.train = train
    return train_net.main(args)


class _FailOnRank(HookBase):
    def after_step(self):
        if comm.get_rank() == FAIL_RANK and self.trainer.iter == FAIL_ITER:
            raise RuntimeError(FAIL_MESSAGE)


def main_failing_on_rank1(args):
    """``train_net.main`` where rank 1 raises after iteration 2; each rank writes its pid."""
    out = _output_dir(args)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"pid{comm.get_rank()}"), "w") as f:
        f.write(str(os.getpid()))
    original_build_hooks = train_net.Trainer.build_hooks

    def build_hooks(self):
        return original_build_hooks(self) + [_FailOnRank()]

    train_net.Trainer.build_hooks = build_hooks
    return train_net.main(args)


if __name__ == "__main__":
    # ``torchrun ... distributed_workers.py fail --config-file CFG KEY VALUE ...``: the failing
    # run through train_net's own launch path (env://).
    from detectron2.engine import default_argument_parser

    from dualalign.engine.launch import launch

    mode, argv = sys.argv[1], sys.argv[2:]
    mains = {"fail": main_failing_on_rank1, "train": main_saving_state}
    args = default_argument_parser().parse_args(argv)
    launch(mains[mode], args.num_gpus, dist_url=args.dist_url, args=(args,))
