"""The protocol's statistics and tables: paired differences, contrasts, diagnostics, and a
record's summary kept whole."""

import json
import math
import os

import pytest

from dualalign.benchmark.protocol import ProtocolSettings


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
    assert list(c) == [
        "self_training - teacher_null_control", "teacher_null_control - self_training"
    ]  # fmt: skip
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


def test_a_bootstrap_that_cannot_be_recomputed_is_carried_and_said_so(tmp_path):
    from dualalign.benchmark.protocol_summary import carry_bootstraps
    from dualalign.benchmark.protocol_tables import write_tables

    boot = {"delta": -0.41, "ci95": [-1.01, 0.21], "pairs": 2, "samples": 1000}
    fresh = {"delta": 0.5, "ci95": [0.1, 0.9], "pairs": 3, "samples": 1000}
    previous = {"fractions": {"0.25": {"delta_vs_supervised": {
        "a": {"bootstrap": boot}, "b": {"bootstrap": boot}, "gone": {"bootstrap": boot},
    }}}}  # fmt: skip
    summary = {"gates": {}, "settings": {}, "fractions": {"0.25": {
        "arms": {"supervised": {"mAP": 60.0, "n": 3}, "a": {"mAP": 61.0, "n": 3},
                 "b": {"mAP": 61.0, "n": 3}, "c": {"mAP": 61.0, "n": 3}},
        "delta_vs_supervised": {
            "a": {"mean": 1.0, "ci95": [0.5, 1.5], "n": 3},  # predictions missing here
            "b": {"mean": 1.0, "ci95": [0.5, 1.5], "n": 3, "bootstrap": fresh},
            "c": {"mean": 1.0, "ci95": [0.5, 1.5], "n": 3},  # never had one
        },
    }}}  # fmt: skip
    carry_bootstraps(summary, previous)
    deltas = summary["fractions"]["0.25"]["delta_vs_supervised"]
    assert deltas["a"]["bootstrap"] == dict(boot, carried=True)
    assert deltas["b"]["bootstrap"] == fresh  # a recomputed one wins
    assert "bootstrap" not in deltas["c"] and "gone" not in deltas
    write_tables(summary, str(tmp_path))
    text = (tmp_path / "tables.md").read_text()
    assert "-0.41 [-1.01, +0.21] (2, from an earlier summary)" in text
    assert "+0.50 [+0.10, +0.90] (3) |" in text


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
