"""The built-in synthetic data set: determinism, COCO files on disk, and class statistics."""

import json
import os

import numpy as np
import pytest
from pycocotools.coco import COCO

from dualalign.data.synthetic import cli
from dualalign.data.synthetic import (
    CLASS_NAMES,
    SPLITS,
    generate_dataset,
    image_rng,
    plan_patch,
    render_patch,
)

SMALL = dict(num_labeled=12, num_unlabeled=20, num_val=4, num_test=8)


def _rng(seed):
    return np.random.default_rng(seed)


def _check_boxes(annotations, size):
    for ann in annotations:
        x, y, w, h = ann["bbox"]
        assert 1 <= ann["category_id"] <= len(CLASS_NAMES)
        assert w > 0 and h > 0
        assert x >= 0 and y >= 0 and x + w <= size and y + h <= size


@pytest.fixture(scope="module")
def labeled60():
    """The 60 patches of the default labelled split (seed 0), with their plans."""
    out = []
    for i in range(60):
        rng = image_rng(0, "labeled", i)
        plan = plan_patch(rng)
        rng = image_rng(0, "labeled", i)
        image, anns = render_patch(rng)
        out.append((plan, image, anns))
    return out


def test_render_patch_is_deterministic():
    a_img, a_ann = render_patch(_rng(7))
    b_img, b_ann = render_patch(_rng(7))
    assert np.array_equal(a_img, b_img) and a_ann == b_ann
    c_img, _ = render_patch(_rng(8))
    assert not np.array_equal(a_img, c_img)


def test_render_patch_contract():
    image, anns = render_patch(_rng(1), image_size=256)
    assert image.dtype == np.uint8 and image.shape == (256, 256, 3)
    assert 1 <= len(anns) <= 5
    _check_boxes(anns, 256)
    assert all(isinstance(v, float) for a in anns for v in a["bbox"])
    # Light background, darker cells.
    assert np.median(image) > 200 and image.min() < 120
    _, none = render_patch(_rng(2), num_abnormal=0)
    assert none == []
    for seed in range(5):
        _, three = render_patch(_rng(seed), num_abnormal=3)
        assert len(three) <= 3
        _check_boxes(three, 256)


def test_sizes_scale_with_image_size_and_variation_off_is_fixed():
    small, large = plan_patch(_rng(3), 256), plan_patch(_rng(3), 512)
    assert large.scale == pytest.approx(2 * small.scale)
    for a, b in zip(small.cells, large.cells):
        assert a.kind == b.kind and b.radius == pytest.approx(2 * a.radius)
    image, anns = render_patch(_rng(3), image_size=384)
    assert image.shape == (384, 384, 3)
    _check_boxes(anns, 384)
    fixed = [plan_patch(_rng(s), 256, variation=False) for s in (4, 5)]
    assert fixed[0].scale == fixed[1].scale == 1.0
    for name, od in fixed[0].palette.od.items():
        assert np.array_equal(od, fixed[1].palette.od[name])
    varied = [plan_patch(_rng(s), 256, variation=True) for s in (4, 5)]
    assert varied[0].scale != varied[1].scale
    assert not np.array_equal(varied[0].palette.od["nucleus"], varied[1].palette.od["nucleus"])


def test_every_class_appears_in_60_labeled_images(labeled60):
    counts = np.bincount([a["category_id"] for _, _, anns in labeled60 for a in anns], minlength=5)
    assert all(counts[1:] > 0), counts
    assert all(1 <= len(anns) <= 5 for _, _, anns in labeled60)


def test_classes_differ_but_not_trivially(labeled60):
    """Honest statistics: nucleus size ASC-US vs normal, darkness and box size of HSIL."""
    rel = {}  # nucleus radius in units of the patch's cell scale
    for plan, _, _ in labeled60:
        for cell in plan.cells:
            rel.setdefault(cell.kind, []).append(cell.nucleus_radius / plan.scale)
    normal = np.array(rel["superficial"] + rel["intermediate"])
    ascus, reactive = np.array(rel["ASC-US"]), np.array(rel["reactive"])
    assert 1.4 < ascus.mean() / normal.mean() < 2.2  # ~1.5-2x the normal diameter
    assert reactive.max() > ascus.min()  # the smallest ASC-US overlap reactive normal cells

    darkness, area = {}, {}
    for _, image, anns in labeled60:
        grey = image.mean(axis=2)
        for a in anns:
            x, y, w, h = (int(v) for v in a["bbox"])
            darkness.setdefault(a["category_id"], []).append(
                255 - grey[y : y + h, x : x + w].mean()
            )
            area.setdefault(a["category_id"], []).append(w * h)
    ascus_id, hsil_id = CLASS_NAMES.index("ASC-US") + 1, CLASS_NAMES.index("HSIL") + 1
    assert np.mean(darkness[hsil_id]) > 1.3 * np.mean(darkness[ascus_id])
    assert np.median(area[hsil_id]) < 0.7 * np.median(area[ascus_id])
    # ...but not separable by box size alone: the size ranges overlap.
    assert max(area[hsil_id]) > min(area[ascus_id])


def test_generate_dataset_writes_coco_splits(tmp_path):
    out = str(tmp_path / "syn")
    paths = generate_dataset(out, seed=1, **SMALL)
    assert set(paths) == set(SPLITS) | {"image_root"}
    assert paths["image_root"] == os.path.join(out, "images")
    patients = {}
    for split in SPLITS:
        coco = COCO(paths[split])
        with open(paths[split]) as f:
            raw = json.load(f)
        assert [(c["id"], c["name"], c["supercategory"]) for c in raw["categories"]] == [
            (i + 1, n, "abnormal") for i, n in enumerate(CLASS_NAMES)
        ]
        n = SMALL[f"num_{split}"]
        assert len(coco.imgs) == n
        for im in raw["images"]:
            assert im["file_name"].startswith(f"{split}/")
            assert os.path.isfile(os.path.join(paths["image_root"], im["file_name"]))
            assert im["width"] == im["height"] == 256
            assert im["patient_id"].startswith("P")
        patients[split] = {im["patient_id"] for im in raw["images"]}
        assert len(patients[split]) == max(1, n // 4)
        for ann in raw["annotations"]:
            x, y, w, h = ann["bbox"]
            assert ann["area"] == pytest.approx(w * h) and ann["iscrowd"] == 0
        _check_boxes(raw["annotations"], 256)
        if split == "unlabeled":
            assert raw["annotations"] == []
        else:
            assert {a["image_id"] for a in raw["annotations"]} == set(coco.imgs)
    splits = list(patients)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            assert not patients[a] & patients[b], (a, b)
    hidden = COCO(os.path.join(out, "unlabeled_with_gt.json"))
    per_image = [len(hidden.getAnnIds(imgIds=i)) for i in hidden.imgs]
    assert 0 < per_image.count(0) < len(per_image)  # ~20% of mined patches are negatives
    assert max(per_image) <= 5


def test_generate_dataset_is_deterministic_and_idempotent(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    pa = generate_dataset(a, seed=2, **SMALL)
    generate_dataset(b, seed=2, **SMALL)
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    assert len(files) == 1 + 5 + sum(SMALL.values())  # manifest, 5 jsons, images
    for rel in files:
        with open(os.path.join(a, rel), "rb") as fa, open(os.path.join(b, rel), "rb") as fb:
            assert fa.read() == fb.read(), rel

    mtimes = {rel: os.stat(os.path.join(a, rel)).st_mtime_ns for rel in files}
    assert generate_dataset(a, seed=2, **SMALL) == pa
    assert {rel: os.stat(os.path.join(a, rel)).st_mtime_ns for rel in files} == mtimes

    # Other parameters regenerate; image i does not depend on how many others there are.
    fewer = dict(SMALL, num_labeled=5)
    generate_dataset(a, seed=2, **fewer)
    names = sorted(os.listdir(os.path.join(a, "images", "labeled")))
    assert names == [f"{i:06d}.png" for i in range(5)]
    with (
        open(os.path.join(a, "images/labeled/000003.png"), "rb") as fa,
        open(os.path.join(b, "images/labeled/000003.png"), "rb") as fb,
    ):
        assert fa.read() == fb.read()

    # A missing image makes the set incomplete: it is written again.
    os.remove(os.path.join(a, "images", "val", "000001.png"))
    generate_dataset(a, seed=2, **fewer)
    assert os.path.isfile(os.path.join(a, "images", "val", "000001.png"))


def test_generate_dataset_with_jobs_writes_the_same_files(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    generate_dataset(a, seed=2, **SMALL)
    generate_dataset(b, seed=2, jobs=2, **SMALL)
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    assert files == sorted(
        os.path.relpath(os.path.join(d, f), b) for d, _, fs in os.walk(b) for f in fs
    )
    for rel in files:
        with open(os.path.join(a, rel), "rb") as fa, open(os.path.join(b, rel), "rb") as fb:
            assert fa.read() == fb.read(), rel
    with pytest.raises(ValueError, match="jobs >= 1"):
        generate_dataset(str(tmp_path / "c"), seed=2, jobs=0, **SMALL)


def test_make_synthetic_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    cli.main(
        [
            "--out",
            str(out),
            "--seed",
            "3",
            "--num-labeled",
            "3",
            "--num-unlabeled",
            "2",
            "--num-val",
            "1",
            "--num-test",
            "1",
            "--no-variation",
        ]
    )
    text = capsys.readouterr().out
    for split in SPLITS:
        assert f"{split}: {out / (split + '.json')}" in text
    with open(out / "manifest.json") as f:
        assert json.load(f)["params"]["variation"] is False
    cli.main(["--preview", str(tmp_path / "p.png"), "--grid", "1"])
    assert (tmp_path / "p.png").stat().st_size > 0
