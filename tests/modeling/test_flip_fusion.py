"""DUALALIGN.PSEUDO.FLIP_FUSION: the teacher labels the weak view and its mirror, fused; the
switch changes the pseudo-boxes (and what the diagnostics measure) and nothing else."""

import pytest
import torch
from detectron2.structures import Boxes, Instances
from test_dualalign_model import build, fake_batch
from test_teacher_pipeline import SUPERVISED, TEACHER_CFG, step_losses

from dualalign.baselines.consistency import flip_boxes, flip_image
from dualalign.modeling.flip_fusion import fuse_two_views


def detections(boxes, scores, classes, size=(128, 128)):
    det = Instances(size)
    det.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    det.scores = torch.tensor(scores, dtype=torch.float32)
    det.pred_classes = torch.tensor(classes, dtype=torch.long)
    return det


# -- pure parts ------------------------------------------------------------------------------


def test_flip_boxes_mirrors_x_and_is_an_involution():  # how the mirror's boxes come back
    boxes = torch.tensor([[10.0, 12.0, 50.0, 60.0], [0.0, 0.0, 128.0, 5.0]])
    flipped = flip_boxes(boxes, 128)
    assert flipped.tolist() == [[78.0, 12.0, 118.0, 60.0], [0.0, 0.0, 128.0, 5.0]]
    assert torch.equal(flip_boxes(flipped, 128), boxes)


def test_the_mirrored_inputs_flip_the_image_only():
    batch = fake_batch(2, True, 0)
    mirrored = [flip_image(x) for x in batch]
    for x, m in zip(batch, mirrored):
        assert torch.equal(m["image"], x["image"].flip(-1))
        assert m["instances"] is x["instances"] and m["height"] == x["height"]
    assert not torch.equal(batch[0]["image"], mirrored[0]["image"])  # the input is not touched


def test_a_box_both_views_find_is_the_score_weighted_mean_with_the_mean_score():
    a = detections([[10, 10, 50, 50]], [0.9], [1])
    b = detections([[14, 10, 54, 50]], [0.6], [1])
    fused = fuse_two_views(a, b)
    assert len(fused) == 1 and fused.pred_classes.tolist() == [1]
    assert fused.scores.tolist() == pytest.approx([0.75])
    expected = (0.9 * torch.tensor([10.0, 10, 50, 50]) + 0.6 * torch.tensor([14.0, 10, 54, 50])) / 1.5
    assert torch.allclose(fused.pred_boxes.tensor[0], expected)


def test_a_box_one_view_finds_keeps_half_its_score():
    a = detections([[10, 10, 50, 50], [60, 60, 100, 100]], [0.9, 0.8], [1, 2])
    b = detections([[10, 10, 50, 50], [60, 60, 100, 100]], [0.7, 0.8], [1, 3])  # class differs
    fused = fuse_two_views(a, b)
    # class 1 matched (0.8); class 2 and class 3 at the same place are two objects at 0.4
    assert fused.scores.tolist() == pytest.approx([0.8, 0.4, 0.4])
    assert fused.pred_classes.tolist() == [1, 2, 3]
    far = fuse_two_views(a[:1], detections([[80, 80, 120, 120]], [0.9], [1]))  # IoU 0
    assert far.scores.tolist() == pytest.approx([0.45, 0.45])


def test_each_detection_is_matched_once_highest_pair_first():
    a = detections([[10, 10, 50, 50], [11, 10, 51, 50]], [0.9, 0.5], [0, 0])
    b = detections([[10, 10, 50, 50]], [0.9], [0])
    fused = fuse_two_views(a, b)
    assert fused.scores.tolist() == pytest.approx([0.9, 0.25])
    assert fused.pred_boxes.tensor[1].tolist() == [11.0, 10.0, 51.0, 50.0]
    empty = detections([], [], [])
    assert len(fuse_two_views(empty, empty)) == 0
    assert fuse_two_views(a, empty).scores.tolist() == pytest.approx([0.45, 0.25])


# -- in the model ----------------------------------------------------------------------------


def fixed_teacher(box, score=0.8, cls=1):
    """A teacher that finds the same ``box`` in every image it is given (mirrored or not)."""

    def teacher_detections(images, features=None):
        return [detections([box], [score], [cls], size) for size in images.image_sizes]

    return teacher_detections


def run(monkeypatch, tag, fusion, box):
    torch.manual_seed(0)  # the same initial weights
    _, model = build(
        TEACHER_CFG, f"flip{tag}", DUALALIGN__PSEUDO__BOX_THRESH=0.5,
        DUALALIGN__PSEUDO__FLIP_FUSION=fusion,
    )  # fmt: skip
    monkeypatch.setattr(model, "teacher_detections", fixed_teacher(box))
    return model, {k: v.item() for k, v in step_losses(model).items()}


def test_flip_fusion_keeps_a_box_the_mirror_confirms_and_drops_one_it_does_not(monkeypatch):
    symmetric = [34.0, 20.0, 94.0, 80.0]  # its mirror in a 128-px image is itself
    lopsided = [4.0, 20.0, 44.0, 60.0]  # its mirror is elsewhere: one view each, 0.4 < 0.5
    _, off = run(monkeypatch, "off_sym", False, symmetric)
    _, on = run(monkeypatch, "on_sym", True, symmetric)
    assert on == off  # both views agree: the same pseudo-box, the same losses
    _, off_l = run(monkeypatch, "off_lop", False, lopsided)
    model, on_l = run(monkeypatch, "on_lop", True, lopsided)
    assert all(on_l[k] == off_l[k] for k in SUPERVISED)  # the labelled side is untouched
    assert on_l["loss_cls_u"] != off_l["loss_cls_u"]  # the unconfirmed box is gone
    _, fused = model.pseudo_label_detections(fake_batch(1, False, 1))
    assert fused[0].scores.tolist() == pytest.approx([0.4, 0.4])


def test_pseudo_label_inference_returns_what_the_teacher_labels_with(monkeypatch):
    model, _ = run(monkeypatch, "infer", True, [4.0, 20.0, 44.0, 60.0])
    model.eval()
    batch = fake_batch(2, False, 1)
    plain = model(batch)  # the teacher's inference: one view, unfused
    assert [o["instances"].scores.tolist() for o in plain] == [pytest.approx([0.8])] * 2
    model.use_pseudo_labels_for_inference(True)
    labels = model(batch)
    model.use_pseudo_labels_for_inference(False)
    assert [o["instances"].scores.tolist() for o in labels] == [pytest.approx([0.4, 0.4])] * 2
    assert sorted(labels[0]["instances"].pred_boxes.tensor[:, 0].tolist()) == [4.0, 84.0]


def test_flip_fusion_needs_pseudo_boxes():
    from dualalign.engine.setup import build_cfg
    from test_dualalign_model import CPU_CFG

    with pytest.raises(ValueError, match=r"DUALALIGN\.PSEUDO\.FLIP_FUSION"):
        build_cfg(CPU_CFG, ["DUALALIGN.PSEUDO.FLIP_FUSION", "True"])


def test_eval_pseudo_labels_key_makes_inference_the_labeller(monkeypatch):
    torch.manual_seed(0)
    _, model = build(
        TEACHER_CFG, "evalpl", DUALALIGN__PSEUDO__BOX_THRESH=0.5,
        DUALALIGN__PSEUDO__FLIP_FUSION=True, DUALALIGN__TEACHER__EVAL_PSEUDO_LABELS=True,
    )  # fmt: skip
    monkeypatch.setattr(model, "teacher_detections", fixed_teacher([4.0, 20.0, 44.0, 60.0]))
    model.eval()
    (out,) = model(fake_batch(1, False, 1))
    assert out["instances"].scores.tolist() == pytest.approx([0.4, 0.4])


def test_eval_pseudo_labels_without_a_teacher_is_refused_with_the_key():
    from test_dualalign_model import CPU_CFG

    with pytest.raises(ValueError, match=r"DUALALIGN\.TEACHER\.EVAL_PSEUDO_LABELS"):
        build(CPU_CFG, "evalplnt", DUALALIGN__TEACHER__EVAL_PSEUDO_LABELS=True)
