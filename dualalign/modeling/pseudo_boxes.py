"""Box-level pseudo-labels: the teacher's detections after NMS, kept above a score threshold.

With ``DUALALIGN.PSEUDO.BOXES`` the unlabelled images get pseudo ground truth: the EMA
teacher's detections on the weak view (its ROI heads' test-time NMS and
``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` included) whose score exceeds
``DUALALIGN.PSEUDO.BOX_THRESH``. The student's unlabelled proposals are then matched and sampled
against them by IoU exactly as labelled proposals are against the true boxes
(``label_and_sample_proposals``): each object counts once however many proposals overlap it,
and the unlabelled side has background proposals too. A proposal's confidence q_i (Eq. 4) is
the teacher's score of the box it matched.

With ``DUALALIGN.PSEUDO.IGNORE_THRESH`` below ``BOX_THRESH``, the teacher's detections scored in
(``IGNORE_THRESH``, ``BOX_THRESH``] are *ignore regions*: pseudo ground truth of class -1, so that
a proposal matched to one is neither foreground nor background (detectron2's sampler skips
label -1). Without them, an object the teacher is unsure of is background to the student:
at a high ``BOX_THRESH`` (high precision, low recall) most missed objects are trained as
background (Soft Teacher's reason for weighting background proposals by the teacher's score).

With ``DUALALIGN.PSEUDO.BOX_THRESH_PER_CLASS`` the box threshold is the detection's class's
(one value per class): a class whose pseudo-boxes are less precise gets a higher threshold, and
a class at 1.0 never gives a pseudo-box (its detections above ``IGNORE_THRESH`` are ignore
regions). On the synthetic set the teacher's ASC-US boxes are 35-57 % precise at 0.9 (reactive
cells have ASC-US-sized nuclei), against 58-89 % for the other classes (docs/RESULTS.md).
"""

import zlib
from typing import List, Sequence, Union

import torch
from detectron2.structures import Instances

__all__ = [
    "box_thresh_from_config",
    "detection_thresholds",
    "oracle_box_targets",
    "oracle_keep",
    "pseudo_box_targets",
]

Thresh = Union[float, Sequence[float]]


def box_thresh_from_config(pseudo) -> Thresh:
    """The box threshold of ``cfg.DUALALIGN.PSEUDO``: ``BOX_THRESH_PER_CLASS`` as a tuple when
    set, else ``BOX_THRESH``."""
    return tuple(pseudo.BOX_THRESH_PER_CLASS) or pseudo.BOX_THRESH


def detection_thresholds(classes: torch.Tensor, score_thresh: Thresh) -> torch.Tensor:
    """Each detection's score threshold: ``score_thresh`` itself, or, given one value per
    class, the value of the detection's class (``classes``: int64, values in [0, C))."""
    if isinstance(score_thresh, (int, float)):
        return torch.full(classes.shape, float(score_thresh), device=classes.device)
    per_class = torch.as_tensor(list(score_thresh), dtype=torch.float32, device=classes.device)
    return per_class[classes]


@torch.no_grad()
def pseudo_box_targets(
    detections: List[Instances], score_thresh: Thresh, ignore_thresh: float = 1.0
) -> List[Instances]:
    """Pseudo ground truth from detections (``pred_boxes``, ``pred_classes``, ``scores``).

    Args:
        detections: per image, the teacher's detections (after NMS).
        score_thresh: keep detections whose score is strictly greater than this; a sequence
            gives one threshold per class (:func:`detection_thresholds`).
        ignore_thresh: detections scored in (``ignore_thresh``, ``score_thresh``] are kept as
            ignore regions, of class -1 (none when ``ignore_thresh >= score_thresh``).

    Returns:
        per image, ``Instances`` with ``gt_boxes``, ``gt_classes`` and ``gt_scores`` (the field
        names of ground truth, so proposals matched to them carry the class and the score).
    """
    out = []
    for det in detections:
        thresh = detection_thresholds(det.pred_classes, score_thresh)
        keep = det.scores > thresh.clamp(max=ignore_thresh)
        target = Instances(det.image_size)
        target.gt_boxes = det.pred_boxes[keep]
        classes = det.pred_classes[keep].clone()
        classes[det.scores[keep] <= thresh[keep]] = -1
        target.gt_classes = classes
        target.gt_scores = det.scores[keep]
        out.append(target)
    return out


def oracle_box_targets(batched_inputs: List[dict], device, recall: float = 1.0) -> List[Instances]:
    """Pseudo ground truth from the images' own ``instances`` (score 1): the diagnostic
    ``DUALALIGN.DIAGNOSTICS.ORACLE_PSEUDO_BOXES``, an upper bound of what pseudo-boxes can give.

    With ``recall`` below 1 (``DUALALIGN.DIAGNOSTICS.ORACLE_RECALL``) each true box is kept with
    that probability, drawn once per image from its ``file_name`` (the same boxes every time the
    image comes back): a labeller that is always right but finds only that share of the cells,
    like a teacher read at a high threshold. A dropped cell is background to the student, as a
    cell the teacher misses is.

    Raises:
        ValueError: an input without ``instances`` (the unlabelled set holds no truth).
    """
    out = []
    for i, x in enumerate(batched_inputs):
        if "instances" not in x:
            raise ValueError(
                f"DUALALIGN.DIAGNOSTICS.ORACLE_PSEUDO_BOXES: unlabelled image {i} of the batch "
                f"({x.get('file_name', 'no file name')}) has no annotations; put a set with the "
                "pool's truth in DUALALIGN.DATASETS.TRAIN_UNLABELED, or set the key False"
            )
        truth = x["instances"]
        if recall < 1.0:
            key = x.get("file_name", str(x.get("image_id")))
            truth = truth[oracle_keep(key, len(truth), recall)]
        truth = truth.to(device)
        target = Instances(truth.image_size)
        target.gt_boxes = truth.gt_boxes
        target.gt_classes = truth.gt_classes
        target.gt_scores = torch.ones(len(truth), device=device)
        out.append(target)
    return out


def oracle_keep(key: str, n: int, recall: float) -> torch.Tensor:
    """Which of an image's ``n`` true boxes a recall-limited oracle keeps: ``n`` uniform draws
    from a generator seeded by the image's ``key`` (a stable hash, not Python's salted one),
    kept below ``recall``. The same image always keeps the same boxes."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    return torch.rand(n, generator=g) < recall
