"""Stage A of the protocol: burn-ins (trained, reused, refused or rebuilt) and the gates."""

import dataclasses
import json
import os

import pytest

from dualalign.benchmark.protocol import ProtocolSettings
from dualalign.benchmark.protocol_settings import burn_in_dir
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
    burn_ins[1]["val_mAP_history"] = [(i, m + 2) for i, m in flat]  # flat, 2 points above
    gates = check_gates(burn_ins, s)
    assert gates["plateau"] and gates["label_limited"] is False
    assert "more iterations will not open the gap: at 25 % the labels" in gates["messages"][0]
    assert "lengthen" not in gates["messages"][0]
    burn_ins[1]["val_mAP_history"] = rising
    gates = check_gates(burn_ins, s)
    assert not gates["plateau"] and not gates["label_limited"]
    assert "lengthen --burn-in-iters so that labels" in gates["messages"][-1]  # still rising
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
    monkeypatch.setattr(
        stage_a, "run_train_net", lambda cfg, opts, out, jobs, abort_if=None: seen.append(opts)
    )
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


def test_burn_in_folders_keep_the_records_layout(tmp_path):
    # Committed records name their burn-ins this way (e.g. burn_in/f0.25_split13, f1_split0);
    # stage A and the summary of finished runs both find them through burn_in_dir.
    assert burn_in_dir(str(tmp_path), 0.25, 13) == str(tmp_path / "burn_in" / "f0.25_split13")
    assert burn_in_dir(str(tmp_path), 1.0, 0) == str(tmp_path / "burn_in" / "f1_split0")


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

    def fake_train(s, data, fraction, split, run_dir, abort_if=None):  # stands in for train_net.py
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
    not_paired = "digest .* recorded one .* not be paired .* 1 comm"
    with pytest.raises(RuntimeError, match=not_paired) as e:
        burn_in(s, data, 0.25, 0, str(tmp_path))
    assert "leave split seed 0 out and add new ones (--split-seeds N" in str(e.value)
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


def _metrics(path, losses):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps({"iteration": i, "total_loss": v}) + "\n" for i, v in losses)
    path.write_text("".join(lines))


def test_loss_mismatch_names_the_first_differing_iteration(tmp_path):
    from dualalign.benchmark.stage_a import logged_losses, loss_mismatch

    rec, new = tmp_path / "rec.json", tmp_path / "new.json"
    _metrics(rec, [(19, 1.5), (39, 0.5), (59, 1.0)])
    recorded = logged_losses(str(rec))
    assert loss_mismatch(recorded, logged_losses(str(new))) is None  # nothing logged yet
    _metrics(new, [(19, 1.5)])
    with open(new, "a") as f:
        f.write('{"iteration": 39, "total_lo')  # a line being written
    assert loss_mismatch(recorded, logged_losses(str(new))) is None
    _metrics(new, [(19, 1.5), (39, 0.49)])
    assert loss_mismatch(recorded, logged_losses(str(new))) == (
        "total_loss at iteration 39 is 0.49 here, 0.5 recorded"
    )


def test_run_train_net_stops_the_process_when_abort_if_says_why(tmp_path, monkeypatch):
    from dualalign.benchmark import protocol_settings

    fake = tmp_path / "train_net.py"  # logs one line, then would run on and leave a marker
    fake.write_text(
        "import os, sys, time\n"
        "out = sys.argv[sys.argv.index('OUTPUT_DIR') + 1]\n"
        "open(os.path.join(out, 'metrics.json'), 'w').write('{}\\n')\n"
        "if 'quick' not in sys.argv:\n"
        "    time.sleep(60)\n"
        "    open(os.path.join(out, 'finished'), 'w').close()\n"
    )
    monkeypatch.setattr(protocol_settings, "repo_root", lambda: str(tmp_path))
    out = tmp_path / "run"
    logged = lambda: "it logged" if (out / "metrics.json").is_file() else None  # noqa: E731
    with pytest.raises(RuntimeError, match="run: train_net.py stopped: it logged"):
        protocol_settings.run_train_net("c.yaml", [], str(out), 1, logged, poll_seconds=0.1)
    assert not (out / "finished").exists()
    # a run that ends before anything stops it, and one without abort_if, finish as before
    protocol_settings.run_train_net("c.yaml", ["quick"], str(tmp_path / "a"), 1, lambda: None, 0.1)
    protocol_settings.run_train_net("c.yaml", ["quick"], str(tmp_path / "b"), 1)
    assert (tmp_path / "b" / "metrics.json").is_file()


def test_a_rebuild_that_parts_from_the_recorded_losses_stops_early(tmp_path, monkeypatch):
    from dualalign.benchmark import stage_a

    calls = []

    def fake_train(s, data, fraction, split, run_dir, abort_if=None):  # logs, then is stopped
        calls.append(abort_if)
        _metrics(tmp_path / run_dir / "metrics.json", [(19, 1.4950)])
        reason = abort_if() if abort_if else None
        if reason:
            raise RuntimeError(f"{run_dir}: train_net.py stopped: {reason}")
        raise AssertionError("trained to the end")

    monkeypatch.setattr(stage_a, "_train_burn_in", fake_train)
    val = tmp_path / "val.json"
    val.write_text(json.dumps({"images": [{"id": 1}]}))
    s = ProtocolSettings(burn_in_iters=10, fractions=(0.25,), arms=("supervised",))
    run_dir = tmp_path / "burn_in" / "f0.25_split0"
    record = {
        "fraction": 0.25, "split_seed": 0, "iterations": 10, "lr_steps": [7, 8], "val_images": 1,
        "precise_bn_iters": 200, "val_mAP_history": [[9, 50.0]],
        "checkpoint": str(run_dir / "model_final.pth"), "model_digest": "abc",
    }  # fmt: skip
    _metrics(run_dir / "metrics.json", [(19, 1.5026)])
    (run_dir / "result.json").write_text(json.dumps(record))
    stage_b = tmp_path / "runs" / "supervised_f0.25_split0_order0"
    stage_b.mkdir(parents=True)
    (stage_b / "result.json").write_text(
        json.dumps({"fraction": 0.25, "split_seed": 0, "burn_in_digest": "abc"})
    )
    with pytest.raises(RuntimeError, match="stopped early: its total_loss at iteration 19 is "
                       "1.495 here, 1.5026 recorded: this machine .* 1 committed"):  # fmt: skip
        burn_in(s, {"val_json": str(val)}, 0.25, 0, str(tmp_path))
    assert callable(calls[0])
    assert json.loads((run_dir / "result.json").read_text()) == record  # nothing overwritten
