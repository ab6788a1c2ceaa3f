"""Draw detections in the colours of the paper's Fig. 2: GT red, true positives green, FPs blue."""

from typing import List, Sequence

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

GT_COLOR = (220, 30, 30)  # RGB red
TP_COLOR = (30, 180, 30)  # RGB green
FP_COLOR = (30, 60, 230)  # RGB blue


def match_detections(
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    pred_classes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    iou_thresh: float = 0.5,
) -> np.ndarray:
    """Greedy COCO-style matching: each GT box matches at most one prediction of its class.

    Args:
        pred_boxes (ndarray[N, 4]), gt_boxes (ndarray[M, 4]): XYXY boxes.
        pred_scores (ndarray[N]), pred_classes (ndarray[N]), gt_classes (ndarray[M]).
        iou_thresh: minimum IoU of a true positive.

    Returns:
        ndarray[N] bool: whether each prediction is a true positive.
    """
    tp = np.zeros(len(pred_boxes), dtype=bool)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou(
        torch.as_tensor(pred_boxes, dtype=torch.float64),
        torch.as_tensor(gt_boxes, dtype=torch.float64),
    ).numpy()
    iou[np.asarray(pred_classes)[:, None] != np.asarray(gt_classes)[None, :]] = 0.0
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for i in np.argsort(-np.asarray(pred_scores), kind="stable"):
        candidates = np.where(~taken & (iou[i] >= iou_thresh))[0]
        if len(candidates):
            j = candidates[np.argmax(iou[i, candidates])]
            taken[j] = True
            tp[i] = True
    return tp


def draw_fig2(
    image_rgb: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    pred_classes: np.ndarray,
    class_names: Sequence[str],
    iou_thresh: float = 0.5,
) -> np.ndarray:
    """An RGB copy of ``image_rgb`` with GT (red), TP (green) and FP (blue) rectangles."""
    out = np.ascontiguousarray(image_rgb.copy())
    tp = match_detections(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes, iou_thresh)
    for box in np.asarray(gt_boxes).astype(int):
        cv2.rectangle(out, tuple(box[:2]), tuple(box[2:]), GT_COLOR, 2)
    for box, ok, cls, score in zip(
        np.asarray(pred_boxes).astype(int), tp, pred_classes, pred_scores
    ):
        color = TP_COLOR if ok else FP_COLOR
        cv2.rectangle(out, tuple(box[:2]), tuple(box[2:]), color, 1)
        label = f"{class_names[int(cls)]} {score:.2f}"
        cv2.putText(
            out,
            label,
            (int(box[0]), max(8, int(box[1]) - 2)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.3,
            color,
            1,
            cv2.LINE_AA,
        )
    return out


def grid(images: List[np.ndarray], columns: int) -> np.ndarray:
    """Tile equally sized HxWx3 images into rows of ``columns``, padding with white."""
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    canvas = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return canvas
