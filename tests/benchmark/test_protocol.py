"""The two-stage protocol end to end on a tiny set; its data, search points, stage B, script."""

import dataclasses
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
from dualalign.benchmark.stage_a import burn_in, model_digest


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
    # the names the records and docs use (e.g. an oracle's DATASETS.TRAIN adds to protocol_train)
    assert data["opts"][data["opts"].index("DATASETS.TRAIN") + 1] == "('protocol_train',)"
    assert data["test_name"] == "protocol_test" and data["val_name"] == "protocol_val"
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
    assert (low.INPUT.MIN_SIZE_TRAIN, low.INPUT.MAX_SIZE_TEST) == ((480,), 640)  # the default
    small = prepare_cervix93_protocol(root, False, label="c93s", short_side=320)
    cfg = build_cfg(cfg_file, small["opts"] + small["fraction_opts"](0.25))
    assert cfg.INPUT.MIN_SIZE_TRAIN == (320,) and cfg.INPUT.MIN_SIZE_TEST == 320
    assert cfg.INPUT.MAX_SIZE_TRAIN == cfg.INPUT.MAX_SIZE_TEST == 427  # the 4:3 frame, whole
    with pytest.raises(ValueError, match="short_side 32"):
        prepare_cervix93_protocol(root, False, short_side=32)


def test_script_flags_reach_the_settings(monkeypatch, capsys):
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
    script.main(["--arms", "supervised", "null_control", "dualalign", "csd", "--contrast",
                 "dualalign", "null_control", "--contrast", "csd", "supervised"])  # fmt: skip
    assert seen["settings"].contrasts == (("dualalign", "null_control"), ("csd", "supervised"))
    with pytest.raises(SystemExit):  # an arm the protocol does not know
        script.main(["--contrast", "dualalign", "no_such_arm"])
    monkeypatch.setattr(script, "summarize_finished", fake_run)
    script.main(["--select-on-val", "--summarize-only", "--tag", "w05", "--reference-tag", "ref",
                 "--arms", "self_training", "teacher_null_control",
                 "--contrast", "self_training", "teacher_null_control@ref"])  # fmt: skip
    s = seen["settings"]
    assert s.reference_tags == ("ref",) and s.tag == "w05" and s.score_split == "val"
    assert s.contrasts == (("self_training", "teacher_null_control@ref"),)
    with pytest.raises(SystemExit):  # reference points are read by a val summary only
        script.main(["--reference-tag", "ref"])
    with pytest.raises(SystemExit):  # a contrast with a point whose runs are not read
        script.main(["--select-on-val", "--summarize-only", "--contrast", "self_training",
                     "teacher_null_control@ref"])  # fmt: skip
    with pytest.raises(SystemExit):  # a contrast with an arm whose runs are not read
        script.main(["--select-on-val", "--summarize-only", "--tag", "w05", "--reference-tag",
                     "ref", "--arms", "self_training", "--contrast", "self_training",
                     "teacher_null_control@ref"])  # fmt: skip
    assert "add teacher_null_control to --arms" in capsys.readouterr().err
    cervix = {}
    monkeypatch.setattr(
        script,
        "prepare_cervix93_protocol",
        lambda root, agnostic, label, short_side: cervix.update(
            root=root, agnostic=agnostic, label=label, short_side=short_side
        ),
    )
    script.main(["--dataset", "cervix93_agnostic", "--data-root", "c93", "--short-side", "320",
                 "--summarize-only"])  # fmt: skip
    assert cervix == {"root": "c93", "agnostic": True, "label": "cervix93_agnostic_protocol",
                      "short_side": 320}  # fmt: skip
    assert seen["out"] == os.path.join("results", "protocol", "cervix93_agnostic")
    script.main(["--dataset", "cervix93", "--data-root", "c93", "--summarize-only"])
    assert cervix["short_side"] == 480 and not cervix["agnostic"]  # the data set's default
    with pytest.raises(SystemExit):  # the synthetic patches have one size
        script.main(["--short-side", "320"])
    from dualalign.benchmark.datasets import prepare_cervix93_protocol

    monkeypatch.setattr(script, "prepare_cervix93_protocol", prepare_cervix93_protocol)
    with pytest.raises(SystemExit):  # refused before any file is read
        script.main(["--dataset", "cervix93", "--data-root", "nowhere", "--short-side", "32"])
    assert "--short-side: short_side 32: at least 64 px" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # 0 is a size, not "the default"
        script.main(["--dataset", "cervix93", "--data-root", "nowhere", "--short-side", "0"])
    assert "--short-side: short_side 0: at least 64 px" in capsys.readouterr().err


def test_a_search_points_summary_reads_its_reference_points_runs(tmp_path, capsys):
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
    # no arm has supervised-continue pairs: no plot, and the message does not claim one
    assert not (tmp_path / "val_search" / "w05" / "paired_deltas.png").exists()
    assert "no plot: no arm has supervised-continue pairs" in capsys.readouterr().out


def test_a_search_opt_overrides_the_arms_value_but_not_the_protocols_budget():
    from dualalign.benchmark.protocol import stage_b_opts
    from dualalign.benchmark.protocol_settings import config_file
    from dualalign.engine.setup import build_cfg

    burn = {"fraction": 0.25, "split_seed": 7, "checkpoint": ""}
    data = {"opts": []}
    s = ProtocolSettings(opts=["MODEL.DEVICE", "cpu", "DUALALIGN.EMBED.GRAD_SCALE", "0.01"])
    opts = stage_b_opts(s, data, "dualalign_all", burn, 3)
    cfg = build_cfg(config_file(s, "dualalign_teacher"), opts)
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
