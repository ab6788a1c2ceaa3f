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

# pytest puts this folder on sys.path (no __init__.py here), and mp.spawn passes sys.path on to
# its children, which unpickle their main function from distributed_workers by name.
import distributed_workers as workers
from dualalign_testing import INSTANT_TEST, quick_schedule

from dualalign.data.synthetic import generate_dataset
from dualalign.engine.launch import dist_timeout, launch
from dualalign.utils.paths import repo_root

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = quick_schedule(INSTANT_TEST)
SBATCH = os.path.join(repo_root(), "scripts", "slurm", "train_2nodes.sbatch")


def child_env():
    """The environment of a torchrun command: distributed_workers, run as a script there, finds
    dualalign_testing on PYTHONPATH."""
    return dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
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
        "MODEL.RPN.POST_NMS_TOPK_TRAIN",
        "200",
        "DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE",
        "32",
        "SOLVER.MAX_ITER",
        str(max_iter),
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
    config = quick_schedule("dualalign_noproposal_R18_instant_test")
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


def _torchrun_two(tmp_path, timeout, *argv):
    """``torchrun`` of ``argv`` (a script and its arguments) as two local processes."""
    cmd = _torchrun() + [
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"127.0.0.1:{_free_port()}",
        *argv,
    ]
    return subprocess.run(
        cmd, cwd=str(tmp_path), env=child_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.timeout(200)
def test_torchrun_two_processes(tiny_data, tmp_path):
    train_net = os.path.join(repo_root(), "train_net.py")
    opts = train_opts(tiny_data, tmp_path, 2)
    proc = _torchrun_two(tmp_path, 180, train_net, "--config-file", CONFIG, *opts)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (tmp_path / "model_final.pth").is_file()
    assert (tmp_path / "log.txt.rank1").is_file(), "the second process did not set itself up"


@pytest.mark.timeout(120)
def test_torchrun_failure_on_one_rank_ends_every_rank(tiny_data, tmp_path):
    workers_py = os.path.join(HERE, "distributed_workers.py")
    opts = train_opts(tiny_data, tmp_path, 50)
    proc = _torchrun_two(tmp_path, 110, workers_py, "fail", "--config-file", CONFIG, *opts)
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
