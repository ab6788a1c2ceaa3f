"""Faults while training: NaN losses, kill -9 during a save, kill then --resume, bad images."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng
from dualalign_testing import REPO_ROOT, tiny_opts

from dualalign.data.image_io import ImageReadError
from dualalign.engine.setup import build_cfg
from dualalign.engine.trainer import Trainer

CPU_CFG = os.path.join(REPO_ROOT, "configs", "synthetic", "dualalign_R18_cpu.yaml")
pytestmark = pytest.mark.slow


class NaNAtIteration:
    """Wrap the ROI heads so the classification loss is NaN at the given iterations."""

    def __init__(self, trainer, iterations):
        self.trainer, self.iterations = trainer, set(iterations)
        self.roi_forward = trainer.model.roi_heads.forward
        trainer.model.roi_heads.forward = self

    def __call__(self, *args, **kwargs):
        proposals, losses = self.roi_forward(*args, **kwargs)
        if self.trainer.iter in self.iterations:
            losses["loss_cls"] = losses["loss_cls"] * float("nan")
        return proposals, losses


def test_nan_loss_stops_with_iteration_terms_and_checkpoint(tiny_synthetic, tmp_path):
    opts = tiny_opts(
        tiny_synthetic, tmp_path, "nan", SOLVER__MAX_ITER=6, SOLVER__CHECKPOINT_PERIOD=2
    )
    trainer = Trainer(build_cfg(CPU_CFG, opts))
    trainer.resume_or_load(resume=False)
    NaNAtIteration(trainer, {3})
    with pytest.raises(FloatingPointError) as err:
        trainer.train()
    msg = str(err.value)
    assert "iteration 3" in msg
    for term in ("loss_cls=nan", "loss_box_reg=", "loss_pml_l=", "loss_rpn_cls="):
        assert term in msg
    assert str(tmp_path / "model_0000001.pth") in msg
    assert torch.load(tmp_path / "model_0000001.pth", weights_only=True)["iteration"] == 1


def test_bad_steps_can_be_skipped(tiny_synthetic, tmp_path):
    opts = tiny_opts(
        tiny_synthetic, tmp_path, "skip", SOLVER__MAX_ITER=5, DUALALIGN__SOLVER__MAX_BAD_STEPS=1
    )
    trainer = Trainer(build_cfg(CPU_CFG, opts))
    trainer.resume_or_load(resume=False)
    NaNAtIteration(trainer, {2})
    before = {}

    class Snapshot(HookBase):
        def before_step(self):
            if self.trainer.iter == 2:
                before.update({k: v.clone() for k, v in self.trainer.model.state_dict().items()})

        def after_step(self):
            if self.trainer.iter == 2:  # the skipped step changed no parameter
                for k, v in self.trainer.model.named_parameters():
                    assert torch.equal(v, before[k]), k

    trainer.register_hooks([Snapshot()])
    trainer.train()
    assert trainer._trainer.num_bad_steps == 1
    assert trainer.iter == 5  # training went on to the end


SAVE_LOOP = textwrap.dedent("""
    import sys, torch
    from dualalign.engine.checkpoint import AtomicCheckpointer
    model = torch.nn.Linear(512, 512)
    ckpt = AtomicCheckpointer(model, save_dir=sys.argv[1])
    i = 0
    while True:
        # ~16 MB per file, so a save takes long enough to be interrupted.
        ckpt.save(f"model_{i:04d}", iteration=i, blob=torch.randn(2_000_000, 2))
        print(i, flush=True)
        i += 1
    """)


def test_kill_during_saves_never_leaves_an_unloadable_checkpoint(tmp_path):
    script = tmp_path / "save_loop.py"
    script.write_text(SAVE_LOOP)
    for trial in range(3):
        out = tmp_path / f"trial{trial}"
        proc = subprocess.Popen(
            [sys.executable, str(script), str(out)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for _ in range(2 + trial):  # wait for a few complete saves, then kill mid-write
            proc.stdout.readline()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tag = (out / "last_checkpoint").read_text().strip()
        state = torch.load(out / tag, weights_only=True)
        assert tag == f"model_{state['iteration']:04d}.pth"
        for name in os.listdir(out):
            if name.endswith(".pth"):  # every file under a final name is complete
                torch.load(out / name, weights_only=True)


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys, json
    from detectron2.engine import HookBase
    from detectron2.utils.env import seed_all_rng
    from dualalign.engine.setup import build_cfg
    from dualalign.engine.trainer import Trainer

    class Kill(HookBase):
        def after_step(self):
            if self.trainer.iter == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)

    seed_all_rng(0)
    trainer = Trainer(build_cfg({cfg!r}, json.loads(sys.argv[1])))
    trainer.register_hooks([Kill()])
    trainer.resume_or_load(resume=False)
    trainer.train()
    """)


@pytest.mark.parametrize("seed", [-1, 7])  # 7: the unlabelled batches from a private stream
def test_kill_then_resume_matches_an_uninterrupted_run(tiny_synthetic, tmp_path, seed):
    import json

    def opts(out):
        return tiny_opts(
            tiny_synthetic,
            out,
            "kr",
            SEED=seed,
            SOLVER__MAX_ITER=6,
            SOLVER__CHECKPOINT_PERIOD=3,
            DUALALIGN__PSEUDO__SCORE_THRESH=0.0,
        )

    seed_all_rng(0)
    straight = Trainer(build_cfg(CPU_CFG, opts(tmp_path / "straight")))
    straight.resume_or_load(resume=False)
    straight.train()

    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN.format(kill_at=4, cfg=CPU_CFG))
    killed_dir = tmp_path / "killed"
    res = subprocess.run(
        [sys.executable, str(script), json.dumps(opts(killed_dir))],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert (killed_dir / "last_checkpoint").read_text().strip() == "model_0000002.pth"

    resumed = Trainer(build_cfg(CPU_CFG, opts(killed_dir)))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
    resumed.train()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-5, rtol=1e-4), name
    bank_a, bank_b = straight.model.roi_heads.memory_bank, resumed.model.roi_heads.memory_bank
    assert torch.equal(bank_a.labels, bank_b.labels)
    assert torch.allclose(bank_a.rows, bank_b.rows, atol=1e-5)


def test_unreadable_unlabeled_image_skip_and_strict(tiny_synthetic, tmp_path):
    import json

    with open(tiny_synthetic["unlabeled"]) as f:
        pool = json.load(f)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    pool["images"] = [
        (
            dict(img, file_name=str(broken))
            if i % 2 == 0
            else dict(img, file_name=os.path.join(tiny_synthetic["image_root"], img["file_name"]))
        )
        for i, img in enumerate(pool["images"])
    ]
    pool_json = tmp_path / "pool.json"
    pool_json.write_text(json.dumps(pool))
    paths = dict(tiny_synthetic, unlabeled=str(pool_json))

    trainer = Trainer(build_cfg(CPU_CFG, tiny_opts(paths, tmp_path / "skip", "badskip")))
    trainer.resume_or_load(resume=False)
    trainer.train()
    mapper = trainer.data_loader.unlabeled.mapper
    assert mapper.num_skipped > 0

    strict = tiny_opts(
        paths, tmp_path / "strict", "badstrict", DUALALIGN__DATASETS__READ_ERRORS="strict"
    )
    trainer = Trainer(build_cfg(CPU_CFG, strict))
    trainer.resume_or_load(resume=False)
    with pytest.raises(ImageReadError, match="broken.png"):
        trainer.train()


def test_divergence_inside_the_model_names_iteration_and_checkpoint(tiny_synthetic, tmp_path):
    opts = tiny_opts(
        tiny_synthetic, tmp_path, "div", SOLVER__MAX_ITER=5, SOLVER__CHECKPOINT_PERIOD=2
    )
    trainer = Trainer(build_cfg(CPU_CFG, opts))
    trainer.resume_or_load(resume=False)
    rpn_forward = trainer.model.proposal_generator.forward

    def diverging(*args, **kwargs):
        if trainer.iter == 3:
            raise FloatingPointError("Predicted boxes or scores contain Inf/NaN.")
        return rpn_forward(*args, **kwargs)

    trainer.model.proposal_generator.forward = diverging
    with pytest.raises(FloatingPointError) as err:
        trainer.train()
    msg = str(err.value)
    assert "At iteration 3" in msg and "loss_cls=" in msg
    assert str(tmp_path / "model_0000001.pth") in msg
