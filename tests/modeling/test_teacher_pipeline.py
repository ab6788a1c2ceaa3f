"""The teacher pipeline's switches (DUALALIGN.PSEUDO.SOURCE / BOXES / CLS_LOSS, STRONG_AUG,
EMBED.GRAD_SCALE): each changes what it should and nothing else."""

import pytest
import torch
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage
from dualalign_testing import quick_schedule
from test_dualalign_model import CPU_CFG, build, fake_batch

from dualalign.modeling.pseudo_boxes import detection_thresholds, pseudo_box_targets
from dualalign.modeling.strong_view import (
    StrongViewSettings,
    gaussian_blur,
    strong_view,
    strong_views,
)
from dualalign.utils.graph import scale_gradient

TEACHER_CFG = quick_schedule("dualalign_teacher_R18_instant_test")
METRIC = ("loss_pml_l", "loss_pml_u", "loss_pmb_l", "loss_pmb_u")
SUPERVISED = ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg")
NO_STRONG = StrongViewSettings(0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0)


def step_losses(model, seed=0):
    torch.manual_seed(seed)
    model.train()
    with EventStorage():
        return model(fake_batch(2, True, 0), fake_batch(2, False, 1))


def record_sampling(monkeypatch, roi_heads) -> list:
    """Make ``roi_heads`` append every proposal it samples (labelled images first, then
    unlabelled ones, per call) to the returned list; sampling itself is unchanged."""
    sampled, sample = [], roi_heads.label_and_sample_proposals
    monkeypatch.setattr(
        roi_heads, "label_and_sample_proposals",
        lambda p, t: sampled.extend(sample(p, t)) or sampled[-len(p):],
    )  # fmt: skip
    return sampled


def one_box_labeller(score):
    """A stand-in for ``teacher_detections``: one detection of class 1 at (20, 20, 70, 70),
    scored ``score``, on every unlabelled image."""

    def detections(images, features=None):
        out = []
        for size in images.image_sizes:
            det = Instances(size)
            det.pred_boxes = Boxes(torch.tensor([[20.0, 20.0, 70.0, 70.0]]))
            det.scores, det.pred_classes = torch.tensor([score]), torch.tensor([1])
            out.append(det)
        return out

    return detections


def two_box_labeller(score0, score1):
    """A stand-in for ``teacher_detections``: a class-0 box scored ``score0`` and a class-1 box
    scored ``score1`` on every unlabelled image."""

    def detections(images, features=None):
        out = []
        for size in images.image_sizes:
            det = Instances(size)
            det.pred_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0], [50.0, 50.0, 90.0, 90.0]]))
            det.scores, det.pred_classes = torch.tensor([score0, score1]), torch.tensor([0, 1])
            out.append(det)
        return out

    return detections


def two_box_step(monkeypatch, tag, scores, **opts):
    """One step of the teacher pipeline with pseudo-boxes above 0.5 from
    :func:`two_box_labeller` (the same initial weights for every ``tag``): (model, losses)."""
    torch.manual_seed(0)
    _, model = build(TEACHER_CFG, tag, DUALALIGN__PSEUDO__BOX_THRESH=0.5, **opts)
    monkeypatch.setattr(model, "teacher_detections", two_box_labeller(*scores))
    return model, {k: v.item() for k, v in step_losses(model).items()}


def labelled_step(monkeypatch, tag, score=0.8, **opts):
    """One step of the teacher pipeline with pseudo-boxes above 0.7 from
    :func:`one_box_labeller` (the same initial weights for every ``tag``): (model, losses, the 2
    unlabelled images' sampled rows)."""
    torch.manual_seed(0)
    _, model = build(TEACHER_CFG, tag, DUALALIGN__PSEUDO__BOX_THRESH=0.7, **opts)
    monkeypatch.setattr(model, "teacher_detections", one_box_labeller(score))
    sampled = record_sampling(monkeypatch, model.roi_heads)
    return model, step_losses(model), sampled[2:]


# -- pure parts ------------------------------------------------------------------------------


def test_strong_view_keeps_shape_and_dtype_and_is_identity_at_zero_strength():
    img = torch.randint(0, 255, (3, 40, 60), dtype=torch.uint8)
    assert torch.equal(strong_view(img, NO_STRONG), img)
    g = torch.Generator().manual_seed(0)
    out = strong_view(img, StrongViewSettings(), generator=g)
    assert out.shape == img.shape and out.dtype == torch.uint8 and not torch.equal(out, img)
    again = strong_view(img, StrongViewSettings(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the draws come from the generator


def test_cutout_fills_rectangles_with_the_image_mean_and_leaves_the_rest():
    img = torch.full((3, 50, 50), 100, dtype=torch.uint8)
    img[:, :25] = 200  # mean 150
    s = StrongViewSettings(0.0, 0.0, 0.0, 0.0, 0.0, cutout_num=2, cutout_frac=0.2)
    out = strong_view(img, s, generator=torch.Generator().manual_seed(1))
    changed = (out != img).any(dim=0)
    assert 0 < changed.sum() <= 2 * 10 * 10
    assert set(out[:, changed].unique().tolist()) == {150}


def test_gaussian_blur_keeps_constants_and_mass():
    flat = torch.full((3, 20, 30), 7.0)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat)
    impulse = torch.zeros(1, 31, 31)
    impulse[0, 15, 15] = 1.0
    out = gaussian_blur(impulse, 2.0)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert out[0, 15, 15] < 1.0 and out[0, 15, 16] == pytest.approx(out[0, 15, 14].item())


def test_strong_views_replace_the_image_only():
    batch = fake_batch(2, False, 3)
    views = strong_views(batch, StrongViewSettings())
    for x, v in zip(batch, views):
        assert v["height"] == x["height"] and v["image"].shape == x["image"].shape
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(batch, fake_batch(2, False, 3)))


def test_pseudo_box_targets_keep_scores_strictly_above_the_threshold():
    det = Instances((64, 64))
    det.pred_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 3, 3]]))
    det.scores = torch.tensor([0.9, 0.7, 0.3])
    det.pred_classes = torch.tensor([2, 0, 1])
    (t,) = pseudo_box_targets([det], 0.7)
    assert t.gt_classes.tolist() == [2] and t.gt_scores.tolist() == pytest.approx([0.9])
    assert t.gt_boxes.tensor.tolist() == [[0.0, 0, 10, 10]] and t.image_size == (64, 64)


def test_pseudo_box_targets_make_the_band_below_the_threshold_ignore_regions():
    det = Instances((64, 64))
    det.pred_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 3, 3]]))
    det.scores = torch.tensor([0.9, 0.7, 0.3])
    det.pred_classes = torch.tensor([2, 0, 1])
    (t,) = pseudo_box_targets([det], 0.7, ignore_thresh=0.5)
    assert t.gt_classes.tolist() == [2, -1] and t.gt_scores.tolist() == pytest.approx([0.9, 0.7])
    (t,) = pseudo_box_targets([det], 0.7, ignore_thresh=0.7)  # no band: the default behaviour
    assert t.gt_classes.tolist() == [2]
    assert det.pred_classes.tolist() == [2, 0, 1]  # the detections are not modified


def test_detection_thresholds_take_the_detections_class_value():
    classes = torch.tensor([2, 0, 1, 0])
    assert detection_thresholds(classes, 0.7).tolist() == pytest.approx([0.7] * 4)
    assert detection_thresholds(classes, (0.5, 1.0, 0.8)).tolist() == pytest.approx(
        [0.8, 0.5, 1.0, 0.5]
    )


def test_pseudo_box_targets_per_class_thresholds():
    det = Instances((64, 64))
    det.pred_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 3, 3]]))
    det.scores = torch.tensor([0.9, 0.7, 0.3])
    det.pred_classes = torch.tensor([2, 0, 1])
    # class 0 at 0.5 (kept), class 1 at 1.0 (never a box), class 2 at 0.95 (0.9 is not above)
    (t,) = pseudo_box_targets([det], (0.5, 1.0, 0.95))
    assert t.gt_classes.tolist() == [0] and t.gt_scores.tolist() == pytest.approx([0.7])
    # with an ignore band from 0.2, what is below its class's threshold is an ignore region
    (t,) = pseudo_box_targets([det], (0.5, 1.0, 0.95), ignore_thresh=0.2)
    assert t.gt_classes.tolist() == [-1, 0, -1]
    # one value per class, all equal: the same as the single threshold
    for ignore in (1.0, 0.5):
        (a,) = pseudo_box_targets([det], 0.7, ignore)
        (b,) = pseudo_box_targets([det], (0.7, 0.7, 0.7), ignore)
        assert a.gt_classes.tolist() == b.gt_classes.tolist()
        assert torch.equal(a.gt_boxes.tensor, b.gt_boxes.tensor)


def test_per_class_box_thresholds_reach_the_model_and_change_only_their_class(monkeypatch):
    runs = {}
    for name, per_class in (("one", []), ("equal", [0.5] * 4), ("class1_off", [0.5, 0.9, 0.5, 0.5])):
        model, losses = two_box_step(
            monkeypatch, f"pc{name}", (0.8, 0.8), DUALALIGN__PSEUDO__BOX_THRESH_PER_CLASS=per_class
        )
        runs[name] = (model.box_thresh, losses)
    assert runs["one"][0] == 0.5 and runs["class1_off"][0] == (0.5, 0.9, 0.5, 0.5)
    assert runs["one"][1] == runs["equal"][1]  # one value per class, all equal: no change
    off, one = runs["class1_off"][1], runs["one"][1]
    assert all(off[k] == one[k] for k in SUPERVISED)  # the labelled side is untouched
    assert off["loss_cls_u"] != one["loss_cls_u"]  # class 1's box is gone on the unlabelled side


def test_metric_thresholds_take_rows_out_of_the_unlabeled_metric_terms_only(monkeypatch):
    runs = {}
    for name, per_class in (
        ("none", []), ("zero", [0.0] * 4), ("class0_off", [0.9] * 4), ("all_off", [1.0] * 4)
    ):  # fmt: skip
        model, losses = two_box_step(
            monkeypatch, f"mt{name}", (0.8, 0.95),
            DUALALIGN__PSEUDO__METRIC_THRESH_PER_CLASS=per_class,
        )  # fmt: skip
        stats = {k: v.item() for k, v in model.roi_heads.step_statistics().items()}
        runs[name] = (losses, stats)
    none, zero = runs["none"][0], runs["zero"][0]
    assert none == zero  # every pseudo-box scores above 0: no row leaves
    assert runs["none"][1]["pseudo/count_c0"] > 0 and runs["none"][1]["pseudo/count_c1"] > 0
    off, off_stats = runs["class0_off"]
    assert off_stats["pseudo/count_c0"] == 0  # class 0's rows (q = 0.8 <= 0.9) are out
    assert off_stats["pseudo/count_c1"] == runs["none"][1]["pseudo/count_c1"]  # 0.95 > 0.9
    assert off["loss_pml_u"] != none["loss_pml_u"]
    untouched = SUPERVISED + ("loss_cls_u", "loss_pml_l", "loss_pmb_l")
    for name in ("class0_off", "all_off"):
        assert all(runs[name][0][k] == none[k] for k in untouched), name
    assert runs["all_off"][0]["loss_pml_u"] == 0.0 and runs["all_off"][0]["loss_pmb_u"] == 0.0


@pytest.mark.parametrize("scale", [0.0, 0.25, 1.0])
def test_scale_gradient_is_identity_forward_and_scales_backward(scale):
    x = torch.randn(4, 3, requires_grad=True)
    y = scale_gradient(x, scale)
    assert torch.equal(y, x)
    (y * torch.arange(12.0).view(4, 3)).sum().backward()
    assert torch.allclose(x.grad, scale * torch.arange(12.0).view(4, 3))


# -- the model ---------------------------------------------------------------------------------


def test_paper_config_has_no_teacher_and_no_strong_view():
    _, model = build(CPU_CFG, "paper")
    assert model.teacher is None and model.strong_view is None and not model.pseudo_boxes
    assert model.roi_heads.embed_grad_scale == 1.0 and not model.roi_heads.cls_loss_unlabeled


def test_teacher_pipeline_returns_metric_terms_and_the_unlabeled_classification_loss():
    _, model = build(TEACHER_CFG, "tp")
    assert model.teacher is not None and model.strong_view is not None
    losses = step_losses(model)
    assert set(losses) == set(SUPERVISED + METRIC + ("loss_cls_u",))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0


def test_teacher_source_with_a_teacher_equal_to_the_student_gives_the_papers_losses():
    # FrozenBN: the teacher (eval mode) and the student (train mode) compute the same features,
    # so the teacher's logits of the student's proposals are the student's own: Eq. 3 exactly.
    opts = dict(MODEL__RESNETS__NORM="FrozenBN", DUALALIGN__PSEUDO__SCORE_THRESH=0.0)
    torch.manual_seed(0)
    _, paper = build(CPU_CFG, "src_s", **opts)
    torch.manual_seed(0)
    _, teacher = build(CPU_CFG, "src_t", DUALALIGN__PSEUDO__SOURCE="teacher", **opts)
    teacher.load_state_dict(paper.state_dict(), strict=False)
    teacher.teacher.start_if_due(0, teacher.student())
    a, b = step_losses(paper), step_losses(teacher)
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_teacher_labels_the_weak_view_and_the_student_sees_the_strong_one(monkeypatch):
    _, model = build(TEACHER_CFG, "views")
    seen = {}
    real = model.teacher_detections

    def spy(images, features=None):
        seen["teacher"] = images.tensor.clone()
        return real(images, features)

    monkeypatch.setattr(model, "teacher_detections", spy)
    unlabeled = fake_batch(2, False, 1)
    torch.manual_seed(0)
    model.train()
    with EventStorage():
        model(fake_batch(2, True, 0), unlabeled)
    assert torch.equal(seen["teacher"], model.preprocess_image(unlabeled).tensor)


def test_without_pseudo_boxes_the_unlabeled_side_is_background_only():
    _, model = build(TEACHER_CFG, "nobox", DUALALIGN__PSEUDO__BOX_THRESH=0.999999)
    losses = step_losses(model)
    # No foreground pseudo-label: the unlabelled prototype term has no class to align.
    assert losses["loss_pmb_u"].item() == 0.0
    assert model.roi_heads.step_statistics()["bank/age"] >= 0
    assert losses["loss_cls_u"].item() > 0  # every sampled row is background for the CE


def test_ignore_regions_take_proposals_out_of_the_unlabeled_sample_and_nothing_else(monkeypatch):
    from detectron2.structures import pairwise_iou

    region = [[8.0, 8.0, 100.0, 100.0]]  # one unsure detection (0.5) per unlabelled image

    def unsure_detections(images, features=None):
        out = []
        for size in images.image_sizes:
            det = Instances(size)
            det.pred_boxes = Boxes(torch.tensor(region))
            det.scores, det.pred_classes = torch.tensor([0.5]), torch.tensor([1])
            out.append(det)
        return out

    runs = {}
    for name, ignore in (("off", 1.0), ("band", 0.3)):
        torch.manual_seed(0)  # the same initial weights
        _, model = build(
            TEACHER_CFG, f"ign{name}",
            DUALALIGN__PSEUDO__BOX_THRESH=0.7, DUALALIGN__PSEUDO__IGNORE_THRESH=ignore,
        )  # fmt: skip
        monkeypatch.setattr(model, "teacher_detections", unsure_detections)
        sampled = record_sampling(monkeypatch, model.roi_heads)
        runs[name] = (step_losses(model), sampled[2:])  # the 2 unlabelled images
    (off, u_off), (band, u_band) = runs["off"], runs["band"]
    for k in SUPERVISED:  # the labelled side is sampled and trained as before
        assert torch.equal(off[k], band[k]), k
    iou = [pairwise_iou(p.proposal_boxes, Boxes(torch.tensor(region)))[:, 0] for p in u_band]
    assert all((v < 0.5).all() for v in iou)  # nothing matched to the region is sampled
    for p in u_off + u_band:  # both: every sampled unlabelled row is background
        assert (p.gt_classes == model.roi_heads.num_classes).all()
    # Through detectron2's sampler directly: 10 proposals on the region, 10 away from it.
    near = torch.tensor(region) + torch.arange(10.0)[:, None]
    far = torch.tensor([[100.0, 100.0, 120.0, 120.0]]).repeat(10, 1)
    proposals = Instances((128, 128))
    proposals.proposal_boxes = Boxes(torch.cat([near, far]))
    proposals.objectness_logits = torch.zeros(20)
    heads = model.roi_heads
    heads.proposal_append_gt = False
    (detections,) = unsure_detections(ImageList(torch.zeros(1, 3, 128, 128), [(128, 128)]))
    for ignore, kept in ((1.0, 20), (0.3, 10)):
        (target,) = pseudo_box_targets([detections], 0.7, ignore)
        with EventStorage():  # the sampler logs its fg / bg counts
            (sample,) = heads.label_and_sample_proposals([proposals], [target])
        assert len(sample) == kept and (sample.gt_classes == heads.num_classes).all()
    assert not torch.equal(off["loss_cls_u"], band["loss_cls_u"])


def test_self_training_config_has_the_classification_loss_only():
    off = {f"DUALALIGN__LOSS__{k}": False for k in ("PML_LABELED", "PML_UNLABELED",
                                                    "PMB_LABELED", "PMB_UNLABELED")}  # fmt: skip
    _, model = build(TEACHER_CFG, "st", **off)
    losses = step_losses(model)
    assert set(losses) == set(SUPERVISED + ("loss_cls_u",))
    assert not any(p.requires_grad for p in model.roi_heads.proxies.parameters())
    # Nothing reads the projection head either: frozen, so DDP waits for no gradient of it.
    assert not any(p.requires_grad for p in model.roi_heads.projection_head.parameters())
    sum(losses.values()).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable if p.dim() > 1 and p.shape[0] > 0)


def test_self_training_yaml_is_the_teacher_yaml_without_metric_terms():
    from dualalign.engine.setup import build_cfg

    st = build_cfg("configs/synthetic/self_training_R18_cpu.yaml", [])
    da = build_cfg("configs/synthetic/dualalign_teacher_R18_cpu.yaml", [])
    assert not any(st.DUALALIGN.LOSS.values()) and all(da.DUALALIGN.LOSS.values())
    st.defrost()
    st.DUALALIGN.LOSS = da.DUALALIGN.LOSS
    st.OUTPUT_DIR = da.OUTPUT_DIR
    assert st.dump() == da.dump()


def test_grad_scale_scales_the_metric_gradient_into_h_and_nothing_else():
    grads = {}
    for scale in (1.0, 0.25):
        torch.manual_seed(0)
        _, model = build(CPU_CFG, f"gs{scale}", DUALALIGN__PSEUDO__SCORE_THRESH=0.0,
                         DUALALIGN__EMBED__GRAD_SCALE=scale)  # fmt: skip
        losses = step_losses(model)
        sum(losses[k] for k in METRIC).backward()
        grads[scale] = (
            model.roi_heads.box_head.fc2.weight.grad.clone(),
            model.roi_heads.projection_head.fc1.weight.grad.clone(),
            {k: v.item() for k, v in losses.items()},
        )
    box1, proj1, loss1 = grads[1.0]
    box2, proj2, loss2 = grads[0.25]
    assert loss1 == loss2  # the forward pass is the same
    assert torch.allclose(proj1, proj2)  # the projection head's gradient is unchanged
    assert torch.allclose(box2, 0.25 * box1, atol=1e-8)  # H's is scaled


@pytest.mark.parametrize(
    "opts, key",
    [
        (["DUALALIGN.PSEUDO.BOXES", "True"], "DUALALIGN.PSEUDO.BOXES"),
        (["DUALALIGN.STRONG_AUG.ENABLED", "True"], "DUALALIGN.STRONG_AUG.ENABLED"),
        (["DUALALIGN.PSEUDO.SOURCE", "ema"], "DUALALIGN.PSEUDO.SOURCE"),
        (["DUALALIGN.PSEUDO.SOURCE", "teacher", "DUALALIGN.PSEUDO.CLS_LOSS", "True"],
         "DUALALIGN.PSEUDO.CLS_LOSS"),
        (["DUALALIGN.PSEUDO.SOURCE", "teacher", "DUALALIGN.PSEUDO.BOXES", "True",
          "DUALALIGN.PSEUDO.SOFT_BACKGROUND", "True"],
         "DUALALIGN.PSEUDO.SOFT_BACKGROUND"),  # without CLS_LOSS
        (["DUALALIGN.PSEUDO.RPN_LOSS", "True"], "DUALALIGN.PSEUDO.RPN_LOSS"),  # without BOXES
        (["DUALALIGN.PSEUDO.BOX_REG_LOSS", "True"], "DUALALIGN.PSEUDO.BOX_REG_LOSS"),
        (["DUALALIGN.EMBED.GRAD_SCALE", "-1"], "DUALALIGN.EMBED.GRAD_SCALE"),
        (["DUALALIGN.PSEUDO.IGNORE_THRESH", "0.3"], "DUALALIGN.PSEUDO.IGNORE_THRESH"),
        (["DUALALIGN.PSEUDO.BOX_THRESH_PER_CLASS", "[0.9, 0.9]"],
         "DUALALIGN.PSEUDO.BOX_THRESH_PER_CLASS"),  # without BOXES
        (["DUALALIGN.PSEUDO.SOURCE", "teacher", "DUALALIGN.PSEUDO.BOXES", "True",
          "DUALALIGN.PSEUDO.BOX_THRESH_PER_CLASS", "[0.9, 0.9]"],
         "DUALALIGN.PSEUDO.BOX_THRESH_PER_CLASS"),  # not one value per class (4)
        (["DUALALIGN.PSEUDO.SOURCE", "teacher", "DUALALIGN.PSEUDO.BOXES", "True",
          "DUALALIGN.PSEUDO.BOX_THRESH_PER_CLASS", "[0.9, 0.9, 0.9, 1.5]"],
         "DUALALIGN.PSEUDO.BOX_THRESH_PER_CLASS"),  # a value above 1
        (["DUALALIGN.PSEUDO.METRIC_THRESH_PER_CLASS", "[0.9, 0.9, 0.9, 0.9]"],
         "DUALALIGN.PSEUDO.METRIC_THRESH_PER_CLASS"),  # without BOXES
        (["DUALALIGN.PSEUDO.SOURCE", "teacher", "DUALALIGN.PSEUDO.BOXES", "True",
          "DUALALIGN.PSEUDO.METRIC_THRESH_PER_CLASS", "[0.9]"],
         "DUALALIGN.PSEUDO.METRIC_THRESH_PER_CLASS"),  # not one value per class (4)
    ],
)  # fmt: skip
def test_impossible_teacher_settings_are_refused_with_the_key(opts, key):
    from dualalign.engine.setup import build_cfg

    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_cfg(CPU_CFG, opts)
