"""Start 1..N training processes: detectron2's ``launch`` on CUDA, gloo on CPU, or torchrun.

detectron2 v0.6's ``launch`` asserts CUDA and uses NCCL only. This thin path keeps its behaviour
on GPUs (it simply calls it) and adds two cases, both setting up detectron2's ``comm`` exactly
as ``launch`` does, including ``comm._LOCAL_PROCESS_GROUP``:

* no CUDA and ``--num-gpus N > 1``: N processes on the CPU with the gloo backend;
* ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` set): ``env://``.
  torchrun decides the number of processes; ``--num-gpus`` is then ignored.

A failure on one rank ends every rank with an error instead of a hang:
``torch.multiprocessing.spawn`` (and torchrun's agent) terminate the other processes when one
fails, and every collective times out after ``DUALALIGN_DIST_TIMEOUT_S`` seconds (default 1800),
which covers a rank that stays alive but stops taking part. (With NCCL, detectron2's extra gloo
group behind ``comm.all_gather`` / ``comm.gather`` keeps torch's default of 30 minutes.)
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

TIMEOUT_ENV = "DUALALIGN_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0


def dist_timeout() -> timedelta:
    """Timeout of every collective: ``$DUALALIGN_DIST_TIMEOUT_S`` seconds, default 1800."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV} = {value!r}: must be a positive number of seconds")
    return timedelta(seconds=seconds)


def torchrun_env() -> bool:
    """Whether this process was started by torchrun (or another env:// launcher)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def _setup_local_group(world_size: int, procs_per_machine: int, machine_rank: int, timeout):
    # Same construction as detectron2.engine.launch._distributed_worker. Every rank must create
    # every group, in the same order (new_group is a collective).
    assert comm._LOCAL_PROCESS_GROUP is None
    if world_size % procs_per_machine != 0:
        raise ValueError(
            f"{world_size} processes cannot be split into machines of {procs_per_machine}; "
            "every machine must run the same number of processes"
        )
    for i in range(world_size // procs_per_machine):
        ranks = list(range(i * procs_per_machine, (i + 1) * procs_per_machine))
        group = dist.new_group(ranks, timeout=timeout)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _limit_cpu_threads(procs_per_machine: int):
    # N processes with one intra-op pool of all cores each oversubscribe the CPU many times over;
    # an explicit OMP_NUM_THREADS (torchrun sets 1) is left alone.
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs_per_machine))


def _run(main_func, args):
    result = main_func(*args)
    # Graceful teardown on success; on an exception the launcher ends the other ranks.
    comm.synchronize()
    dist.destroy_process_group()
    comm._LOCAL_PROCESS_GROUP = None
    comm._get_global_gloo_group.cache_clear()
    return result


def _cpu_worker(
    local_rank, main_func, world_size, procs_per_machine, machine_rank, url, args, timeout
):
    """One CPU process of a ``--num-gpus N`` run (started by ``mp.spawn``)."""
    _limit_cpu_threads(procs_per_machine)
    rank = machine_rank * procs_per_machine + local_rank
    dist.init_process_group(
        "gloo", init_method=url, world_size=world_size, rank=rank, timeout=timeout
    )
    _setup_local_group(world_size, procs_per_machine, machine_rank, timeout)
    comm.synchronize()
    _run(main_func, args)


def _launch_torchrun(main_func, num_gpus_per_machine, args, timeout):
    world_size = int(os.environ["WORLD_SIZE"])
    if world_size == 1:
        return main_func(*args)
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if num_gpus_per_machine not in (1, per_machine):
        logger.warning(
            f"--num-gpus {num_gpus_per_machine} ignored: torchrun started {per_machine} "
            "processes per machine"
        )
    machine_rank = int(os.environ.get("GROUP_RANK", rank // per_machine))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)  # before NCCL init, so rank i never touches GPU 0
    else:
        _limit_cpu_threads(per_machine)
    dist.init_process_group(backend, init_method="env://", timeout=timeout)
    _setup_local_group(world_size, per_machine, machine_rank, timeout)
    comm.synchronize()
    return _run(main_func, args)


def launch(
    main_func,
    num_gpus_per_machine,
    num_machines=1,
    machine_rank=0,
    dist_url=None,
    args=(),
    timeout=None,
):
    """Run ``main_func(*args)`` in every process of the job (see the module docstring).

    Args:
        main_func: a module-level function (it is pickled for spawned processes).
        num_gpus_per_machine: processes per machine (``--num-gpus``); CPU processes when there
            is no CUDA.
        num_machines, machine_rank, dist_url: as for ``detectron2.engine.launch``; ``dist_url``
            None or "auto" picks a free local port (one machine only).
        args: arguments of ``main_func``.
        timeout (timedelta): collective timeout; default from ``$DUALALIGN_DIST_TIMEOUT_S``.

    Returns:
        ``main_func``'s result in a single process (or under torchrun); None after spawning.
    """
    timeout = timeout if timeout is not None else dist_timeout()
    if torchrun_env():
        return _launch_torchrun(main_func, num_gpus_per_machine, args, timeout)
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if torch.cuda.is_available():
        return d2_launch(
            main_func,
            num_gpus_per_machine,
            num_machines,
            machine_rank,
            dist_url,
            args=args,
            timeout=timeout,
        )
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("--dist-url must name a reachable tcp://HOST:PORT on several machines")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    logger.info(
        f"No CUDA: starting {num_gpus_per_machine} CPU processes with gloo at {dist_url} "
        f"(collective timeout {timeout.total_seconds():.0f} s)"
    )
    mp.spawn(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )
