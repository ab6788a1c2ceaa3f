"""Would the labelled set, in the feature space the classifier reads, overrule a model's
confident detections? A labeller diagnostic (issue 14: what the teacher's pseudo-boxes lack).

The features are the box head's output H (the input of the class and box predictors),
L2-normalised. The labelled bank holds, for the labelled images, each true box's feature with
its class and, as *hard negatives* (label -1), the feature of each detection scored at least
``hard_negative_score`` with no true box at IoU >= ``background_iou``, i.e. of the kind
``background`` of :func:`.pseudo_errors.error_kinds` (the cells the model still takes for a
lesion on images it was trained on; a diagnostic can add those of labelled images it never
trained on). A rule keeps a detection when the bank agrees with its predicted class:

- ``nearest_mean``: the class whose mean true-box feature is closest (cosine) is its class;
- ``nn1``: the nearest bank row (cosine) is a true box of its class;
- ``knn5`` / ``knn10``: the most frequent label of the 5 / 10 nearest rows is its class (a hard
  negative vote counts as a label of its own; ties go to the smallest label).

:func:`agreement_report` compares each rule's precision on a split with truth against the score
threshold that keeps the same share of the right detections: a rule is worth a pseudo-box
switch only if it is more precise than raising the threshold. The detections are sorted into
kinds by :func:`.pseudo_errors.error_kinds` (the one home of that matching).
"""

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import BoxMode

from ..modeling.detector_steps import box_head_features
from .pseudo_errors import error_kinds

__all__ = [
    "RULES",
    "agreement",
    "agreement_report",
    "collect",
    "format_agreement_report",
    "label_bank",
]

RULES = ("nearest_mean", "nn1", "knn5", "knn10")
HARD_NEGATIVE = -1


def agreement(
    features: torch.Tensor,
    classes: torch.Tensor,
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    rule: str,
) -> torch.Tensor:
    """Bool[N]: whether the bank agrees with each detection's class under ``rule`` (see the
    module docstring). ``features`` [N, D] and ``bank_features`` [M, D] are unit rows;
    ``bank_labels`` [M] in {-1, 0..C-1}. A class without a true box in the bank never wins
    ``nearest_mean``."""
    if rule not in RULES:
        raise ValueError(f"rule {rule!r}: one of {', '.join(RULES)}")
    if not len(features) or not len(bank_labels):
        return torch.zeros(len(features), dtype=torch.bool)
    sim = features @ bank_features.T
    if rule == "nearest_mean":
        means = torch.stack(
            [bank_features[bank_labels == c].mean(0) if (bank_labels == c).any()
             else torch.zeros(bank_features.shape[1]) for c in range(num_classes)]
        )  # fmt: skip
        present = torch.tensor([bool((bank_labels == c).any()) for c in range(num_classes)])
        class_sim = features @ F.normalize(means, dim=1).T
        class_sim[:, ~present] = -float("inf")
        return class_sim.argmax(1) == classes
    k = {"nn1": 1, "knn5": 5, "knn10": 10}[rule]
    votes = bank_labels[sim.topk(min(k, len(bank_labels)), dim=1).indices]  # [N, k]
    # the most frequent label, ties to the smallest (labels shifted to be >= 0 for bincount)
    counts = torch.stack([torch.bincount(v + 1, minlength=num_classes + 1) for v in votes])
    return counts.argmax(1) - 1 == classes


def label_bank(
    images: List[dict],
    hard_negative_score: float = 0.5,
    background_iou: float = 0.1,
    negatives_only: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(features [M, D], labels [M]) of labelled images as :func:`collect` returns them: their
    true boxes with their classes (unless ``negatives_only``), then their hard negatives (label
    -1), see the module docstring. The images must have been collected with ``min_score <=
    hard_negative_score``."""
    feats, labels = [], []
    for im in images:
        if not negatives_only:
            feats.append(im["gt_features"])
            labels.append(im["gt_classes"])
        confident = im["scores"] >= hard_negative_score
        kinds, _ = error_kinds(
            im["boxes"][confident], im["classes"][confident], im["scores"][confident],
            im["gt_boxes"], im["gt_classes"], background_iou=background_iou,
        )  # fmt: skip
        lone = torch.tensor([k == "background" for k in kinds], dtype=torch.bool)
        feats.append(im["features"][confident][lone])
        labels.append(torch.full((int(lone.sum()),), HARD_NEGATIVE, dtype=torch.long))
    return torch.cat(feats), torch.cat(labels)


def _share(right: int, total: int) -> float:
    return 100.0 * right / total if total else 0.0


def agreement_report(
    bank: Tuple[torch.Tensor, torch.Tensor],
    images: List[dict],
    num_classes: int,
    base: float,
    thresholds: Sequence[float],
    rules: Sequence[str] = RULES,
) -> Dict:
    """On ``images`` (collected with truth), the detections scored >= ``base``: their kinds,
    the precision and the share of right ones kept (of those >= ``base``) at each score
    threshold, and for each rule the same with the rule applied at ``base``, with the kinds of
    the detections it drops."""
    bank_f, bank_y = bank
    rows = []  # (score, kind, {rule: agrees})
    for im in images:
        keep = im["scores"] >= base
        if not keep.any():
            continue
        boxes, classes, scores = im["boxes"][keep], im["classes"][keep], im["scores"][keep]
        kinds, _ = error_kinds(boxes, classes, scores, im["gt_boxes"], im["gt_classes"])
        agrees = {
            r: agreement(im["features"][keep], classes, bank_f, bank_y, num_classes, r)
            for r in rules
        }
        rows += [(float(s), k, {r: bool(a[i]) for r, a in agrees.items()})
                 for i, (s, k) in enumerate(zip(scores, kinds))]  # fmt: skip
    right = sum(k == "correct" for _, k, _ in rows)

    def summary(selected):
        ok = sum(k == "correct" for _, k, _ in selected)
        return {
            "detections": len(selected), "right": ok,
            "precision": _share(ok, len(selected)), "right_kept": _share(ok, right),
        }  # fmt: skip

    report = {"base": base, "detections": len(rows), "right": right, "thresholds": {}, "rules": {}}
    for t in thresholds:
        report["thresholds"][f"{t:g}"] = summary([r for r in rows if r[0] >= t])
    for rule in rules:
        dropped = {}
        for _, k, a in rows:
            if not a[rule]:
                dropped[k] = dropped.get(k, 0) + 1
        report["rules"][rule] = dict(summary([r for r in rows if r[2][rule]]), dropped=dropped)
    return report


def format_agreement_report(name: str, report: Dict) -> str:
    """Markdown tables of :func:`agreement_report`."""
    lines = [
        f"{name}: {report['detections']} detections scored >= {report['base']:g}, "
        f"{report['right']} right",
        "",
        "| kept by | detections | precision | right kept | dropped |",
        "|---|---|---|---|---|",
    ]
    for t, s in report["thresholds"].items():
        lines.append(f"| score >= {t} | {s['detections']} | {s['precision']:.1f} | "
                     f"{s['right_kept']:.1f} |  |")  # fmt: skip
    for rule, s in report["rules"].items():
        dropped = ", ".join(f"{k} {n}" for k, n in sorted(s["dropped"].items())) or "none"
        lines.append(f"| {rule} | {s['detections']} | {s['precision']:.1f} | "
                     f"{s['right_kept']:.1f} | {dropped} |")  # fmt: skip
    return "\n".join(lines)


def _truth(record: dict) -> Tuple[torch.Tensor, torch.Tensor]:
    anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
    classes = [a["category_id"] for a in anns]
    return (
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(classes, dtype=torch.long),
    )


@torch.no_grad()
def collect(model, mapper, records: List[dict], min_score: float, batch_size: int = 4):
    """Per record (a dataset dict with ``annotations``): the model's detections scored >=
    ``min_score`` (``boxes``, ``classes``, ``scores``, ``features``) and its truth
    (``gt_boxes``, ``gt_classes``, ``gt_features``), on the CPU. ``model`` is a
    ``GeneralizedRCNN`` in eval mode (a semi-supervised one: its student's networks);
    ``mapper`` its test-time ``DatasetMapper``. The records' images are scored at their own
    size (the truth is in image pixels): a mapper that resizes them is refused."""
    out = []
    roi_heads = model.roi_heads
    for i in range(0, len(records), batch_size):
        batch = records[i : i + batch_size]
        inputs = [mapper(dict(r)) for r in batch]
        for r, x in zip(batch, inputs):
            if tuple(x["image"].shape[-2:]) != (r["height"], r["width"]):
                raise ValueError(
                    f"{r.get('file_name', r.get('image_id'))}: the test-time resize changes the "
                    f"image ({r['height']}x{r['width']} -> {tuple(x['image'].shape[-2:])}); set "
                    "INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST to the images' size"
                )
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        detections, _ = roi_heads(images, features, proposals, None)
        detections = [d[d.scores >= min_score].to("cpu") for d in detections]
        truth = [_truth(r) for r in batch]
        device = images.tensor.device

        def unit_features(boxes):
            h = box_head_features(roi_heads, features, [b.to(device) for b in boxes])
            return F.normalize(h, dim=1).cpu().split([len(b) for b in boxes])

        det_f = unit_features([d.pred_boxes.tensor for d in detections])
        gt_f = unit_features([t[0] for t in truth])
        for d, (gt_boxes, gt_classes), f, g in zip(detections, truth, det_f, gt_f):
            out.append({
                "boxes": d.pred_boxes.tensor, "classes": d.pred_classes, "scores": d.scores,
                "features": f, "gt_boxes": gt_boxes, "gt_classes": gt_classes, "gt_features": g,
            })  # fmt: skip
    return out
