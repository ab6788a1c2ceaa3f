"""DUALALIGN.DIAGNOSTICS.ORACLE_PSEUDO_BOXES: the unlabelled images' own truth replaces the
teacher's pseudo-boxes (an upper bound, never a method); nothing else changes."""

import pytest
import torch
from detectron2.utils.events import EventStorage
from test_dualalign_model import CPU_CFG, build, fake_batch
from test_teacher_pipeline import SUPERVISED, TEACHER_CFG, record_sampling

from dualalign.data.build import build_paired_loader
from dualalign.engine.setup import build_cfg
from dualalign.modeling.pseudo_boxes import oracle_box_targets, oracle_keep


def test_oracle_targets_are_the_truth_at_score_one_and_refuse_an_image_without_it():
    (labelled,) = fake_batch(1, True, 0)
    (t,) = oracle_box_targets([labelled], "cpu")
    assert torch.equal(t.gt_boxes.tensor, labelled["instances"].gt_boxes.tensor)
    assert t.gt_classes.tolist() == [0, 2] and t.gt_scores.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="ORACLE_PSEUDO_BOXES.*no annotations"):
        oracle_box_targets(fake_batch(1, False, 0), "cpu")


def test_the_oracle_samples_unlabelled_proposals_against_the_truth_not_the_teacher(monkeypatch):
    torch.manual_seed(0)
    _, model = build(TEACHER_CFG, "oracle", DUALALIGN__DIAGNOSTICS__ORACLE_PSEUDO_BOXES=True)

    def no_teacher_detections(*args):
        raise AssertionError("the oracle must not ask the teacher for pseudo-boxes")

    monkeypatch.setattr(model, "teacher_detections", no_teacher_detections)
    sampled = record_sampling(monkeypatch, model.roi_heads)
    torch.manual_seed(0)
    model.train()
    with EventStorage():
        losses = model(fake_batch(2, True, 0), fake_batch(2, True, 1))  # unlabelled + truth
    assert set(SUPERVISED) < set(losses) and torch.isfinite(losses["loss_cls_u"])
    fg = torch.cat([p.gt_classes for p in sampled[2:]])
    fg = fg[fg < model.roi_heads.num_classes]
    assert len(fg) > 0 and set(fg.tolist()) <= {0, 2}  # the truth's classes


def test_the_oracle_needs_pseudo_boxes_and_unlabelled_records_with_truth():
    with pytest.raises(ValueError, match=r"DUALALIGN\.DIAGNOSTICS\.ORACLE_PSEUDO_BOXES"):
        build_cfg(CPU_CFG, ["DUALALIGN.DIAGNOSTICS.ORACLE_PSEUDO_BOXES", "True"])
    cfg = build_cfg(TEACHER_CFG, ["DUALALIGN.DIAGNOSTICS.ORACLE_PSEUDO_BOXES", "True"])
    bare = [{"file_name": "pool/0001.png", "image_id": 7, "height": 64, "width": 64}]
    with pytest.raises(ValueError, match=r"pool/0001\.png \(image_id 7\) has no annotations"):
        build_paired_loader(cfg, bare, bare)


def test_a_recall_limited_oracle_keeps_a_fixed_share_of_each_images_truth():
    (labelled,) = fake_batch(1, True, 0)
    (full,) = oracle_box_targets([labelled], "cpu", recall=1.0)
    assert len(full) == len(labelled["instances"])
    keep = oracle_keep("pool/0001.png", 4000, 0.47)
    assert torch.equal(keep, oracle_keep("pool/0001.png", 4000, 0.47))  # same image, same boxes
    assert not torch.equal(keep, oracle_keep("pool/0002.png", 4000, 0.47))
    assert abs(keep.float().mean().item() - 0.47) < 0.03
    # a lower recall keeps a subset of a higher one's boxes (one draw per box)
    assert bool((oracle_keep("pool/0001.png", 4000, 0.3) <= keep).all())
    many = dict(labelled, file_name="pool/0001.png")
    many["instances"] = labelled["instances"][torch.tensor([0, 1] * 50)]
    (t,) = oracle_box_targets([many], "cpu", recall=0.47)
    kept = oracle_keep("pool/0001.png", 100, 0.47)
    assert torch.equal(t.gt_boxes.tensor, many["instances"].gt_boxes.tensor[kept])
    assert t.gt_classes.tolist() == many["instances"].gt_classes[kept].tolist()
    assert t.gt_scores.tolist() == [1.0] * int(kept.sum())


def test_the_oracle_recall_is_checked_and_reaches_the_model():
    for bad in (["DUALALIGN.DIAGNOSTICS.ORACLE_RECALL", "0.5"],  # without the oracle
                ["DUALALIGN.DIAGNOSTICS.ORACLE_PSEUDO_BOXES", "True",
                 "DUALALIGN.DIAGNOSTICS.ORACLE_RECALL", "0.0"]):  # fmt: skip
        with pytest.raises(ValueError, match=r"DUALALIGN\.DIAGNOSTICS\.ORACLE_RECALL"):
            build_cfg(TEACHER_CFG, bad)
    _, model = build(
        TEACHER_CFG,
        "oracle",
        DUALALIGN__DIAGNOSTICS__ORACLE_PSEUDO_BOXES=True,
        DUALALIGN__DIAGNOSTICS__ORACLE_RECALL=0.5,
    )
    assert model.oracle_recall == 0.5
