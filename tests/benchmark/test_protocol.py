"""The two-stage protocol end to end on a tiny set: burn-ins, gates, continuations, summary."""

import dataclasses
import functools
import json
import math
import os

import pytest

from dualalign.benchmark.protocol import (
    ProtocolSettings,
    prepare_synthetic,
    run_protocol,
    summarize_finished,
)
from dualalign.benchmark.stage_a import (
    burn_in,
    burn_in_cells,
    burn_in_iters,
    burn_in_lr_steps,
    check_gates,
    model_digest,
)


def test_gates_on_stage_a_curves():
    s = ProtocolSettings()
    flat = [(199, 40.0), (399, 50.0), (599, 60.0), (799, 64.5), (999, 65.0)]
    rising = [(199, 10.0), (399, 20.0), (599, 30.0), (799, 40.0), (999, 50.0)]
    burn_ins = [
        {"fraction": 0.25, "split_seed": 0, "val_mAP_history": flat},
        {"fraction": 1.0, "split_seed": 0, "val_mAP_history": [(i, m + 10) for i, m in flat]},
    ]
    gates = check_gates(burn_ins, s)
    assert gates["plateau"] and gates["label_limited"] and not gates["messages"]
    assert gates["sup_1_minus_0.25"] == pytest.approx(10.0)
    burn_ins[1]["val_mAP_history"] = rising
    gates = check_gates(burn_ins, s)
    assert not gates["plateau"] and not gates["label_limited"]
    plateau = [m for m in gates["messages"] if m.startswith("plateau")]
    assert len(plateau) == 1 and "100 % burn-in" in plateau[0]  # the 25 % one is flat
    assert "--gate-burn-in-iters" in plateau[0]  # 100 % is gate-only: its own length
    assert [b["move_last_fifth"] for b in gates["burn_ins"]] == [0.5, 10.0]
    burn_ins[0]["val_mAP_history"] = rising
    message = check_gates(burn_ins, s)["messages"][0]
    assert "lengthen --burn-in-iters" in message and "--burn-in-steps" not in message
    one_drop = dataclasses.replace(s, burn_in_steps=(0.7,))
    message = check_gates(burn_ins, one_drop)["messages"][0]
    assert "drop the lr again at the start of the last fifth (--burn-in-steps 0.7 0.8)" in message
    assert "average the BN statistics (--precise-bn-iters 200)" in message
    burn_ins[0]["precise_bn_iters"] = 200  # already averaged: not advised again
    assert "--precise-bn-iters" not in check_gates(burn_ins, s)["messages"][0]


def test_gate_only_fractions_get_their_own_stage_a_length():
    s = ProtocolSettings(burn_in_iters=1200, gate_burn_in_iters=2400)
    assert burn_in_iters(s, 0.25) == 1200 and burn_in_iters(s, 1.0) == 2400
    assert burn_in_iters(dataclasses.replace(s, gate_burn_in_iters=0), 1.0) == 1200


def test_run_diagnostics_reduce_the_logged_values(tmp_path):
    from dualalign.benchmark.protocol_diagnostics import arm_diagnostics, run_diagnostics

    records = [
        {"iteration": 9, "grad/box_head/unsup_over_sup": 0.2, "pseudo/count_c0": 3.0,
         "pseudo/count_c1": 1.0, "bank/age": 5},
        {"iteration": 19, "grad/box_head/unsup_over_sup": 0.4, "pseudo/count_c0": 0.0,
         "pseudo/count_c1": 2.0, "bank/age": 7, "pseudo_quality/precision": 80.0},
    ]  # fmt: skip
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    d = run_diagnostics(str(path))
    assert d["grad_share_box_head"] == pytest.approx(0.3) and d["bank_age"] == 7
    assert d["pseudo_per_step"] == pytest.approx(3.0) and d["pseudo_precision"] == 80.0
    assert "pseudo_recall" not in d and "grad_share_backbone_last" not in d
    runs = [{"arm": "a", "metrics_file": str(path)}] * 2
    assert arm_diagnostics(runs) == {"a": d}


def test_stage_a_lr_drops_reach_the_solver_and_are_checked(tmp_path, monkeypatch):
    from dualalign.benchmark import stage_a

    s = ProtocolSettings(burn_in_iters=2400, gate_burn_in_iters=3600)
    assert burn_in_lr_steps(s, 0.25) == [1680, 1920] and burn_in_lr_steps(s, 1.0) == [2520, 2880]
    one = dataclasses.replace(s, burn_in_steps=(0.7,))
    assert burn_in_lr_steps(one, 0.25) == [1680]
    for bad in [(0.8, 0.7), (0.0,), (1.0,), (0.7, 0.7), (0.7, 0.7001)]:  # last: same iteration
        with pytest.raises(ValueError, match="increasing fractions .* 2400 of stage A"):
            burn_in_lr_steps(dataclasses.replace(s, burn_in_steps=bad), 0.25)
    seen = []
    monkeypatch.setattr(stage_a, "run_train_net", lambda cfg, opts, out, jobs: seen.append(opts))
    data = {"opts": [], "val_name": "val"}
    stage_a._train_burn_in(s, data, 0.25, 11, str(tmp_path / "run"))
    stage_a._train_burn_in(one, data, 0.25, 11, str(tmp_path / "run"))
    opts = seen[0]
    assert opts[opts.index("SOLVER.STEPS") + 1] == "(1680, 1920)"
    assert seen[1][seen[1].index("SOLVER.STEPS") + 1] == "(1680,)"
    assert opts[opts.index("SOLVER.MAX_ITER") + 1] == "2400"
    assert opts[opts.index("TEST.PRECISE_BN.ENABLED") + 1] == "True"  # the default: precise
    assert opts[opts.index("TEST.PRECISE_BN.NUM_ITER") + 1] == "200"
    stage_a._train_burn_in(dataclasses.replace(s, precise_bn_iters=0), data, 0.25, 11, "r")
    assert seen[2][seen[2].index("TEST.PRECISE_BN.ENABLED") + 1] == "False"  # running


def test_a_finished_burn_in_is_refused_under_other_lr_drops_and_legacy_records_read_as_70(
    tmp_path,
):
    val = tmp_path / "val.json"
    val.write_text(json.dumps({"images": [{"id": 1}, {"id": 2}]}))
    data = {"val_json": str(val)}
    # stage A only, with running BN statistics, as the records made before 2026-12-05
    two = ProtocolSettings(burn_in_iters=10, fractions=(0.25,), arms=(), precise_bn_iters=0)
    s = dataclasses.replace(two, burn_in_steps=(0.7,))  # one drop, as before 2026-12-05
    run_dir = tmp_path / "burn_in" / "f0.25_split0"
    run_dir.mkdir(parents=True)
    legacy = {"fraction": 0.25, "split_seed": 0, "iterations": 10, "val_images": 2,
              "val_mAP_history": [[9, 50.0]], "checkpoint": "gone.pth"}  # fmt: skip
    (run_dir / "result.json").write_text(json.dumps(legacy))
    assert burn_in(s, data, 0.25, 0, str(tmp_path)) == legacy  # made before lr_steps: one at 70 %
    with pytest.raises(ValueError, match="'lr_steps': \\[7\\].*'lr_steps': \\[7, 8\\].*aside") as e:
        burn_in(two, data, 0.25, 0, str(tmp_path))
    assert str(e.value).endswith("To extend its record instead, pass --burn-in-steps 0.7.")
    (run_dir / "result.json").write_text(json.dumps(dict(legacy, lr_steps=[7, 8])))
    assert burn_in(two, data, 0.25, 0, str(tmp_path))["lr_steps"] == [7, 8]
    with pytest.raises(ValueError, match="'lr_steps': \\[7, 8\\].*'lr_steps': \\[7\\]"):
        burn_in(s, data, 0.25, 0, str(tmp_path))
    assert json.loads((run_dir / "result.json").read_text())["lr_steps"] == [7, 8]  # kept
    # BN statistics: records before precise_bn_iters read as running (0); another value is
    # refused, and the message names the flags that extend the record.
    precise = dataclasses.replace(s, precise_bn_iters=200)
    with pytest.raises(ValueError, match="'precise_bn_iters': 0.*'precise_bn_iters': 200") as e:
        burn_in(precise, data, 0.25, 0, str(tmp_path))
    assert str(e.value).endswith("pass --burn-in-steps 0.7 0.8 --precise-bn-iters 0.")
    (run_dir / "result.json").write_text(json.dumps(dict(legacy, precise_bn_iters=200)))
    assert burn_in(precise, data, 0.25, 0, str(tmp_path))["precise_bn_iters"] == 200


def test_burn_in_cells_longest_first_then_continued_fractions_gate_only_once():
    s = ProtocolSettings(
        fractions=(0.25, 1.0), continue_fractions=(0.25,), split_seeds=(3, 5),
        burn_in_iters=1200, gate_burn_in_iters=0,
    )  # fmt: skip
    # One gate-only burn-in serves every split seed (split seeds added later do not retrain it).
    assert burn_in_cells(s) == [(0.25, 3), (0.25, 5), (1.0, 0)]
    # A longer gate-only burn-in starts first, so that two jobs end together.
    s = dataclasses.replace(s, gate_burn_in_iters=2400, gate_split_seed=3)
    assert burn_in_cells(s) == [(1.0, 3), (0.25, 3), (0.25, 5)]


def test_a_recorded_burn_in_without_its_checkpoint_is_rebuilt_and_checked_by_digest(
    tmp_path, monkeypatch
):
    import torch

    from dualalign.benchmark import stage_a

    weights = {"w": torch.arange(4.0)}
    trained = []

    def fake_train(s, data, fraction, split, run_dir):  # stands in for train_net.py
        trained.append(run_dir)
        os.makedirs(run_dir, exist_ok=True)
        torch.save({"model": weights}, os.path.join(run_dir, "model_final.pth"))
        return os.path.join(run_dir, "model_final.pth")

    monkeypatch.setattr(stage_a, "_train_burn_in", fake_train)
    val = tmp_path / "val.json"
    val.write_text(json.dumps({"images": [{"id": 1}, {"id": 2}]}))
    data = {"val_json": str(val)}
    s = ProtocolSettings(burn_in_iters=10, fractions=(0.25,), arms=("supervised",))
    run_dir = tmp_path / "burn_in" / "f0.25_split0"
    run_dir.mkdir(parents=True)
    fake_train(s, data, 0.25, 0, str(tmp_path / "original"))
    record = {
        "fraction": 0.25, "split_seed": 0, "iterations": 10, "lr_steps": [7, 8], "val_images": 2,
        "precise_bn_iters": 200, "val_mAP_history": [[9, 50.0]],
        "checkpoint": str(run_dir / "model_final.pth"),
        "model_digest": model_digest(str(tmp_path / "original" / "model_final.pth")),
    }  # fmt: skip
    (run_dir / "result.json").write_text(json.dumps(record))
    # stage A only: the gates read the recorded curves, nothing is trained
    assert burn_in(dataclasses.replace(s, arms=()), data, 0.25, 0, str(tmp_path)) == record
    assert len(trained) == 1
    got = burn_in(s, data, 0.25, 0, str(tmp_path))
    assert got["checkpoint"] == str(run_dir / "rebuilt" / "model_final.pth") and got["rebuilt"]
    assert json.loads((run_dir / "result.json").read_text()) == record  # the record is kept
    assert burn_in(s, data, 0.25, 0, str(tmp_path)) == got and len(trained) == 2  # reused
    # A machine that does not reproduce stage A, with a stage B run continued from the record:
    weights["w"] = torch.arange(4.0) + 1e-6
    (run_dir / "rebuilt" / "model_final.pth").unlink()
    stage_b = tmp_path / "runs" / "supervised_f0.25_split0_order0"
    stage_b.mkdir(parents=True)
    b_record = {"fraction": 0.25, "split_seed": 0, "burn_in_digest": record["model_digest"]}
    (stage_b / "result.json").write_text(json.dumps(b_record))
    with pytest.raises(RuntimeError, match="digest .* recorded one .* not be paired .* 1 comm"):
        burn_in(s, data, 0.25, 0, str(tmp_path))
    assert json.loads((run_dir / "result.json").read_text()) == record  # nothing overwritten
    # ... and without one: the rebuilt burn-in replaces the record, which keeps the old one.
    (stage_b / "result.json").write_text(json.dumps(dict(b_record, burn_in_digest="other")))
    (run_dir / "rebuilt" / "metrics.json").write_text(
        json.dumps({"iteration": 9, "bbox/mAP": 48.0}) + "\n"
    )
    new = burn_in(s, data, 0.25, 0, str(tmp_path))
    assert new["model_digest"] == model_digest(str(run_dir / "rebuilt" / "model_final.pth"))
    assert new["model_digest"] != record["model_digest"] and new["val_mAP_history"] == [[9, 48.0]]
    assert new["replaced"]["model_digest"] == record["model_digest"]
    assert new["replaced"]["val_mAP_history"] == [[9, 50.0]]
    assert set(new["machine"]) == {"torch", "cpu_capability", "cpu"}
    assert json.loads((run_dir / "result.json").read_text()) == new
    assert "48.0" in (run_dir / "metrics.json").read_text()
    assert burn_in(s, data, 0.25, 0, str(tmp_path))["model_digest"] == new["model_digest"]
    # Once every stage B run of the settings has its record, a missing checkpoint is not rebuilt.
    (run_dir / "rebuilt" / "model_final.pth").unlink()
    for order in s.order_seeds:
        done = tmp_path / "runs" / f"supervised_f0.25_split0_order{order}"
        done.mkdir(parents=True, exist_ok=True)
        (done / "result.json").write_text(json.dumps(dict(b_record, burn_in_digest="other")))
    n_trained = len(trained)
    assert burn_in(s, data, 0.25, 0, str(tmp_path)) == new and len(trained) == n_trained


def test_summary_of_a_protocol_still_running_reads_the_gates_of_the_ended_burn_ins(tmp_path):
    s = ProtocolSettings(fractions=(0.25, 1.0), split_seeds=(0, 1), arms=("supervised",))
    cell = tmp_path / "burn_in" / "f0.25_split0"
    cell.mkdir(parents=True)
    history = [[1919, 69.55], [2159, 68.76], [2400, 69.26]]
    record = {"fraction": 0.25, "split_seed": 0, "iterations": 2400, "val_images": 300,
              "val_mAP_history": history}  # fmt: skip
    (cell / "result.json").write_text(json.dumps(record))
    test_json = tmp_path / "test.json"
    test_json.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    summary = summarize_finished(s, {"test_json": str(test_json)}, str(tmp_path))
    gates = summary["gates"]
    assert gates["plateau"] and gates["largest_move_last_fifth"] == pytest.approx(0.79)
    assert gates["label_limited"] is None and gates["ignored"]
    assert gates["messages"] == [
        "only 1 of 3 burn-ins ended: the gates above read those only"
    ]
    assert "only 1 of 3 burn-ins ended" in (tmp_path / "tables.md").read_text()
    # a record made before burn-ins named their lr drops and BN statistics: one drop at 70 %,
    # running statistics
    assert gates["burn_ins"][0]["lr_steps"] == [1680]
    row = "| 25 %, split 0 | 2400 | 1680 | running | 300 | 0.79 | 69.26 |"
    assert row in (tmp_path / "tables.md").read_text()
    new = dict(record, lr_steps=[1680, 1920], precise_bn_iters=200)
    (cell / "result.json").write_text(json.dumps(new))
    summary = summarize_finished(
        dataclasses.replace(s, precise_bn_iters=200), {"test_json": str(test_json)}, str(tmp_path)
    )
    assert summary["gates"]["burn_ins"][0]["lr_steps"] == [1680, 1920]
    assert summary["gates"]["burn_ins"][0]["precise_bn_iters"] == 200
    row = "| 2400 | 1680, 1920 | precise (200 batches) | 300 |"
    assert row in (tmp_path / "tables.md").read_text()


@pytest.mark.slow
def test_tiny_protocol_writes_paired_differences(tmp_path):
    data = prepare_synthetic(
        str(tmp_path / "data"), num_labeled=4, num_unlabeled=4, num_val=2, num_test=2,
        image_size=64,
    )  # fmt: skip
    s = ProtocolSettings(
        config_dir="configs/quick_schedules",
        suffix="_R18_instant_test",
        burn_in_iters=5,  # the lr drops at 3 and 4
        precise_bn_iters=2,  # precise BN statistics, as the default, over 2 batches
        continue_iters=4,
        fractions=(0.5,),
        continue_fractions=(0.5,),
        split_seeds=(0,),
        order_seeds=(0, 1),
        arms=("supervised", "dualalign"),
        bootstrap_samples=5,
        ignore_gates=True,  # 5 iterations need not plateau
        score_checkpoints=2,  # the mean of the last two (the default is three)
    )
    out = tmp_path / "protocol"
    summary = run_protocol(s, data, str(out))
    assert "ignored" in summary["gates"] and summary["gates"]["label_limited"] is None
    block = summary["fractions"]["0.5"]
    assert block["arms"]["supervised"]["n"] == 2 and block["arms"]["dualalign"]["n"] == 2
    delta = block["delta_vs_supervised"]["dualalign"]
    assert delta["n"] == 2 and delta["ci95"][0] <= delta["mean"] <= delta["ci95"][1]
    assert delta["pairs_for_half_width"]["half_width"] == 1.5
    assert delta["pairs_for_half_width"]["pairs"] >= 2
    boot = delta["bootstrap"]
    assert boot["pairs"] == 2 and boot["samples"] == 5 and len(boot["ci95"]) == 2
    assert set(delta["final_ap_per_iou"]) >= {"0.10", "0.50", "0.70"}
    diag = block["diagnostics"]["dualalign"]
    assert {"pseudo_recall", "grad_share_box_head", "bank_age"} <= set(diag)  # precision: NaN
    assert "dAP@0.7" in (out / "tables.md").read_text()
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert "delta vs supervised" in (out / "tables.md").read_text()
    assert (out / "paired_deltas.png").is_file()
    run = out / "runs" / "dualalign_f0.5_split0_order0"
    record = json.loads((run / "result.json").read_text())
    assert len(record["mAP_last"]) == 2 and math.isclose(
        record["mAP"], sum(record["mAP_last"]) / 2
    )
    assert not [n for n in os.listdir(run) if n.endswith(".pth")]  # checkpoints pruned
    stage_a = out / "burn_in" / "f0.5_split0"
    record = json.loads((stage_a / "result.json").read_text())
    assert record["iterations"] == 5 and record["val_images"] == 2
    assert record["lr_steps"] == [3, 4] and record["precise_bn_iters"] == 2
    assert record["model_digest"] == model_digest(str(stage_a / "model_final.pth"))
    assert sorted(n for n in os.listdir(stage_a) if n.endswith(".pth")) == ["model_final.pth"]
    longer = ProtocolSettings(**{**s.__dict__, "burn_in_iters": 10})
    with pytest.raises(ValueError, match="made with .*'iterations': 5.*Move .* aside") as e:
        burn_in(longer, data, 0.5, 0, str(out))  # a finished burn-in is never silently reused
    assert "--burn-in-steps" not in str(e.value)  # not only the drops differ
    metrics = [json.loads(line) for line in (run / "metrics.json").read_text().splitlines()]
    assert any("pseudo_quality/precision" in r for r in metrics)  # diagnostics logged
    assert any("grad/box_head/unsup_over_sup" in r for r in metrics)
    # Resumable: a second call reruns nothing and gives the same summary.
    assert run_protocol(s, data, str(out))["fractions"] == summary["fractions"]
    # The runs finished so far summarise to the same comparison.
    assert summarize_finished(s, data, str(out))["fractions"] == summary["fractions"]


def test_cervix93_protocol_data_declares_val_and_the_pool_per_fraction(
    shared_data_dir, tmp_path, monkeypatch
):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from dualalign.benchmark.datasets import prepare_cervix93_protocol
    from dualalign.data.datasets import register_from_config
    from dualalign.engine.setup import build_cfg
    from dualalign.utils.paths import config_path

    monkeypatch.chdir(tmp_path)  # the class-agnostic copies are written under ./datasets
    root = os.path.join(shared_data_dir, "cervix93")
    for agnostic in (False, True):
        data = prepare_cervix93_protocol(root, agnostic, label=f"c93p{int(agnostic)}")
        assert data["pool_truth_name"] is None and data["val_json"].endswith("annotations_val.json")
        cfg_file = config_path("synthetic", "supervised_R18_cpu.yaml")
        low = build_cfg(cfg_file, data["opts"] + data["fraction_opts"](0.25))
        full = build_cfg(cfg_file, data["opts"] + data["fraction_opts"](1.0))
        assert low.MODEL.ROI_HEADS.NUM_CLASSES == (1 if agnostic else 3)
        assert low.DUALALIGN.DATASETS.REMAINDER_AS_UNLABELED  # the rest of train is the pool
        assert not low.DUALALIGN.DATASETS.TRAIN_UNLABELED
        assert full.DUALALIGN.DATASETS.TRAIN_UNLABELED == (f"c93p{int(agnostic)}_pool",)
        names = [entry[0] for entry in low.DUALALIGN.DATASETS.COCO]
        assert data["val_name"] in names and data["test_name"] in names
        register_from_config(low)
        val = DatasetCatalog.get(data["val_name"])
        assert len(val) == 9  # the val split's 9 frames
        assert len(MetadataCatalog.get(data["val_name"]).thing_classes) == (1 if agnostic else 3)


def test_script_flags_reach_the_settings(monkeypatch):
    import importlib.util

    from dualalign.utils.paths import repo_root

    path = os.path.join(repo_root(), "scripts", "run_protocol.py")
    spec = importlib.util.spec_from_file_location("run_protocol_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    seen = {}

    def fake_run(s, data, out):
        seen.update(settings=s, out=out)
        return {"gates": {"messages": []}}

    monkeypatch.setattr(script, "prepare_synthetic", lambda root: {"root": root})
    monkeypatch.setattr(script, "run_protocol", fake_run)
    assert script.main(["--stage-a-only", "--gate-burn-in-iters", "3000"]) == 0
    s = seen["settings"]
    assert s.arms == () and s.gate_burn_in_iters == 3000
    assert s.burn_in_iters == ProtocolSettings.burn_in_iters
    assert s.burn_in_steps == ProtocolSettings.burn_in_steps == (0.7, 0.8)
    script.main(["--stage-a-only", "--burn-in-steps", "0.7"])
    assert seen["settings"].burn_in_steps == (0.7,)
    assert s.precise_bn_iters == 200  # precise BN statistics (the records before: 0)
    script.main(["--stage-a-only", "--precise-bn-iters", "0"])
    assert seen["settings"].precise_bn_iters == 0
    with pytest.raises(SystemExit):
        script.main(["--precise-bn-iters", "-1"])
    assert seen["out"] == os.path.join("results", "protocol", "synthetic")
    script.main(["--arms", "supervised", "dualalign", "--bootstrap-samples", "0"])
    assert seen["settings"].arms == ("supervised", "dualalign")
    assert seen["settings"].bootstrap_samples == 0
    assert seen["settings"].contrasts == ProtocolSettings.contrasts  # the defaults
    script.main(["--contrast", "dualalign", "null_control", "--contrast", "csd", "supervised"])
    assert seen["settings"].contrasts == (("dualalign", "null_control"), ("csd", "supervised"))
    with pytest.raises(SystemExit):  # an arm the protocol does not know
        script.main(["--contrast", "dualalign", "no_such_arm"])
    monkeypatch.setattr(script, "summarize_finished", fake_run)
    script.main(["--select-on-val", "--summarize-only", "--tag", "w05", "--reference-tag", "ref",
                 "--contrast", "self_training", "teacher_null_control@ref"])  # fmt: skip
    s = seen["settings"]
    assert s.reference_tags == ("ref",) and s.tag == "w05" and s.score_split == "val"
    assert s.contrasts == (("self_training", "teacher_null_control@ref"),)
    with pytest.raises(SystemExit):  # reference points are read by a val summary only
        script.main(["--reference-tag", "ref"])
    with pytest.raises(SystemExit):  # a contrast with a point whose runs are not read
        script.main(["--select-on-val", "--summarize-only", "--contrast", "self_training",
                     "teacher_null_control@ref"])  # fmt: skip


def test_every_arm_builds_and_the_teacher_null_control_has_no_unsupervised_term():
    from dualalign.benchmark.protocol import ARMS
    from dualalign.benchmark.protocol_settings import config_file
    from dualalign.engine.setup import build_cfg

    s = ProtocolSettings()
    cfgs = {arm: build_cfg(config_file(s, method), opts) for arm, (method, opts) in ARMS.items()}
    null, teacher = cfgs["teacher_null_control"].DUALALIGN, cfgs["self_training"].DUALALIGN
    # The same teacher pipeline, evaluated the same way ...
    for key in ("METHOD", "PSEUDO.SOURCE", "PSEUDO.BOXES", "STRONG_AUG.ENABLED", "TEACHER"):
        a, b = null, teacher
        for part in key.split("."):
            a, b = a[part], b[part]
        assert a == b, key
    assert null.TEACHER.EVAL_TEACHER
    # ... with nothing learnt from the unlabelled half.
    assert not null.PSEUDO.CLS_LOSS and teacher.PSEUDO.CLS_LOSS
    assert not any(null.LOSS.values())


def test_tables_name_the_scored_split_and_report_the_teacher_arms_student(tmp_path):
    from dualalign.benchmark.protocol_tables import write_tables

    summary = {
        "gates": {"plateau": True},
        "settings": {"score_split": "val"},
        "fractions": {"0.25": {
            "arms": {"supervised": {"mAP": 65.0, "n": 1},
                     "self_training": {"mAP": 66.0, "n": 1, "student_final_mAP": 61.5},
                     "csd": {"mAP": 64.0, "n": 1}},
            "delta_vs_supervised": {"self_training": {"mean": 1.0, "ci95": [None, None], "n": 1}},
            "diagnostics": {},
        }},
    }  # fmt: skip
    write_tables(summary, str(tmp_path))
    md = (tmp_path / "tables.md").read_text()
    assert "## 25 % labelled (scored on val)" in md and "bootstrap over val images" in md
    row = next(line for line in md.splitlines() if line.startswith("| self_training | 66.00"))
    assert row.rstrip(" |").endswith("61.50")
    sup = next(line for line in md.splitlines() if line.startswith("| supervised | 65.00"))
    assert sup.count("|") == row.count("|")  # the same columns, the student cell empty
    assert "| reference |" in sup
    # an arm without a supervised run in any of its pairs is not the reference
    assert "| no paired run |" in next(line for line in md.splitlines() if line.startswith("| csd"))


def test_contrasts_pair_two_arms_over_their_common_pairs_and_reach_the_tables(tmp_path):
    from dualalign.benchmark.protocol import arm_contrasts
    from dualalign.benchmark.protocol_tables import write_tables

    scores = {
        "self_training": {(7, 0): 66.0, (7, 1): 65.5, (8, 0): 68.0, (9, 0): 70.0},
        "teacher_null_control": {(7, 0): 65.5, (7, 1): 65.5, (8, 0): 67.0},
        "csd": {(7, 0): 60.0},
    }
    c = arm_contrasts(
        scores,
        [("self_training", "teacher_null_control"), ("csd", "mean_teacher"),
         ("teacher_null_control", "self_training")],
    )  # fmt: skip
    # no common pair with an absent arm: skipped, not an error
    assert list(c) == ["self_training - teacher_null_control", "teacher_null_control - self_training"]
    d = c["self_training - teacher_null_control"]
    # split 9 has no null-control run: 3 pairs, not 4
    assert d["per_pair"] == {"7:0": 0.5, "7:1": 0.0, "8:0": 1.0} and d["n"] == 3
    assert math.isclose(d["mean"], 0.5) and d["ci95"][0] < 0.5 < d["ci95"][1]
    # over burn-ins: split 7's two pairs average to one value (0.25), split 8's is 1.0
    assert d["by_burn_in"]["n"] == 2 and math.isclose(d["by_burn_in"]["mean"], 0.625)
    assert math.isclose(c["teacher_null_control - self_training"]["mean"], -0.5)

    summary = {
        "gates": {},
        "fractions": {"0.25": {"arms": {"supervised": {"mAP": 65.0, "n": 3}},
                               "delta_vs_supervised": {}, "contrasts": c, "diagnostics": {}}},
    }  # fmt: skip
    write_tables(summary, str(tmp_path))
    md = (tmp_path / "tables.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| self_training - teacher"))
    assert "+0.50 [" in row and "(3)" in row and "7:0 +0.50, 7:1 +0.00, 8:0 +1.00" in row


def test_arm_names_of_contrasts_may_name_another_search_points_runs():
    from dualalign.benchmark.protocol import split_arm_tag

    assert split_arm_tag("self_training") == ("self_training", "")
    assert split_arm_tag("teacher_null_control@ref") == ("teacher_null_control", "ref")
    for bad in ("no_such_arm", "no_such_arm@ref", "self_training@"):
        with pytest.raises(ValueError, match="names no protocol arm"):
            split_arm_tag(bad)


def test_a_search_points_summary_reads_its_reference_points_runs(tmp_path):
    from dataclasses import replace

    from dualalign.benchmark.protocol_settings import stage_b_dir

    val_json = tmp_path / "val.json"
    val_json.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    data = {"val_name": "v", "val_json": str(val_json), "test_json": "never read", "opts": []}
    s = ProtocolSettings(
        split_seeds=(9, 10), order_seeds=(0,), arms=("self_training", "teacher_null_control"),
        score_split="val", tag="w05", reference_tags=("ref", "w05"), bootstrap_samples=0,
        contrasts=(("self_training", "teacher_null_control@ref"),),
    )  # fmt: skip
    scores = {("self_training", "w05"): {9: 65.0, 10: 64.0},
              ("teacher_null_control", "ref"): {9: 64.5, 10: 63.0},
              ("self_training", "ref"): {9: 60.0},  # another point's arm: read, named @ref
              ("teacher_null_control", "other"): {9: 10.0}}  # not a reference tag: unread
    for (arm, tag), by_split in scores.items():
        for split, m in by_split.items():
            run_dir = stage_b_dir(replace(s, tag=tag), str(tmp_path), arm, 0.25, split, 0)
            os.makedirs(run_dir)
            metrics = os.path.join(run_dir, "metrics.json")
            open(metrics, "w").close()
            record = {"arm": arm, "fraction": 0.25, "split_seed": split, "order_seed": 0,
                      "mAP": m, "final": {}, "metrics_file": metrics,
                      "predictions": os.path.join(run_dir, "absent.json")}  # fmt: skip
            with open(os.path.join(run_dir, "result.json"), "w") as f:
                json.dump(record, f)
    block = summarize_finished(s, data, str(tmp_path))["fractions"]["0.25"]
    assert sorted(block["arms"]) == [
        "self_training", "self_training@ref", "teacher_null_control@ref"
    ]  # fmt: skip
    c = block["contrasts"]["self_training - teacher_null_control@ref"]
    assert c["per_pair"] == {"9:0": 0.5, "10:0": 1.0} and math.isclose(c["mean"], 0.75)
    md = (tmp_path / "val_search" / "w05" / "tables.md").read_text()
    assert "| self_training - teacher_null_control@ref | +0.75 [" in md


def test_a_search_opt_overrides_the_arms_value_but_not_the_protocols_budget():
    from dualalign.benchmark.protocol import stage_b_opts
    from dualalign.benchmark.protocol_settings import config_file
    from dualalign.engine.setup import build_cfg

    burn = {"fraction": 0.25, "split_seed": 7, "checkpoint": ""}
    data = {"opts": []}
    s = ProtocolSettings(opts=["MODEL.DEVICE", "cpu", "DUALALIGN.EMBED.GRAD_SCALE", "0.01"])
    cfg = build_cfg(config_file(s, "dualalign_teacher"), stage_b_opts(s, data, "dualalign_all", burn, 3))
    assert cfg.DUALALIGN.EMBED.GRAD_SCALE == pytest.approx(0.01)  # the arm's own value is 0.1
    assert cfg.DUALALIGN.PROXY.SQUARED_DISTANCE  # the arm's other opts stay
    assert cfg.SEED == 3 and cfg.SOLVER.MAX_ITER == s.continue_iters
    assert cfg.MODEL.RESNETS.NORM == "FrozenBN"
    s = dataclasses.replace(s, opts=["MODEL.DEVICE", "cpu", "SOLVER.BASE_LR", "0.01"])
    with pytest.raises(ValueError, match="SOLVER.BASE_LR.*--continue-iters"):
        stage_b_opts(s, data, "supervised", burn, 0)
    # ... and before stage A, not after its burn-ins
    with pytest.raises(ValueError, match="SOLVER.BASE_LR"):
        run_protocol(s, {"opts": []}, "/nonexistent/never/written")


def test_the_tuned_arms_differ_from_their_arms_in_the_val_chosen_thresholds_only():
    from dualalign.benchmark.protocol import ARMS
    from dualalign.benchmark.protocol_settings import config_file
    from dualalign.engine.setup import build_cfg

    s = ProtocolSettings()
    for tuned, base in (("self_training_tuned", "self_training"),
                        ("dualalign_all_tuned", "dualalign_all")):  # fmt: skip
        a, b = (build_cfg(config_file(s, ARMS[arm][0]), ARMS[arm][1]) for arm in (tuned, base))
        assert a.DUALALIGN.PSEUDO.BOX_THRESH == pytest.approx(0.9)
        assert a.DUALALIGN.PSEUDO.IGNORE_THRESH == pytest.approx(0.3)
        a.defrost()
        a.DUALALIGN.PSEUDO.BOX_THRESH = b.DUALALIGN.PSEUDO.BOX_THRESH
        a.DUALALIGN.PSEUDO.IGNORE_THRESH = b.DUALALIGN.PSEUDO.IGNORE_THRESH
        assert a == b, tuned


DA_TAIL_KEYS = ["DUALALIGN.RAMPDOWN_ITERS", "DUALALIGN.TAIL_ITERS"]


@pytest.mark.parametrize(
    "arm, base, keys",
    [
        ("csd_tail", "csd", ["DUALALIGN.CSD.TAIL_ITERS"]),
        ("self_training_tuned_tail", "self_training_tuned", DA_TAIL_KEYS),
        # scored by its student (chosen on val): the evaluated model's key differs too
        (
            "dualalign_all_tuned_tail",
            "dualalign_all_tuned",
            ["DUALALIGN.TEACHER.EVAL_TEACHER"] + DA_TAIL_KEYS,
        ),
    ],
)
def test_a_tail_arm_is_its_base_with_the_weight_off_at_every_scored_evaluation(arm, base, keys):
    from detectron2.modeling import build_model

    from dualalign.benchmark.protocol import ARMS, _eval_schedule, stage_b_opts
    from dualalign.benchmark.protocol_settings import config_file
    from dualalign.engine.setup import build_cfg

    s, data = ProtocolSettings(), {"opts": []}
    burn = {"fraction": 0.25, "split_seed": 7, "checkpoint": ""}
    method = ARMS[base][0]
    assert ARMS[arm][0] == method
    a, b = (build_cfg(config_file(s, method), stage_b_opts(s, data, x, burn, 0)) for x in (arm, base))

    def value(cfg, key):
        return functools.reduce(getattr, key.split("."), cfg)

    tail = value(a, keys[-1])  # the tail's key last
    assert tail == 100
    model = build_model(a)
    weight = model.semi_loss_weight  # the schedule the arm trains with
    _, first_eval = _eval_schedule(s)  # the evaluation after iteration first_eval - 1
    floor = model.weight * math.exp(-12.5)
    assert weight(first_eval - 1) < 2 * floor
    assert weight(a.SOLVER.MAX_ITER - tail) == pytest.approx(floor)
    assert build_model(b).semi_loss_weight(first_eval - 1) == pytest.approx(model.weight)
    a.defrost()
    a.merge_from_list([x for key in keys for x in (key, value(b, key))])
    assert a == b  # nothing else differs


def test_a_record_that_mixes_random_streams_is_refused():
    from dualalign.benchmark.protocol import RANDOM_STREAMS
    from dualalign.benchmark.protocol_summary import check_random_streams

    old = {"arm": "null_control", "split_seed": 13, "order_seed": 4}  # no field: version 1
    new = {"arm": "supervised", "split_seed": 13, "order_seed": 4, "random_streams": RANDOM_STREAMS}
    check_random_streams([old, dict(old, arm="supervised")])
    check_random_streams([new, dict(new, arm="null_control")])
    with pytest.raises(ValueError, match=r"random streams \[1, 2\]: null_control \(split 13, "
                                         r"order 4\).*new --output folder"):  # fmt: skip
        check_random_streams([old, new])


def test_runs_left_out_names_what_an_older_summary_holds_and_a_new_one_lacks():
    from dualalign.benchmark.protocol import runs_left_out

    old = {"fractions": {"0.25": {"arms": {
        "supervised": {"n": 3, "pairs": ["13:0", "13:1", "14:0"]},
        "csd": {"n": 1, "pairs": ["13:0"]},
        "mean_teacher": {"n": 4},  # a summary written before the arms listed their pairs
    }}}}  # fmt: skip
    new = {"fractions": {"0.25": {"arms": {
        "supervised": {"n": 2, "pairs": ["14:0", "17:0"]},
        "mean_teacher": {"n": 2, "pairs": ["17:0", "17:1"]},
    }}}}  # fmt: skip
    assert runs_left_out(old, new) == [
        "supervised at 0.25: 13:0, 13:1",
        "csd at 0.25: all 1 pairs",
        "mean_teacher at 0.25: 4 pairs, here 2",
    ]
    assert runs_left_out(new, old) == ["supervised at 0.25: 17:0"]  # n alone is not compared
    assert runs_left_out(old, old) == [] and runs_left_out({}, new) == []


def test_a_call_that_ran_some_pairs_keeps_a_fuller_summary_and_writes_its_own_apart(
    tmp_path, capsys
):
    from dualalign.benchmark.protocol import write_summary

    test_json = tmp_path / "test.json"
    test_json.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    metrics = tmp_path / "metrics.json"
    metrics.write_text("")

    def run(split, order):
        return {"arm": "csd", "fraction": 0.25, "split_seed": split, "order_seed": order,
                "mAP": 60.0 + order, "final": {}, "metrics_file": str(metrics),
                "predictions": str(tmp_path / "absent.json")}  # fmt: skip

    s, gates, out = ProtocolSettings(bootstrap_samples=0), {"messages": []}, str(tmp_path)
    record = [run(13, 0), run(13, 1)]
    write_summary(s, record, gates, str(test_json), out)
    kept = (tmp_path / "summary.json").read_text()
    assert json.loads(kept)["fractions"]["0.25"]["arms"]["csd"]["pairs"] == ["13:0", "13:1"]
    # a call that ran split 17 only (a worker adding one pair to the record)
    part = write_summary(s, [run(17, 0)], gates, str(test_json), out, keep_fuller=True)
    assert (tmp_path / "summary.json").read_text() == kept  # left as it is
    written = json.loads((tmp_path / "partial" / "summary.json").read_text())
    assert written == json.loads(json.dumps(part))
    assert part["fractions"]["0.25"]["arms"]["csd"]["n"] == 1
    assert (tmp_path / "partial" / "tables.md").is_file()
    printed = capsys.readouterr().out
    assert "summarises runs that this call did not (csd at 0.25: 13:0, 13:1)" in printed
    assert "--summarize-only" in printed and "wrote " + os.path.join(out, "partial") in printed
    # a call covering the record's pairs replaces its summary
    write_summary(s, record + [run(17, 0)], gates, str(test_json), out, keep_fuller=True)
    assert json.loads((tmp_path / "summary.json").read_text())["fractions"]["0.25"]["arms"][
        "csd"
    ]["n"] == 3
