#!/usr/bin/env python
"""Train or evaluate dualalign models (and the supervised / CSD / Mean Teacher baselines).

python train_net.py --config-file configs/synthetic/dualalign_R18_cpu.yaml
python train_net.py --config-file CFG --num-gpus 2
python train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
torchrun --nproc_per_node 2 train_net.py --config-file CFG
"""

import logging

from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import dualalign  # noqa: F401  (registers the models)
from dualalign.engine.launch import launch
from dualalign.engine.setup import setup
from dualalign.engine.trainer import Trainer

logger = logging.getLogger("dualalign")


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        Trainer.build_checkpointer(model, cfg).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    # The final evaluation (TEST.EVAL_PERIOD or end of training); None without test sets.
    return getattr(trainer, "_last_eval_results", None)


def invoke_main():
    args = default_argument_parser().parse_args()
    logger.info(f"Command line arguments: {args}")
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
