"""AP over an IoU range: a hand-computed case, edge cases, parse_iou_range, RangeAPEvaluator."""

import json
import math
import uuid

import pytest

from dualalign.evaluation.range_ap import (
    coco_from_dict,
    dumps_result,
    evaluate_coco_range,
    format_ap_table,
    parse_iou_range,
)

IOUS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
KEYS = ["0.10", "0.20", "0.30", "0.40", "0.50", "0.60", "0.70"]

# Two images, category ids 3 ("A"), 7 ("B") and 12 ("C", declared but without GT).
GT = {
    "images": [{"id": 1, "width": 300, "height": 300}, {"id": 2, "width": 300, "height": 300}],
    "categories": [{"id": 3, "name": "A"}, {"id": 7, "name": "B"}, {"id": 12, "name": "C"}],
    "annotations": [
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10]},  # a1
        {"image_id": 1, "category_id": 3, "bbox": [50, 50, 10, 10]},  # a2
        {"image_id": 1, "category_id": 7, "bbox": [100, 100, 10, 10]},  # b1
        {"image_id": 2, "category_id": 3, "bbox": [0, 0, 20, 20]},  # a3
    ],
}
# A box [x, y, w, 10] inside a 10x10 GT at the same corner has IoU w / 10.
PREDS = [
    {"image_id": 1, "category_id": 3, "bbox": [0, 0, 5.5, 10], "score": 0.9},  # a1, IoU 0.55
    {"image_id": 2, "category_id": 3, "bbox": [200, 200, 10, 10], "score": 0.8},  # no overlap
    {"image_id": 2, "category_id": 3, "bbox": [0, 0, 20, 20], "score": 0.7},  # a3, IoU 1
    {"image_id": 1, "category_id": 3, "bbox": [50, 50, 3.5, 10], "score": 0.6},  # a2, IoU 0.35
    {"image_id": 1, "category_id": 7, "bbox": [100, 100, 6.5, 10], "score": 0.95},  # b1, IoU .65
    {"image_id": 2, "category_id": 7, "bbox": [50, 50, 10, 10], "score": 0.5},  # no B GT there
    {"image_id": 2, "category_id": 12, "bbox": [50, 50, 10, 10], "score": 0.5},  # C: no GT
]

# Hand computation, COCO 101-point interpolation: recall thresholds r = 0, 0.01, ..., 1; the
# precision at r is max precision at recall >= r (0 beyond the max recall).
# Class A (3 GT), detections by score: p1(IoU .55), p2(FP), p3(IoU 1), p4(IoU .35).
#   t in .1-.3: TP FP TP TP -> recall 1/3 1/3 2/3 1, precision 1 1/2 2/3 3/4
#       envelope 1 .75 .75 .75: r in [0, .33] (34 pts) -> 1, r in [.34, 1] (67 pts) -> .75
#       AP = (34 + 67 * .75) / 101 = 84.25 / 101
#   t in .4-.5: TP FP TP FP -> recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2
#       r in [0, .33] -> 1 (34), r in [.34, .66] -> 2/3 (33), r >= .67 -> 0 (34)
#       AP = (34 + 33 * 2/3) / 101 = 56 / 101
#   t in .6-.7: FP FP TP FP -> recall 0 0 1/3 1/3, precision 0 0 1/3 1/4, envelope 1/3 x3, 1/4
#       r in [0, .33] -> 1/3 (34), rest 0: AP = (34 / 3) / 101 = 34 / 303
# Class B (1 GT), detections q1(IoU .65), q2(FP):
#   t <= .6: TP FP -> recall 1 1, precision 1 1/2 -> every r gets 1: AP = 1
#   t = .7: FP FP -> recall 0: AP = 0
A_AP = [84.25 / 101] * 3 + [56 / 101] * 2 + [34 / 303] * 2
B_AP = [1.0] * 6 + [0.0]
A_AP = [100 * v for v in A_AP]
B_AP = [100 * v for v in B_AP]


def _gt():
    return coco_from_dict(GT)


def test_hand_computed_case(capsys):
    r = evaluate_coco_range(_gt(), PREDS, IOUS)
    assert capsys.readouterr().out == ""  # pycocotools' prints are suppressed
    for key, a, b in zip(KEYS, A_AP, B_AP):
        assert r["per_class_per_iou"]["A"][key] == pytest.approx(a, abs=1e-6)
        assert r["per_class_per_iou"]["B"][key] == pytest.approx(b, abs=1e-6)
        assert r["per_iou"][key] == pytest.approx((a + b) / 2, abs=1e-6)
        assert math.isnan(r["per_class_per_iou"]["C"][key])
    a_mean, b_mean = sum(A_AP) / 7, sum(B_AP) / 7
    assert r["per_class"]["A"] == pytest.approx(a_mean, abs=1e-6)
    assert r["per_class"]["B"] == pytest.approx(b_mean, abs=1e-6)
    assert math.isnan(r["per_class"]["C"])
    assert r["mAP"] == pytest.approx((a_mean + b_mean) / 2, abs=1e-6)
    assert r["mAP"] == pytest.approx(sum(r["per_iou"].values()) / 7, abs=1e-6)


def test_inputs_not_modified_and_table():
    preds = json.loads(json.dumps(PREDS))
    r = evaluate_coco_range(_gt(), preds, IOUS)
    assert preds == PREDS
    table = format_ap_table(r)
    lines = table.splitlines()
    assert len(lines) == 2 + 4 and "AP@0.70" in lines[0] and "mean" in lines[-1]
    assert "n/a" in [ln for ln in lines if ln.startswith("| C")][0]


def test_perfect_predictions_are_100():
    preds = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1}
        for a in GT["annotations"]
    ]
    r = evaluate_coco_range(_gt(), preds, IOUS)
    assert r["mAP"] == 100.0
    assert r["per_class"]["A"] == 100.0 and r["per_class"]["B"] == 100.0
    assert all(v == 100.0 for v in r["per_iou"].values())


def test_no_predictions_gives_zero():
    r = evaluate_coco_range(_gt(), [], IOUS)
    assert r["mAP"] == 0.0
    assert r["per_class"]["A"] == 0.0 and r["per_class"]["B"] == 0.0
    assert all(v == 0.0 for v in r["per_iou"].values())
    assert math.isnan(r["per_class"]["C"])


def test_class_without_gt_excluded_and_null_in_json():
    with_c = evaluate_coco_range(_gt(), PREDS, IOUS)
    gt_no_c = dict(GT, categories=GT["categories"][:2])
    without_c = evaluate_coco_range(coco_from_dict(gt_no_c), PREDS[:-1], IOUS)
    assert with_c["mAP"] == pytest.approx(without_c["mAP"], abs=1e-9)
    out = json.loads(dumps_result(with_c))
    assert out["per_class"]["C"] is None
    assert out["per_class_per_iou"]["C"]["0.10"] is None


def test_bad_predictions_raise():
    with pytest.raises(ValueError, match="image_id 99"):
        evaluate_coco_range(_gt(), [dict(PREDS[0], image_id=99)], IOUS)
    with pytest.raises(ValueError, match="category_id 5"):
        evaluate_coco_range(_gt(), [dict(PREDS[0], category_id=5)], IOUS)


def test_max_dets_keeps_top_scores():
    # Low-score TP is dropped with max_dets=1 on image 1 (the top one there is an FP).
    gt = {
        "images": GT["images"][:1],
        "categories": GT["categories"][:1],
        "annotations": GT["annotations"][:1],
    }
    preds = [
        {"image_id": 1, "category_id": 3, "bbox": [200, 200, 5, 5], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.1},
    ]
    assert evaluate_coco_range(coco_from_dict(gt), preds, [0.5], max_dets=1)["mAP"] == 0.0
    assert evaluate_coco_range(coco_from_dict(gt), preds, [0.5], max_dets=2)["mAP"] == 50.0


def test_parse_iou_range():
    assert parse_iou_range("0.1:0.7:0.1") == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert parse_iou_range(" 0.5:0.95:0.05 ")[-1] == 0.95
    assert len(parse_iou_range("0.5:0.95:0.05")) == 10
    assert parse_iou_range("0.1:0.75:0.1")[-1] == 0.7
    assert parse_iou_range("0.5,0.1,0.3") == [0.1, 0.3, 0.5]
    assert parse_iou_range("0.5") == [0.5]
    for bad in ["", "a:b:c", "0.1:0.7", "0.7:0.1:0.1", "0.1:0.7:0", "0.1,0.1", "0,0.5", "1.5"]:
        with pytest.raises(ValueError):
            parse_iou_range(bad)


@pytest.mark.parametrize("gt_source", ["dataset_dicts", "json_file"])
def test_range_ap_evaluator_matches_function(tmp_path, gt_source):
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import Boxes, BoxMode, Instances

    from dualalign.evaluation import RangeAPEvaluator

    name = f"range_ap_test_{uuid.uuid4().hex[:8]}"
    id_map = {3: 0, 7: 1, 12: 2}
    dicts = []
    for img in GT["images"]:
        anns = [
            {
                "bbox": a["bbox"],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": id_map[a["category_id"]],
            }
            for a in GT["annotations"]
            if a["image_id"] == img["id"]
        ]
        dicts.append({"image_id": img["id"], "height": 300, "width": 300, "annotations": anns})
    DatasetCatalog.register(name, lambda: dicts)
    meta = MetadataCatalog.get(name)
    meta.set(thing_classes=["A", "B", "C"], thing_dataset_id_to_contiguous_id=id_map)
    if gt_source == "json_file":
        gt_dir = tmp_path.parent / f"{tmp_path.name}_gt"
        gt_dir.mkdir()
        (gt_dir / "gt.json").write_text(json.dumps(GT))
        meta.set(json_file=str(gt_dir / "gt.json"))
    try:
        # distributed=True also works in a single process (gather returns [local list])
        ev = RangeAPEvaluator(name, output_dir=str(tmp_path))
        ev.reset()
        for img in GT["images"]:
            mine = [p for p in PREDS if p["image_id"] == img["id"]]
            inst = Instances((300, 300))
            xyxy = [[x, y, x + w, y + h] for x, y, w, h in (p["bbox"] for p in mine)]
            inst.pred_boxes = Boxes(torch.tensor(xyxy, dtype=torch.float32))
            inst.scores = torch.tensor([p["score"] for p in mine])
            inst.pred_classes = torch.tensor([id_map[p["category_id"]] for p in mine])
            ev.process([{"image_id": img["id"]}], [{"instances": inst}])
        out = ev.evaluate()["bbox"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    ref = evaluate_coco_range(_gt(), PREDS, IOUS)
    assert out["mAP"] == pytest.approx(ref["mAP"], abs=1e-6)
    assert out["AP-A"] == pytest.approx(ref["per_class"]["A"], abs=1e-6)
    assert out["AP-B"] == pytest.approx(ref["per_class"]["B"], abs=1e-6)
    assert "AP-C" not in out
    for key in KEYS:
        assert out[f"AP@{key}"] == pytest.approx(ref["per_iou"][key], abs=1e-6)
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in out.items())
    saved = json.loads((tmp_path / "range_ap.json").read_text())
    assert saved["per_class"]["C"] is None
    assert len(json.loads((tmp_path / "coco_instances_results.json").read_text())) == len(PREDS)
    names = sorted(p.name for p in tmp_path.iterdir())  # no temp files left behind
    assert names == ["coco_instances_results.json", "range_ap.json"]
