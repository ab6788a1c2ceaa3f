"""Datasets declared in the config (YAML keys or command-line opts) are registered by name."""

import uuid

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from dualalign.data.build import training_records
from dualalign.engine.setup import build_cfg
from dualalign.utils.paths import config_path

CPU_CFG = config_path("synthetic", "dualalign_R18_cpu.yaml")


def test_register_from_command_line_opts(tiny_synthetic, tmp_path):
    tag = uuid.uuid4().hex[:8]
    lab, unl = f"mylab_{tag}", f"mypool_{tag}"
    opts = [
        "DUALALIGN.DATASETS.COCO",
        f"[['{lab}', '{tiny_synthetic['labeled']}', '{tiny_synthetic['image_root']}']]",
        "DUALALIGN.DATASETS.UNLABELED",
        f"[['{unl}', '{tiny_synthetic['unlabeled']}', '{tiny_synthetic['image_root']}']]",
        "DATASETS.TRAIN",
        f"('{lab}',)",
        "DUALALIGN.DATASETS.TRAIN_UNLABELED",
        f"('{unl}',)",
        "DUALALIGN.DATASETS.LABELED_FRACTION",
        "0.5",
        "OUTPUT_DIR",
        str(tmp_path),
    ]
    cfg = build_cfg(CPU_CFG, opts)
    assert lab in DatasetCatalog.list() and unl in DatasetCatalog.list()
    recs = DatasetCatalog.get(lab)
    assert len(recs) == 8 and all("annotations" in r for r in recs)
    assert MetadataCatalog.get(lab).thing_classes == ["ASC-US", "LSIL", "HSIL", "AGC"]
    assert MetadataCatalog.get(lab).evaluator_type == "range_ap"
    pool = DatasetCatalog.get(unl)
    assert len(pool) == 8 and all("annotations" not in r for r in pool)
    labeled, unlabeled = training_records(cfg)
    assert len(labeled) in (4, 5, 6) and len(unlabeled) == 8
    # Registering the same name again with the same files is a no-op; other files are refused.
    build_cfg(CPU_CFG, opts)
    clash = list(opts)
    clash[1] = f"[['{lab}', '{tiny_synthetic['test']}', '{tiny_synthetic['image_root']}']]"
    with pytest.raises(ValueError, match="already registered"):
        build_cfg(CPU_CFG, clash)


def test_remainder_as_unlabeled(tiny_synthetic, tmp_path):
    tag = uuid.uuid4().hex[:8]
    opts = [
        "DUALALIGN.DATASETS.COCO",
        f"[['r_{tag}', '{tiny_synthetic['labeled']}', '{tiny_synthetic['image_root']}']]",
        "DATASETS.TRAIN",
        f"('r_{tag}',)",
        "DUALALIGN.DATASETS.TRAIN_UNLABELED",
        "()",
        "DUALALIGN.DATASETS.UNLABELED",
        "[]",
        "DUALALIGN.DATASETS.LABELED_FRACTION",
        "0.25",
        "DUALALIGN.DATASETS.REMAINDER_AS_UNLABELED",
        "True",
        "OUTPUT_DIR",
        str(tmp_path),
    ]
    labeled, unlabeled = training_records(build_cfg(CPU_CFG, opts))
    assert len(labeled) + len(unlabeled) == 8
    assert all("annotations" not in r for r in unlabeled)
    assert not {r["image_id"] for r in labeled} & {r["image_id"] for r in unlabeled}


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("DUALALIGN.METHOD", "fixmatch", "DUALALIGN.METHOD"),
        ("DUALALIGN.PSEUDO.SCORE_THRESH", "-0.1", "SCORE_THRESH"),
        ("DUALALIGN.PROTO.MARGIN", "0.0", "MARGIN"),
        ("DUALALIGN.MEMORY.SIZE", "0", "MEMORY.SIZE"),
        ("DUALALIGN.DATASETS.LABELED_FRACTION", "1.5", "LABELED_FRACTION"),
        ("DUALALIGN.DATASETS.READ_ERRORS", "'ignore'", "READ_ERRORS"),
    ],
)
def test_config_errors_name_key_value_and_range(key, value, match):
    with pytest.raises(ValueError, match=match) as err:
        build_cfg(CPU_CFG, [key, value])
    assert "allowed" in str(err.value)


def test_configs_are_parsed_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    evil.write_text(f"OUTPUT_DIR: !!python/object/apply:os.system ['touch {marker}']\n")
    import yaml

    with pytest.raises(yaml.constructor.ConstructorError):
        build_cfg(str(evil))
    assert not marker.exists()
    with pytest.raises(ValueError, match="YAML"):
        build_cfg(str(tmp_path / "config.py"))
