"""DualAlignRCNN / DualAlignROIHeads on CPU: losses, pseudo labels, inference parity."""


import pytest
import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from dualalign_testing import dataset_opts, quick_schedule

from dualalign.engine.checkpoint import AtomicCheckpointer
from dualalign.engine.setup import build_cfg
from dualalign.engine.trainer import Trainer
from dualalign.modeling.pseudo_labels import gt_class_scores, pseudo_label

CPU_CFG = quick_schedule("dualalign_R18_instant_test")
SUP_CFG = quick_schedule("supervised_R18_instant_test")
FAKE_PATHS = {"labeled": "l.json", "unlabeled": "u.json", "test": "t.json", "image_root": "."}


def fake_batch(n, labeled, seed):
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n):
        item = {
            "image": torch.randint(0, 255, (3, 128, 128), generator=g, dtype=torch.uint8),
            "height": 128,
            "width": 128,
        }
        if labeled:
            inst = Instances((128, 128))
            inst.gt_boxes = Boxes(
                torch.tensor([[10.0, 12.0, 50.0, 60.0], [70.0, 64.0, 120.0, 110.0]])
            )
            inst.gt_classes = torch.tensor([0, 2])
            item["instances"] = inst
        batch.append(item)
    return batch


def build(config, tag, **overrides):
    cfg = build_cfg(config, dataset_opts(FAKE_PATHS, "/tmp/unused", tag, **overrides))
    return cfg, Trainer.build_model(cfg)


def test_pseudo_label_threshold_is_strict():
    # softmax over [fg0, fg1, bg]: rows chosen so the max fg probability is 0.7, 0.5 and 0.2.
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    keep, labels, scores = pseudo_label(probs.log(), 0.5)
    assert keep.tolist() == [True, False, False]
    assert labels.tolist() == [0]
    assert scores.tolist() == pytest.approx([0.7])
    keep, labels, _ = pseudo_label(probs.log(), 0.1)
    assert keep.tolist() == [True, True, True] and labels.tolist() == [0, 0, 0]
    empty = pseudo_label(torch.zeros(0, 3), 0.5)
    assert [t.numel() for t in empty] == [0, 0, 0]
    q = gt_class_scores(probs.log(), torch.tensor([1, 0, 2]))
    assert q.tolist() == pytest.approx([0.2, 0.5, 0.6])


def test_training_forward_returns_supervised_and_metric_terms():
    torch.manual_seed(0)
    _, model = build(CPU_CFG, "fwd", DUALALIGN__PSEUDO__SCORE_THRESH=0.0)
    model.train()
    with EventStorage():
        losses = model(fake_batch(2, True, 0), fake_batch(2, False, 1))
    expected = {
        "loss_rpn_cls",
        "loss_rpn_loc",
        "loss_cls",
        "loss_box_reg",
        "loss_pml_l",
        "loss_pml_u",
        "loss_pmb_l",
        "loss_pmb_u",
    }
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    total = sum(losses.values())
    total.backward()
    proj = model.roi_heads.projection_head
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in proj.parameters())
    assert model.roi_heads.proxies.weight.grad.abs().sum() > 0
    with EventStorage():
        model.after_step()
    assert len(model.roi_heads.memory_bank) == 2  # classes 0 and 2 were present


def test_unlabeled_terms_leave_the_proxies_alone():
    torch.manual_seed(0)
    _, model = build(
        CPU_CFG,
        "unl",
        DUALALIGN__PSEUDO__SCORE_THRESH=0.0,
        DUALALIGN__LOSS__PML_LABELED=False,
        DUALALIGN__LOSS__PMB_LABELED=False,
    )
    model.train()
    with EventStorage():
        losses = model(fake_batch(1, True, 2), fake_batch(1, False, 3))
    (losses["loss_pml_u"] + losses["loss_pmb_u"]).backward()
    grad = model.roi_heads.proxies.weight.grad
    assert grad is None or torch.count_nonzero(grad) == 0
    assert any(p.grad.abs().sum() > 0 for p in model.roi_heads.projection_head.parameters())


def test_ablation_switches_remove_terms():
    _, model = build(
        CPU_CFG, "abl", DUALALIGN__LOSS__PMB_LABELED=False, DUALALIGN__LOSS__PMB_UNLABELED=False
    )
    model.train()
    with EventStorage():
        losses = model(fake_batch(1, True, 4), fake_batch(1, False, 5))
    assert "loss_pmb_l" not in losses and "loss_pmb_u" not in losses
    assert "loss_pml_l" in losses


def test_inference_parity_with_the_plain_detector(tmp_path):
    torch.manual_seed(0)
    _, dual = build(CPU_CFG, "par_da")
    dual.train()
    # A couple of optimisation-free forwards move BN statistics away from their init.
    with torch.no_grad(), EventStorage():
        dual(fake_batch(2, True, 6), fake_batch(2, False, 7))
    AtomicCheckpointer(dual, save_dir=str(tmp_path)).save("dual")
    cfg_plain, plain = build(SUP_CFG, "par_sup")
    AtomicCheckpointer(plain, save_dir=str(tmp_path)).load(str(tmp_path / "dual.pth"))
    dual.eval()
    plain.eval()
    inputs = fake_batch(2, False, 8)
    with torch.no_grad():
        a = dual(inputs)
        b = plain(inputs)
    for x, y in zip(a, b):
        x, y = x["instances"], y["instances"]
        assert len(x) == len(y)
        assert torch.equal(x.pred_boxes.tensor, y.pred_boxes.tensor)
        assert torch.equal(x.scores, y.scores)
        assert torch.equal(x.pred_classes, y.pred_classes)


def test_single_class_requires_a_background_proxy():
    with pytest.raises(ValueError, match="INCLUDE_BACKGROUND"):
        build(CPU_CFG, "c1", MODEL__ROI_HEADS__NUM_CLASSES=1)
    _, model = build(
        CPU_CFG,
        "c1bg",
        MODEL__ROI_HEADS__NUM_CLASSES=1,
        DUALALIGN__PROXY__INCLUDE_BACKGROUND=True,
        DUALALIGN__PSEUDO__SCORE_THRESH=0.0,
    )
    model.train()
    labeled = fake_batch(1, True, 9)
    labeled[0]["instances"].gt_classes = torch.tensor([0, 0])
    with EventStorage():
        losses = model(labeled, fake_batch(1, False, 10))
    assert all(torch.isfinite(v) for v in losses.values())


def test_bench_same_images_step_forwards_the_unlabeled_half_without_loss():
    """Step (b) of bench.py: the box head sees the labelled samples and k proposals per
    unlabelled image, but only the supervised losses come back (no metric term)."""
    from dualalign.benchmark.speed import forward_same_images

    terms_off = {f"DUALALIGN__LOSS__{t}": False for t in ("PML_LABELED", "PML_UNLABELED")}
    terms_off.update({f"DUALALIGN__LOSS__{t}": False for t in ("PMB_LABELED", "PMB_UNLABELED")})
    _, model = build(CPU_CFG, "bench_b", DUALALIGN__PSEUDO__PROPOSALS_PER_IMAGE=16, **terms_off)
    model.train()
    rows = []
    model.roi_heads.box_head.register_forward_hook(lambda m, i, o: rows.append(len(o)))
    with EventStorage():
        losses = forward_same_images(model, fake_batch(2, True, 0), fake_batch(2, False, 1))
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    assert len(rows) == 2 and rows[1] == 2 * 16  # labelled pass, then 16 per unlabelled image
    sum(losses.values()).backward()
    assert model.roi_heads.projection_head.fc1.weight.grad is None


@pytest.mark.parametrize(
    "switch",
    [
        {"DUALALIGN__PROXY__TEMPERATURE": 0.1},
        {"DUALALIGN__PROXY__SQUARED_DISTANCE": True},
        {"DUALALIGN__PROXY__INCLUDE_POSITIVE": True},
    ],
)
def test_each_proxy_loss_switch_changes_the_proxy_terms_only(switch):
    def losses_with(tag, **overrides):
        torch.manual_seed(0)
        _, model = build(CPU_CFG, tag, DUALALIGN__PSEUDO__SCORE_THRESH=0.0, **overrides)
        model.train()
        torch.manual_seed(1)
        with EventStorage():
            return model(fake_batch(2, True, 0), fake_batch(2, False, 1))

    name = next(iter(switch)).split("__")[-1].lower()
    base, changed = losses_with("sw0"), losses_with(f"sw_{name}", **switch)
    for key in base:
        same = torch.equal(base[key], changed[key])
        assert same == (key not in ("loss_pml_l", "loss_pml_u")), key
