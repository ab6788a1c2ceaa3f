"""Detections drawn on an image: one colour per class, a "name score" label per box."""

from typing import Sequence

import cv2
import numpy as np

__all__ = ["class_colour", "draw_detections"]

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
            name = class_names[cls] if 0 <= cls < len(class_names) else f"class_{cls}"
            text = f"{name} {float(scores[i]):.2f}"
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
