"""Multi-process training on the CPU (gloo): ``train_net.py --num-gpus 2``, torchrun, SLURM.

The training tests run two real processes on a tiny synthetic set (128 px, R-18-FPN, a few
steps), spawned by ``dualalign.engine.launch`` or by torchrun. The processes get
``OMP_NUM_THREADS=1`` and a 60 s collective timeout, so a test that would otherwise hang fails
within its pytest timeout instead.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from detectron2.engine import default_argument_parser
from torch.multiprocessing import ProcessRaisedException

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # spawned processes unpickle their main function from this folder
    sys.path.insert(0, HERE)

import distributed_workers as workers  # noqa: E402

from dualalign.data.build import ResumableTrainingSampler  # noqa: E402
from dualalign.data.synthetic import generate_dataset  # noqa: E402
from dualalign.engine.launch import dist_timeout, launch  # noqa: E402

REPO_ROOT = workers.REPO_ROOT
CONFIG = os.path.join(REPO_ROOT, "configs", "synthetic", "dualalign_R18_cpu.yaml")
SBATCH = os.path.join(REPO_ROOT, "scripts", "slurm", "train_2nodes.sbatch")
BANK = "roi_heads.memory_bank."

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return generate_dataset(
        str(tmp_path_factory.mktemp("synthetic")),
        seed=0,
        image_size=128,
        num_labeled=8,
        num_unlabeled=8,
        num_val=0,
        num_test=2,
    )


@pytest.fixture(autouse=True)
def _small_cpu_processes(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DUALALIGN_DIST_TIMEOUT_S", "60")
    # The CPU (gloo) path also on a machine with a GPU: the children never see CUDA, and this
    # process does not pick detectron2's NCCL launch.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def train_opts(data, output_dir, max_iter=4, *extra, test=False):
    """Command-line opts of a tiny dual-alignment run on ``data`` (evaluated at the end if
    ``test``)."""
    root = data["image_root"]
    return [
        "DUALALIGN.DATASETS.COCO",
        str([["dd_labeled", data["labeled"], root], ["dd_test", data["test"], root]]),
        "DUALALIGN.DATASETS.UNLABELED",
        str([["dd_unlabeled", data["unlabeled"], root]]),
        "DATASETS.TRAIN",
        "('dd_labeled',)",
        "DATASETS.TEST",
        "('dd_test',)" if test else "()",
        "DUALALIGN.DATASETS.TRAIN_UNLABELED",
        "('dd_unlabeled',)",
        "INPUT.MIN_SIZE_TRAIN",
        "(128,)",
        "INPUT.MAX_SIZE_TRAIN",
        "128",
        "INPUT.MIN_SIZE_TEST",
        "128",
        "INPUT.MAX_SIZE_TEST",
        "128",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN",
        "200",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        "64",
        "DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE",
        "32",
        "SOLVER.MAX_ITER",
        str(max_iter),
        "SOLVER.WARMUP_ITERS",
        "1",
        "SOLVER.CHECKPOINT_PERIOD",
        "1000",
        "DUALALIGN.RAMPUP_ITERS",
        "0",
        *extra,
        "OUTPUT_DIR",
        str(output_dir),
    ]


def parse(opts, num_gpus=2, config=CONFIG):
    argv = ["--config-file", config, "--num-gpus", str(num_gpus), *opts]
    return default_argument_parser().parse_args(argv)


def test_two_process_dual_alignment_keeps_ranks_identical(tiny_data, tmp_path):
    args = parse(train_opts(tiny_data, tmp_path, test=True))
    launch(workers.main_saving_state, 2, dist_url="auto", args=(args,))

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys()
    # Parameters are all-reduced every step; BN running stats are per rank (broadcast_buffers
    # False, as in detectron2), so only parameters and the memory bank must match exactly.
    params = [
        k
        for k in r0
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        and not k.startswith(BANK)
    ]
    assert len(params) > 50
    differing = [k for k in params if not torch.equal(r0[k], r1[k])]
    assert not differing, f"parameters differ between ranks: {differing[:5]}"
    for name in ("rows", "labels", "ptr", "count"):
        assert torch.equal(r0[BANK + name], r1[BANK + name]), f"memory bank {name} differs"
    # 4 steps x 2 ranks pushed labelled prototypes (one row per class present in a rank's batch).
    assert int(r0[BANK + "count"]) >= 4
    assert int((r0[BANK + "labels"] >= 0).sum()) == int(r0[BANK + "count"])
    # Every rank's RNG state is in the checkpoint (ranks are seeded SEED + rank, so they differ).
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    rng = final["rng_per_rank"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])

    with open(tmp_path / "metrics.json") as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    last = [m for m in metrics if "total_loss" in m][-1]  # the evaluation adds a later line
    assert last["iteration"] == 3
    for key in ("loss_pml_l", "loss_pmb_l", "loss_pml_u", "loss_pmb_u", "total_loss"):
        assert key in last, f"{key} missing from metrics.json: {sorted(last)}"
    losses = {k: v for k, v in last.items() if k.startswith("loss_") or k == "total_loss"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    # Only rank 0 writes metrics and checkpoints; it evaluates the predictions of both ranks.
    assert (tmp_path / "model_final.pth").is_file()
    assert (tmp_path / "inference" / "dd_test" / "range_ap.json").is_file()


def test_two_process_run_without_proposal_alignment(tiny_data, tmp_path):
    config = os.path.join(os.path.dirname(CONFIG), "dualalign_noproposal_R18_cpu.yaml")
    args = parse(train_opts(tiny_data, tmp_path, 3), config=config)
    launch(workers.main_saving_state, 2, dist_url="auto", args=(args,))
    assert (tmp_path / "rank1.pt").is_file()


def test_indivisible_batch_is_refused_in_every_process(tiny_data, tmp_path):
    args = parse(train_opts(tiny_data, tmp_path, 4, "SOLVER.IMS_PER_BATCH", "3"))
    with pytest.raises(ProcessRaisedException) as info:
        launch(workers.main_saving_state, 2, dist_url="auto", args=(args,))
    text = str(info.value)
    assert "ValueError" in text and "SOLVER.IMS_PER_BATCH = 3" in text
    assert "multiple of 2" in text
    assert not (tmp_path / "rank0.pt").exists()


@pytest.mark.timeout(120)
def test_failure_on_one_rank_ends_every_rank(tiny_data, tmp_path):
    args = parse(train_opts(tiny_data, tmp_path, 50))
    with pytest.raises(ProcessRaisedException) as info:
        launch(workers.main_failing_on_rank1, 2, dist_url="auto", args=(args,))
    assert workers.FAIL_MESSAGE in str(info.value)
    for rank in (0, 1):
        pid = int((tmp_path / f"pid{rank}").read_text())
        with pytest.raises(ProcessLookupError):  # ended and reaped by mp.spawn
            os.kill(pid, 0)


def test_dist_timeout_from_environment(monkeypatch):
    assert dist_timeout().total_seconds() == 60
    monkeypatch.delenv("DUALALIGN_DIST_TIMEOUT_S")
    assert dist_timeout().total_seconds() == 1800
    monkeypatch.setenv("DUALALIGN_DIST_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="DUALALIGN_DIST_TIMEOUT_S"):
        dist_timeout()


def _take(iterable, n):
    it = iter(iterable)
    return [next(it) for _ in range(n)]


def _sampler(monkeypatch, rank, world, **kwargs):
    from detectron2.utils import comm

    monkeypatch.setattr(comm, "get_rank", lambda: rank)
    monkeypatch.setattr(comm, "get_world_size", lambda: world)
    return ResumableTrainingSampler(20, shuffle=True, seed=3, **kwargs)


def test_sampler_shards_are_disjoint_and_resumable(monkeypatch):
    k = 10  # 2K = one full permutation of the 20 indices
    single = _take(_sampler(monkeypatch, 0, 1), 4 * k)
    shards = [_take(_sampler(monkeypatch, r, 2), 2 * k) for r in (0, 1)]
    assert set(shards[0][:k]).isdisjoint(shards[1][:k])
    assert sorted(shards[0][:k] + shards[1][:k]) == sorted(single[: 2 * k]) == list(range(20))
    # Rank r takes every second index of the single-process stream from r on, epoch after epoch.
    assert shards[0] == single[0::2] and shards[1] == single[1::2]
    for start in (1, 7, 13):
        for r in (0, 1):
            resumed = _take(_sampler(monkeypatch, r, 2, start=start), 5)
            assert resumed == shards[r][start : start + 5]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun():
    exe = os.path.join(os.path.dirname(sys.executable), "torchrun")
    if os.access(exe, os.X_OK):
        return [exe]
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError as e:
        pytest.skip(
            f"torchrun not found next to {sys.executable} and torch.distributed.run "
            f"cannot be imported ({e})"
        )
    return [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.timeout(200)
def test_torchrun_two_processes(tiny_data, tmp_path):
    cmd = _torchrun() + [
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"127.0.0.1:{_free_port()}",
        os.path.join(REPO_ROOT, "train_net.py"),
        "--config-file",
        CONFIG,
        *train_opts(tiny_data, tmp_path, 2),
    ]
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    proc = subprocess.run(
        cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (tmp_path / "model_final.pth").is_file()
    assert (tmp_path / "log.txt.rank1").is_file(), "the second process did not set itself up"


@pytest.mark.timeout(120)
def test_torchrun_failure_on_one_rank_ends_every_rank(tiny_data, tmp_path):
    cmd = _torchrun() + [
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"127.0.0.1:{_free_port()}",
        os.path.join(HERE, "distributed_workers.py"),
        "fail",
        "--config-file",
        CONFIG,
        *train_opts(tiny_data, tmp_path, 50),
    ]
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    proc = subprocess.run(
        cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=110
    )
    assert proc.returncode != 0
    assert workers.FAIL_MESSAGE in proc.stdout + proc.stderr
    for rank in (0, 1):  # torchrun's agent ended the healthy rank too; no orphan is left
        pid = int((tmp_path / f"pid{rank}").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_slurm_example_is_valid_bash():
    assert os.path.isfile(SBATCH)
    proc = subprocess.run(["bash", "-n", SBATCH], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = open(SBATCH).read()
    assert "scontrol show hostnames" in text and "torchrun" in text and "srun" in text
