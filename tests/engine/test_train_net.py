"""End-to-end CPU runs through ``train_net.py``: training, evaluation, checkpoints, fine-tuning.

Tiny models from random init on a 128 px synthetic set, as detectron2's test_model_e2e does.
"""

import json
import logging
import os

import numpy as np
import pytest
import torch
from detectron2.engine import default_argument_parser
from dualalign_testing import dataset_opts, load_train_net, quick_schedule

from dualalign.engine.checkpoint import AtomicCheckpointer, WeightsNotFoundError
from dualalign.engine.setup import build_cfg
from dualalign.engine.trainer import Trainer

train_net = load_train_net()
CPU_CFG = quick_schedule("dualalign_R18_instant_test")
SUP_CFG = quick_schedule("supervised_R18_instant_test")

pytestmark = pytest.mark.slow


def run_train_net(config_file, opts, *flags):
    args = default_argument_parser().parse_args(["--config-file", config_file, *flags, *opts])
    return train_net.main(args)


def read_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_supervised_three_iterations_then_eval(tiny_synthetic, tmp_path):
    out = tmp_path / "sup"
    results = run_train_net(SUP_CFG, dataset_opts(tiny_synthetic, out, "sup3"))
    assert os.path.isfile(out / "model_final.pth")
    assert os.path.isfile(out / "labeled_split.json")
    bbox = results["bbox"]
    assert "mAP" in bbox and "AP@0.10" in bbox and "AP@0.70" in bbox
    assert all(np.isfinite(v) and 0.0 <= v <= 100.0 for v in bbox.values())
    rows = [r for r in read_metrics(out) if "total_loss" in r]
    assert rows[-1]["iteration"] == 2
    assert np.isfinite(rows[-1]["total_loss"])
    # --eval-only on the checkpoint reproduces the evaluation.
    again = run_train_net(
        SUP_CFG,
        dataset_opts(tiny_synthetic, out, "sup3", MODEL__WEIGHTS=str(out / "model_final.pth")),
        "--eval-only",
    )
    assert again["bbox"]["mAP"] == pytest.approx(bbox["mAP"], abs=1e-6)
    assert os.path.isfile(out / "inference" / "test_sup3" / "range_ap.json")


def test_dualalign_five_iterations_logs_every_term(tiny_synthetic, tmp_path):
    out = tmp_path / "da"
    opts = dataset_opts(
        tiny_synthetic,
        out,
        "da5",
        SOLVER__MAX_ITER=5,
        DUALALIGN__RAMPUP_ITERS=4,
        # At random init no class scores > 0.5; a zero threshold exercises the unlabelled terms.
        DUALALIGN__PSEUDO__SCORE_THRESH=0.0,
        TEST__EVAL_PERIOD=0,
    )
    trainer = Trainer(build_cfg(CPU_CFG, opts))
    trainer.resume_or_load(resume=False)
    trainer.train()
    rows = [r for r in read_metrics(out) if "loss_pml_l" in r]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3, 4]
    for name in ("loss_pml_l", "loss_pml_u", "loss_pmb_l", "loss_pmb_u", "loss_cls", "lambda"):
        values = [r[name] for r in rows]
        assert all(np.isfinite(values)), name
    for name in ("loss_pml_l", "loss_pml_u", "loss_pmb_u"):
        assert any(abs(r[name]) > 1e-6 for r in rows), f"{name} stayed 0"
    # lambda(t): exp(-5) at t = 0, w_max from T = 4 on.
    assert rows[0]["lambda"] == pytest.approx(np.exp(-5.0))
    assert rows[4]["lambda"] == pytest.approx(1.0)
    assert any(k.startswith("pseudo/count_c") for k in rows[-1])
    assert any(k.startswith("bank/fill_c") for k in rows[-1])
    bank = trainer.model.roi_heads.memory_bank
    assert len(bank) > 0, "the trainer pushed no prototypes"


def test_memory_bank_survives_checkpoint_and_resume(tiny_synthetic, tmp_path):
    out = tmp_path / "resume"
    opts = dataset_opts(tiny_synthetic, out, "res", SOLVER__MAX_ITER=4, SOLVER__CHECKPOINT_PERIOD=2)
    trainer = Trainer(build_cfg(CPU_CFG, opts))
    trainer.resume_or_load(resume=False)
    trainer.train()
    saved = torch.load(out / "model_0000001.pth", weights_only=True)
    bank_rows = saved["model"]["roi_heads.memory_bank.rows"]
    bank_count = int(saved["model"]["roi_heads.memory_bank.count"])
    assert bank_count > 0
    assert saved["iteration"] == 1

    # Resume: the tag points at model_final; its bank must come back exactly.
    final = torch.load(out / "model_final.pth", weights_only=True)["model"]
    opts = dataset_opts(tiny_synthetic, out, "res", SOLVER__MAX_ITER=6)
    resumed = Trainer(build_cfg(CPU_CFG, opts))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4
    bank = resumed.model.roi_heads.memory_bank
    assert torch.equal(bank.rows, final["roi_heads.memory_bank.rows"])
    assert torch.equal(bank.labels, final["roi_heads.memory_bank.labels"])
    assert int(bank.count) == int(final["roi_heads.memory_bank.count"])
    resumed.train()
    assert int(bank.count) >= int(final["roi_heads.memory_bank.count"])
    assert not torch.equal(bank_rows, bank.rows)


def test_finetune_across_class_counts_skips_only_the_head(tiny_synthetic, tmp_path, caplog):
    cfg4 = build_cfg(CPU_CFG, dataset_opts(tiny_synthetic, tmp_path, "ft4"))
    model4 = Trainer.build_model(cfg4)
    with torch.no_grad():
        model4.roi_heads.memory_bank.push(torch.randn(3, 32), torch.tensor([0, 2, 3]))
    AtomicCheckpointer(model4, save_dir=str(tmp_path)).save("four_classes")

    opts2 = dataset_opts(
        tiny_synthetic,
        tmp_path,
        "ft2",
        MODEL__ROI_HEADS__NUM_CLASSES=2,
        MODEL__WEIGHTS=str(tmp_path / "four_classes.pth"),
    )
    cfg2 = build_cfg(CPU_CFG, opts2)
    model2 = Trainer.build_model(cfg2)
    with caplog.at_level(logging.INFO):
        Trainer.build_checkpointer(model2, cfg2).resume_or_load(cfg2.MODEL.WEIGHTS, resume=False)
    text = caplog.text
    assert "roi_heads.box_predictor.cls_score.weight" in text
    assert "roi_heads.box_predictor.bbox_pred.weight" in text
    assert "roi_heads.proxies.weight" in text
    sd4 = model4.state_dict()
    for name, value in model2.state_dict().items():
        if name.startswith(("roi_heads.box_predictor.", "roi_heads.proxies.", "roi_heads.memory")):
            continue
        assert torch.equal(value, sd4[name]), name
    assert len(model2.roi_heads.memory_bank) == 0, "a 4-class bank must not load into 2 classes"


def test_model_zoo_pkl_and_remote_weights(tiny_synthetic, tmp_path):
    import pickle

    cfg = build_cfg(SUP_CFG, dataset_opts(tiny_synthetic, tmp_path, "pkl"))
    model = Trainer.build_model(cfg)
    # A model-zoo style .pkl: numpy arrays under "model", with "__author__".
    blobs = {
        k: v.detach().numpy() + 1.0
        for k, v in model.state_dict().items()
        if v.dtype == torch.float32
    }
    with open(tmp_path / "zoo.pkl", "wb") as f:
        pickle.dump({"model": blobs, "__author__": "test"}, f)
    fresh = Trainer.build_model(cfg)
    Trainer.build_checkpointer(fresh, cfg).load(str(tmp_path / "zoo.pkl"))
    name = "backbone.bottom_up.stem.conv1.weight"
    assert torch.allclose(fresh.state_dict()[name], torch.from_numpy(blobs[name]))

    with pytest.raises(WeightsNotFoundError, match="internet"):
        Trainer.build_checkpointer(fresh, cfg).load(
            "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
        )
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        Trainer.build_checkpointer(fresh, cfg).load(str(tmp_path / "missing.pth"))


def test_teacher_pipeline_trains_and_scores_teacher_and_student(tiny_synthetic, tmp_path):
    out = tmp_path / "tp"
    opts = dataset_opts(
        tiny_synthetic,
        out,
        "tp4",
        SOLVER__MAX_ITER=4,
        DUALALIGN__RAMPUP_ITERS=2,
        DUALALIGN__DIAGNOSTICS__GRAD_SHARE_PERIOD=2,
    )
    run_train_net(quick_schedule("dualalign_teacher_R18_instant_test"), opts)
    records = read_metrics(out)
    rows = [r for r in records if "loss_cls_u" in r]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    for name in ("loss_cls_u", "loss_pml_u", "loss_pmb_u", "loss_pml_l", "loss_cls"):
        assert all(np.isfinite(r[name]) for r in rows), name
    assert any(r["loss_cls_u"] > 0 for r in rows)
    assert any("grad/box_head/unsup_over_sup" in r for r in records)
    inference = out / "inference" / "test_tp4"
    assert (inference / "range_ap_teacher.json").is_file()
    assert (inference / "range_ap_student.json").is_file()
    # --eval-only with EVAL_PSEUDO_LABELS scores what the teacher labels with, once (no
    # teacher / student pair: it is neither network's inference).
    labels = tmp_path / "labels"
    run_train_net(
        quick_schedule("dualalign_teacher_R18_instant_test"),
        dataset_opts(
            tiny_synthetic, labels, "tp4", MODEL__WEIGHTS=str(out / "model_final.pth"),
            DUALALIGN__PSEUDO__FLIP_FUSION=True, DUALALIGN__TEACHER__EVAL_PSEUDO_LABELS=True,
        ),
        "--eval-only",
    )  # fmt: skip
    written = sorted(os.listdir(labels / "inference" / "test_tp4"))
    assert "range_ap.json" in written and "coco_instances_results.json" in written
    assert not any(name.startswith(("range_ap_teacher", "range_ap_student")) for name in written)


def test_evaluations_during_training_do_not_change_what_is_trained(tiny_synthetic, tmp_path):
    """Evaluation draws from numpy's global generator (test-time resize), which is also the
    training augmentation's; the eval hook puts it back, so the weights do not depend on how
    often a run was evaluated."""
    from detectron2.utils.env import seed_all_rng

    from dualalign.benchmark.protocol import model_digest

    digests = {}
    for period in (0, 1):
        out = tmp_path / f"period{period}"
        opts = dataset_opts(
            tiny_synthetic, out, f"evrng{period}", SOLVER__MAX_ITER=4, TEST__EVAL_PERIOD=period
        )
        seed_all_rng(0)  # as train_net's default_setup does with SEED
        trainer = Trainer(build_cfg(SUP_CFG, opts))
        trainer.resume_or_load(resume=False)
        trainer.train()
        digests[period] = model_digest(str(out / "model_final.pth"))
        if period:
            rows = [r for r in read_metrics(out) if any(k.startswith("bbox/") for k in r)]
            assert len(rows) >= 4  # evaluated after every step
            # Not vacuous: an evaluation outside the hook does move numpy's generator.
            np.random.seed(0)
            expected = np.random.rand()
            np.random.seed(0)
            Trainer.test(trainer.cfg, trainer.model)
            assert np.random.rand() != expected
    assert digests[0] == digests[1]


def test_precise_bn_changes_only_the_bn_statistics(tiny_synthetic, tmp_path):
    """``TEST.PRECISE_BN`` (stage A of the protocol): the BN layers' running statistics become
    averages over training batches before each evaluation and at the end; the passes leave the
    RNGs as they were, so every weight is the one the same run trains without it."""
    from detectron2.utils.env import seed_all_rng

    from dualalign.engine.trainer import IsolatedPreciseBN

    states = {}
    for precise in (False, True):
        out = tmp_path / f"precise{precise:d}"
        opts = dataset_opts(
            tiny_synthetic, out, f"pbn{precise:d}", SOLVER__MAX_ITER=4, TEST__EVAL_PERIOD=2,
            TEST__PRECISE_BN__ENABLED=precise, TEST__PRECISE_BN__NUM_ITER=3,
        )  # fmt: skip
        seed_all_rng(0)  # as train_net's default_setup does with SEED
        trainer = Trainer(build_cfg(SUP_CFG, opts))
        assert any(isinstance(h, IsolatedPreciseBN) for h in trainer._hooks) == precise
        trainer.resume_or_load(resume=False)
        trainer.train()
        states[precise] = torch.load(out / "model_final.pth", weights_only=False)["model"]
    stats = {n for n in states[True] if n.endswith(("running_mean", "running_var"))}
    assert stats  # the CPU preset trains BN
    for name, value in states[True].items():
        if name.endswith("num_batches_tracked"):
            continue
        same = torch.equal(torch.as_tensor(value), torch.as_tensor(states[False][name]))
        assert same != (name in stats), name


def test_precise_bn_is_refused_for_the_semi_supervised_methods():
    with pytest.raises(ValueError, match=r"TEST\.PRECISE_BN\.ENABLED.*METHOD supervised"):
        build_cfg(CPU_CFG, ["TEST.PRECISE_BN.ENABLED", "True"])
