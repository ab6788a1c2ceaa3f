"""Drawing detections on images.

Three styles: ``draw_fig2`` colours by correctness as in the paper's Fig. 2 (GT red, true
positives green, false positives blue); ``draw_detections`` colours by class (``class_colour``)
with a "name score" label per box, for predictions on images; ``draw_markers`` puts a small dot
in the class colour at each detection and a legend with the counts, for slide overviews, where
a cell is a few pixels and labelled boxes would merge into one block.
"""

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = [
    "FP_COLOR",
    "GT_COLOR",
    "TP_COLOR",
    "class_colour",
    "class_name",
    "draw_detections",
    "draw_fig2",
    "draw_markers",
    "grid",
    "match_detections",
]

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


# RGB, distinct on pink/blue Pap stains; classes beyond the list cycle through it.
_PALETTE = (
    (255, 215, 0),  # gold
    (0, 200, 0),  # green
    (255, 0, 0),  # red
    (0, 160, 255),  # sky blue
    (255, 120, 0),  # orange
    (160, 0, 255),  # violet
    (0, 0, 0),  # black
    (0, 255, 255),  # cyan
)
_MIN_BOX = 6  # px: boxes drawn at least this large, so cells stay visible on a thumbnail


def class_colour(class_id: int):
    """RGB colour of a class id."""
    return _PALETTE[int(class_id) % len(_PALETTE)]


def class_name(class_names: Sequence[str], class_id: int) -> str:
    """Name of a class id; ``class_<id>`` for an id outside ``class_names``."""
    class_id = int(class_id)
    return class_names[class_id] if 0 <= class_id < len(class_names) else f"class_{class_id}"


def draw_detections(
    image_rgb: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    scale: float = 1.0,
    labels: bool = True,
) -> np.ndarray:
    """Draw boxes on a copy of an image.

    Args:
        image_rgb (np.ndarray[H, W, 3] uint8): background (the image, or a slide thumbnail).
        boxes (np.ndarray[N, 4]): XYXY in the coordinates that ``scale`` maps to the image.
        classes (np.ndarray[N]): class ids (index ``class_names``).
        scores (np.ndarray[N]): confidences, written in the labels.
        class_names (list[str]): names by class id.
        scale (float): image pixels per box unit (e.g. thumbnail width / level-0 width).
        labels (bool): write ``"<class> <score>"`` above each box.

    Returns:
        np.ndarray[H, W, 3] uint8 RGB.
    """
    out = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    height, width = out.shape[:2]
    font_scale = max(0.35, min(0.6, min(height, width) / 1500))
    thickness = 1 if min(height, width) < 1024 else 2
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale
    order = np.argsort(np.asarray(scores).reshape(-1), kind="stable")  # best drawn last, on top
    for i in order:
        x0, y0, x1, y1 = boxes[i]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half_w, half_h = max(x1 - x0, _MIN_BOX) / 2, max(y1 - y0, _MIN_BOX) / 2
        p0 = (int(round(cx - half_w)), int(round(cy - half_h)))
        p1 = (int(round(cx + half_w)), int(round(cy + half_h)))
        cls = int(classes[i])
        colour = class_colour(cls)
        cv2.rectangle(out, p0, p1, colour, thickness)
        if labels:
            text = f"{class_name(class_names, cls)} {float(scores[i]):.2f}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            tx, ty = max(0, p0[0]), max(th + base, p0[1])
            cv2.rectangle(out, (tx, ty - th - base), (tx + tw, ty), colour, -1)
            ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
            cv2.putText(
                out,
                text,
                (tx, ty - base),
                cv2.FONT_HERSHEY_SIMPLEX,
                font_scale,
                ink,
                1,
                cv2.LINE_AA,
            )
    return out


def draw_markers(
    image_rgb: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    scale: float = 1.0,
    radius: Optional[int] = None,
) -> np.ndarray:
    """A slide overview: a dot per detection in its class colour, and a legend with counts.

    Args:
        image_rgb (np.ndarray[H, W, 3] uint8): background, e.g. a slide thumbnail.
        boxes (np.ndarray[N, 4]): XYXY in the coordinates that ``scale`` maps to the image.
        classes (np.ndarray[N]): class ids (index ``class_names``).
        scores (np.ndarray[N]): confidences; higher ones are drawn last, on top.
        class_names (list[str]): names by class id, listed in the legend.
        scale (float): image pixels per box unit (thumbnail width / level-0 width).
        radius (int or None): dot radius in pixels; None: 1/300 of the shorter side, >= 3.

    Returns:
        np.ndarray[H, W, 3] uint8 RGB, the size of ``image_rgb``.
    """
    out = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    height, width = out.shape[:2]
    radius = int(radius or max(3, round(min(height, width) / 300)))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    centres = np.rint((boxes[:, :2] + boxes[:, 2:]) / 2).astype(np.int64)
    for i in np.argsort(np.asarray(scores).reshape(-1), kind="stable"):
        centre = (int(centres[i, 0]), int(centres[i, 1]))
        cv2.circle(out, centre, radius + 1, (255, 255, 255), -1, cv2.LINE_AA)  # halo
        cv2.circle(out, centre, radius, class_colour(classes[i]), -1, cv2.LINE_AA)
    counts = np.bincount(classes[classes >= 0], minlength=len(class_names))
    entries = [
        (class_colour(c), f"{class_name(class_names, c)}: {int(n)}") for c, n in enumerate(counts)
    ]
    return _draw_legend(out, entries)


def _draw_legend(image: np.ndarray, entries: Sequence[Tuple[Tuple[int, int, int], str]]):
    """A white box in the top-left corner with a colour swatch and a text per entry."""
    if not entries:
        return image
    height, width = image.shape[:2]
    font_scale = max(0.4, min(2.0, min(height, width) / 1000))  # readable when shown shrunk
    thickness = 1 if font_scale < 1 else 2
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    line = th + base + 4
    swatch = th
    text_w = max(
        cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)[0][0]
        for _, t in entries
    )
    box_w, box_h = min(width, swatch + text_w + 16), min(height, line * len(entries) + 8)
    panel = image[:box_h, :box_w].astype(np.float32)
    image[:box_h, :box_w] = (panel * 0.25 + 255 * 0.75).astype(np.uint8)  # see-through white
    for k, (colour, text) in enumerate(entries):
        y = 4 + k * line
        cv2.rectangle(image, (4, y + 2), (4 + swatch, y + 2 + swatch), colour, -1)
        cv2.rectangle(image, (4, y + 2), (4 + swatch, y + 2 + swatch), (0, 0, 0), 1)
        org = (swatch + 10, y + th + 2)
        cv2.putText(
            image,
            text,
            org,
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (0, 0, 0),
            thickness,
            cv2.LINE_AA,
        )
    return image
