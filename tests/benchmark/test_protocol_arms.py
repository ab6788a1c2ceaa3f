"""The protocol's arms: each builds, and each variant differs from its base in its own keys only."""

import functools
import math

import pytest

from dualalign.benchmark.protocol import ProtocolSettings


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


def test_arm_names_of_contrasts_may_name_another_search_points_runs():
    from dualalign.benchmark.protocol import split_arm_tag

    assert split_arm_tag("self_training") == ("self_training", "")
    assert split_arm_tag("teacher_null_control@ref") == ("teacher_null_control", "ref")
    for bad in ("no_such_arm", "no_such_arm@ref", "self_training@"):
        with pytest.raises(ValueError, match="names no protocol arm"):
            split_arm_tag(bad)


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


def test_the_precise_arm_is_the_tuned_arm_with_per_class_metric_thresholds_only():
    from dualalign.benchmark.protocol import ARMS
    from dualalign.benchmark.protocol_settings import config_file
    from dualalign.engine.setup import build_cfg

    s = ProtocolSettings()
    a, b = (
        build_cfg(config_file(s, ARMS[arm][0]), ARMS[arm][1])
        for arm in ("dualalign_all_tuned_precise", "dualalign_all_tuned")
    )
    precise = list(a.DUALALIGN.PSEUDO.METRIC_THRESH_PER_CLASS)
    assert precise == pytest.approx([1.0, 0.95, 0.98, 0.98])
    assert list(b.DUALALIGN.PSEUDO.METRIC_THRESH_PER_CLASS) == []
    a.defrost()
    a.DUALALIGN.PSEUDO.METRIC_THRESH_PER_CLASS = b.DUALALIGN.PSEUDO.METRIC_THRESH_PER_CLASS
    assert a == b


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
    cfg_file = config_file(s, method)
    a, b = (build_cfg(cfg_file, stage_b_opts(s, data, x, burn, 0)) for x in (arm, base))

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
