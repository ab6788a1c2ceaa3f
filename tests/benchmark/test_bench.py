"""The speed benchmark runs end to end and reports every measurement (no timing is asserted)."""

import json
import os
import subprocess
import sys

import pytest

from dualalign.benchmark import bench, settings
from dualalign.benchmark.interleave import interleaved_times, ratio_summary, round_medians
from dualalign.utils.paths import repo_root


@pytest.mark.slow
def test_quick_bench_writes_results(tmp_path):
    cmd = [
        sys.executable,
        os.path.join(repo_root(), "scripts", "bench.py"),
        "--quick",
        "--repeats",
        "1",
        "--rounds",
        "2",
        "--warmup",
        "0",
        "--eval-images",
        "50",
        "--large",
        "512",
        "--machine",
        "test-machine",
        "--output",
        str(tmp_path),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root())
    assert res.returncode == 0, res.stderr[-3000:]
    headline = json.loads(res.stdout.strip().splitlines()[-1])
    for key in (
        "step_ratio_vs_supervised_same_images",
        "step_ratio_vs_mean_teacher",
        "step_ratio_vs_backbone_only_same_images",
        "teacher_pipeline_step_ratio_vs_dualalign",
        "self_training_step_ratio_vs_dualalign",
        "infer_ratio_vs_plain",
        "loader_ratio",
    ):
        assert headline[key] > 0
    result = json.loads((tmp_path / "test-machine-quick.json").read_text())
    assert set(result["steps"]) == {
        "a_supervised_labeled",
        "b0_backbone_only_same_images",
        "b_supervised_same_images",
        "c_dualalign",
        "d_csd",
        "e_mean_teacher",
        "f_self_training",
        "g_dualalign_teacher",
    }
    assert "| c_dualalign |" in (tmp_path / "test-machine-quick.md").read_text()
    spread = result["headline_spread"]["step_ratio_vs_supervised_same_images"]
    assert spread["rounds"] == 2 and spread["min"] <= spread["median"] <= spread["max"]
    assert all(len(v["s_per_round"]) == 2 for v in result["steps"].values())


def test_setting_defaults_and_flag_overrides():
    paper = settings.setting(bench.parse_args(["--device", "cpu"]))
    assert (paper["size"], paper["n_l"], paper["n_u"], paper["repeats"]) == (1200, 4, 4, 10)
    # the paper setting trains from random init, so it must not keep frozen BN
    assert paper["opts"] == ["MODEL.DEVICE", "cpu"] + settings.SETTINGS["paper"]["opts"]
    assert "BN" in paper["opts"] and "FREEZE_AT" in " ".join(paper["opts"])
    quick = settings.setting(
        bench.parse_args(["--quick", "--device", "cpu", "--repeats", "1", "--warmup", "0"])
    )
    assert (quick["size"], quick["repeats"], quick["warmup"], quick["large"]) == (256, 1, 0, 1024)
    assert quick["opts"] == ["MODEL.DEVICE", "cpu"]
    # the table itself is not modified by a call
    assert settings.SETTINGS["quick"]["repeats"] == 5 and settings.SETTINGS["paper"]["opts"][0] == (
        "MODEL.WEIGHTS"
    )
    assert (paper["rounds"], quick["rounds"]) == (3, 6)
    assert settings.setting(bench.parse_args(["--quick", "--rounds", "9"]))["rounds"] == 9


def test_switch_steps_are_the_protocol_switch_arms_on_the_paper_method():
    s = settings.setting(bench.parse_args(["--quick", "--device", "cpu"]))
    plain = settings.cfg_for(s, "dualalign")
    tempered = settings.cfg_for(s, "switch_tempered")
    assert tempered.DUALALIGN.PROXY.TEMPERATURE == pytest.approx(0.111)
    assert tempered.DUALALIGN.PROXY.SQUARED_DISTANCE and not plain.DUALALIGN.PROXY.SQUARED_DISTANCE
    assert tempered.DUALALIGN.PSEUDO.BOX_THRESH == 0.0  # the worst case applies to every step
    strong = settings.cfg_for(s, "switch_strong_view")
    assert strong.DUALALIGN.STRONG_AUG.ENABLED and strong.DUALALIGN.PSEUDO.SOURCE == "teacher"
    assert not plain.DUALALIGN.STRONG_AUG.ENABLED and plain.DUALALIGN.PSEUDO.SOURCE != "teacher"
    assert settings.cfg_for(s, "switch_grad_scale").DUALALIGN.EMBED.GRAD_SCALE == 0.1
    fused = settings.cfg_for(s, "switch_flip_fusion").DUALALIGN.PSEUDO
    assert fused.FLIP_FUSION and fused.BOXES and not plain.DUALALIGN.PSEUDO.FLIP_FUSION
    soft = settings.cfg_for(s, "switch_soft_background").DUALALIGN.PSEUDO
    assert soft.SOFT_BACKGROUND and soft.CLS_LOSS and not plain.DUALALIGN.PSEUDO.SOFT_BACKGROUND
    rpn = settings.cfg_for(s, "switch_rpn_loss").DUALALIGN.PSEUDO
    assert rpn.RPN_LOSS and rpn.BOXES and not plain.DUALALIGN.PSEUDO.RPN_LOSS
    reg = settings.cfg_for(s, "switch_box_reg_loss").DUALALIGN.PSEUDO
    assert reg.BOX_REG_LOSS and reg.BOXES and not plain.DUALALIGN.PSEUDO.BOX_REG_LOSS
    assert set(settings.SWITCH_STEP_KEYS) == {
        "h_switch_teacher_source", "h_switch_pseudo_boxes", "h_switch_strong_view",
        "h_switch_flip_fusion", "h_switch_soft_background", "h_switch_rpn_loss",
        "h_switch_box_reg_loss",
        "h_switch_tempered", "h_switch_grad_scale",
    }  # fmt: skip


def test_interleaved_rounds_rotate_the_order_and_ratios_are_per_round():
    order = []
    clock = {"a": iter([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), "b": iter([2.0, 4.0, 6.0, 8.0, 9.0, 9.0])}

    def call(name):
        def run():
            order.append(name)
            return next(clock[name])

        return run

    times = interleaved_times({"a": call("a"), "b": call("b")}, rounds=3, repeats=2)
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert times["a"] == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    medians = round_medians(times)
    assert medians == {"a": [1.5, 3.5, 5.5], "b": [3.0, 7.0, 9.0]}
    summary = ratio_summary(medians["b"], medians["a"])
    assert summary["rounds"] == 3
    assert summary["median"] == pytest.approx(2.0)
    assert summary["min"] == pytest.approx(9.0 / 5.5) and summary["max"] == pytest.approx(2.0)
    assert summary["q25"] <= summary["median"] <= summary["q75"]
    one = ratio_summary([2.0], [1.0])
    assert one["median"] == one["q25"] == one["q75"] == 2.0
    with pytest.raises(ValueError, match="as many rounds"):
        ratio_summary([1.0, 2.0], [1.0])


def test_steps_only_times_the_named_steps_and_their_ratios(tmp_path):
    cmd = [sys.executable, os.path.join(repo_root(), "scripts", "bench.py"), "--quick",
           "--repeats", "1", "--rounds", "2", "--warmup", "0", "--machine", "m",
           "--output", str(tmp_path), "--steps", "c_dualalign", "g_dualalign_teacher",
           "h_switch_tempered"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root())
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "m-quick-steps.json").read_text())
    assert set(result["steps"]) == {"c_dualalign", "g_dualalign_teacher", "h_switch_tempered"}
    assert set(result["headline"]) == {
        "teacher_pipeline_step_ratio_vs_dualalign",
        "tempered_step_ratio_vs_dualalign",
    }
    assert result["inference"] == {} and result["other"] == {}
    assert "ratio to c_dualalign" in (tmp_path / "m-quick-steps.md").read_text()
