"""Each baseline through the real Trainer for 3 steps on a tiny generated data set."""

import json
import math
import os
import uuid

import pytest

from dualalign.data.synthetic import generate_dataset
from dualalign.engine.trainer import Trainer


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    return generate_dataset(
        root, num_labeled=4, num_unlabeled=4, num_val=2, num_test=2, image_size=64
    )


def _dataset_opts(paths):
    tag = uuid.uuid4().hex[:8]  # DatasetCatalog is process-global: one name set per test
    lab, unl, test = f"e2e_lab_{tag}", f"e2e_unl_{tag}", f"e2e_test_{tag}"
    root = paths["image_root"]
    return [
        "DUALALIGN.DATASETS.COCO",
        [[lab, paths["labeled"], root], [test, paths["test"], root]],
        "DUALALIGN.DATASETS.UNLABELED",
        [[unl, paths["unlabeled"], root]],
        "DUALALIGN.DATASETS.TRAIN_UNLABELED",
        (unl,),
        "DATASETS.TRAIN",
        (lab,),
        "DATASETS.TEST",
        (test,),
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "config_name, terms, extra",
    [
        ("csd_R18_cpu.yaml", ("loss_csd_cls", "loss_csd_loc"), ["DUALALIGN.CSD.BG_THRESH", 0.0]),
        ("mean_teacher_R18_cpu.yaml", ("loss_mt_cons",), []),
    ],
)
def test_baseline_trains_with_the_shared_trainer(
    tiny_cfg, tiny_dataset, tmp_path, config_name, terms, extra
):
    out = str(tmp_path / "out")
    opts = (
        _dataset_opts(tiny_dataset)
        + extra
        + [
            "SOLVER.MAX_ITER",
            3,
            "SOLVER.STEPS",
            (),
            "SOLVER.WARMUP_ITERS",
            1,
            "SOLVER.IMS_PER_BATCH",
            2,
            "OUTPUT_DIR",
            out,
        ]
    )
    cfg = tiny_cfg(config_name, *opts)  # dataset opts override the tiny config's empty ones
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # ends with the test-set evaluation (EvalHook), so inference runs too

    with open(os.path.join(out, "metrics.json")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    last = [r for r in records if "lambda" in r][-1]
    for name in terms + ("loss_cls", "loss_box_reg", "total_loss"):
        assert math.isfinite(last[name]), (name, last)
    assert last["lambda"] == pytest.approx(trainer.model.semi_loss_weight(last["iteration"]))
    assert os.path.isfile(os.path.join(out, "model_final.pth"))

    # The evaluated model's AP names it; a model with a teacher is scored as both networks.
    folder = os.path.join(out, "inference", cfg.DATASETS.TEST[0])
    saved = {
        name: json.load(open(os.path.join(folder, name)))
        for name in os.listdir(folder)
        if name.startswith("range_ap")
    }
    if config_name.startswith("mean_teacher"):
        assert set(saved) == {"range_ap.json", "range_ap_teacher.json", "range_ap_student.json"}
        assert saved["range_ap.json"] == saved["range_ap_teacher.json"]  # EVAL_TEACHER
        assert saved["range_ap_student.json"]["model"] == "student"
        assert saved["range_ap_teacher.json"]["model"] == "teacher"
        logged = [r for r in records if "teacher/bbox/mAP" in r][-1]  # the EvalHook's record
        assert logged["teacher/bbox/mAP"] == pytest.approx(saved["range_ap_teacher.json"]["mAP"])
        assert logged["student/bbox/mAP"] == pytest.approx(saved["range_ap_student.json"]["mAP"])
        assert logged["bbox/mAP"] == pytest.approx(saved["range_ap.json"]["mAP"])
    else:
        assert set(saved) == {"range_ap.json"} and saved["range_ap.json"]["model"] == "detector"
