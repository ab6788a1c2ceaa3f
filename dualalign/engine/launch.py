"""Start 1..N training processes: detectron2's ``launch`` on CUDA, gloo on CPU, or torchrun.

detectron2 v0.6's ``launch`` asserts CUDA and uses NCCL only. This thin path keeps its behaviour
on GPUs (it simply calls it) and adds two cases, both setting up detectron2's ``comm`` exactly
as ``launch`` does, including ``comm._LOCAL_PROCESS_GROUP``:

* no CUDA and ``--num-gpus N > 1``: N processes on the CPU with the gloo backend;
* ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` set): ``env://``.

When one process fails, ``torch.multiprocessing.spawn`` terminates the others, and collective
calls time out after ``timeout``, so a failure never leaves ranks hanging.
"""
import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def torchrun_env() -> bool:
    """Whether this process was started by torchrun (or another env:// launcher)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def _setup_local_group(world_size: int, procs_per_machine: int, machine_rank: int):
    # Same construction as detectron2.engine.launch._distributed_worker.
    assert comm._LOCAL_PROCESS_GROUP is None
    for i in range(world_size // procs_per_machine):
        ranks = list(range(i * procs_per_machine, (i + 1) * procs_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _worker(local_rank, main_func, world_size, procs_per_machine, machine_rank, url, args, timeout):
    rank = machine_rank * procs_per_machine + local_rank
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, init_method=url, world_size=world_size, rank=rank,
                            timeout=timeout)
    _setup_local_group(world_size, procs_per_machine, machine_rank)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    comm.synchronize()
    main_func(*args)


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None,
           args=(), timeout=DEFAULT_TIMEOUT):
    """Run ``main_func(*args)`` in every process of the job (see the module docstring)."""
    if torchrun_env() and int(os.environ["WORLD_SIZE"]) > 1:
        world_size = int(os.environ["WORLD_SIZE"])
        per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, init_method="env://", timeout=timeout)
        _setup_local_group(world_size, per_machine, rank // per_machine)
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        comm.synchronize()
        return main_func(*args)
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if torch.cuda.is_available():
        return d2_launch(main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url,
                         args=args, timeout=timeout)
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("--dist-url must name a reachable tcp://HOST:PORT on several machines")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    logger.info(f"No CUDA: starting {num_gpus_per_machine} CPU processes with gloo at {dist_url}")
    mp.spawn(
        _worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )
