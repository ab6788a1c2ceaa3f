"""Consistency terms of the Table 2 baselines (CSD, Mean Teacher) as pure tensor functions.

Box-head outputs follow detectron2's layout: class logits ``[N, C + 1]`` with the background
class *last*, and regression deltas ``[N, 4 * C]`` (class-specific) or ``[N, 4]``
(class-agnostic), each group of four being ``(dx, dy, dw, dh)``. Boxes are XYXY in pixels of the
resized image. Every reduction that could see zero rows returns 0 with a graph instead of NaN.
"""

from typing import Dict, List, Sequence, Union

import torch
import torch.nn.functional as F
from detectron2.structures import ImageList

from ..utils.graph import zero_with_graph

__all__ = [
    "csd_losses",
    "flip_boxes",
    "flip_deltas",
    "foreground_mask",
    "js_divergence",
    "image_widths",
    "mirror",
    "flip_image",
    "softmax_mse",
]


def js_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence between the softmax distributions of two sets of logits.

    ``JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``, natural log, so
    0 <= JS <= ln 2. Computed from log-softmax (no ``+ eps``). Gradients reach both inputs.

    Args:
        p_logits (Tensor[N, K]): logits of the first view.
        q_logits (Tensor[N, K]): logits of the second view.

    Returns:
        Tensor[N]: the divergence of each row (float32).
    """
    log_p = F.log_softmax(p_logits.float(), dim=1)
    log_q = F.log_softmax(q_logits.float(), dim=1)
    log_m = torch.logaddexp(log_p, log_q) - torch.log(torch.tensor(2.0, device=log_p.device))
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(dim=1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(dim=1)
    return 0.5 * (kl_pm + kl_qm)


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean Teacher's consistency: squared distance between the two softmax distributions.

    ``mean_k (softmax(s)_k - softmax(t)_k)^2`` per row. Averaging the rows gives
    ``softmax_mse_loss(s, t) / N`` of the reference code (CuriousAI/mean-teacher,
    ``pytorch/mean_teacher/losses.py``: sum of squares / num_classes, then / minibatch size).
    The teacher side is detached, as there ("sends gradients to inputs but not the targets").

    Args:
        student_logits (Tensor[N, K]): logits that receive the gradient.
        teacher_logits (Tensor[N, K]): target logits (detached here).

    Returns:
        Tensor[N]: per-row consistency (float32).
    """
    p = F.softmax(student_logits.float(), dim=1)
    q = F.softmax(teacher_logits.detach().float(), dim=1)
    return ((p - q) ** 2).mean(dim=1)


def flip_boxes(boxes: torch.Tensor, width: Union[float, torch.Tensor]) -> torch.Tensor:
    """Mirror XYXY boxes of an image of ``width`` pixels: ``x1' = W - x2``, ``x2' = W - x1``.

    Continuous pixel coordinates (detectron2's convention), so flipping twice is the identity.
    CSD's Caffe-era code subtracts a further 1 (``W - (x2 + 1)``) for its inclusive pixel boxes.

    Args:
        boxes (Tensor[N, 4]): XYXY boxes.
        width (float or Tensor[N]): the image width (of the resized image the boxes live in).

    Returns:
        Tensor[N, 4]: the mirrored boxes (a new tensor).
    """
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    return torch.stack([width - x2, y1, width - x1, y2], dim=1)


def mirror(boxes: Sequence[torch.Tensor], widths: Sequence[int], which: Sequence[bool]):
    """Mirror the boxes of the images flagged in ``which`` (others unchanged)."""
    return [flip_boxes(b, w) if f else b for b, w, f in zip(boxes, widths, which)]


def flip_image(inputs: dict) -> dict:
    """A shallow copy of a model input dict whose ``image`` (CHW) is mirrored left-right."""
    return dict(inputs, image=torch.flip(inputs["image"], dims=[-1]))


def image_widths(images: ImageList) -> List[int]:
    """Unpadded widths of the images of a batch (the frame boxes are mirrored in)."""
    return [int(w) for _, w in images.image_sizes]


def flip_deltas(deltas: torch.Tensor) -> torch.Tensor:
    """Express regression deltas of a flipped view in the original view: negate every dx.

    Under a horizontal flip of both proposal and box, ``dx`` changes sign and ``dy, dw, dh``
    stay (CSD's ``loc[:, 0] + loc_flip[:, 0]`` term).

    Args:
        deltas (Tensor[N, 4 * k]): k groups of ``(dx, dy, dw, dh)`` per row.

    Returns:
        Tensor[N, 4 * k]: the same deltas with every dx negated (a new tensor).
    """
    sign = deltas.new_tensor([-1.0, 1.0, 1.0, 1.0])
    grouped = deltas.reshape(deltas.shape[0], deltas.shape[1] // 4, 4)
    return (grouped * sign).reshape(deltas.shape)


def foreground_mask(class_logits: torch.Tensor, thresh: float) -> torch.Tensor:
    """CSD's background elimination: rows whose best foreground probability exceeds ``thresh``.

    Args:
        class_logits (Tensor[N, C + 1]): box-head logits, background last (not differentiated).
        thresh (float): ``DUALALIGN.CSD.BG_THRESH``.

    Returns:
        Tensor[N] bool: the rows kept.
    """
    probs = F.softmax(class_logits.detach().float(), dim=1)
    if probs.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=probs.device)
    return probs[:, :-1].max(dim=1).values > thresh


def csd_losses(
    logits: torch.Tensor,
    logits_flip: torch.Tensor,
    deltas: torch.Tensor,
    deltas_flip: torch.Tensor,
    bg_thresh: float,
) -> Dict[str, torch.Tensor]:
    """CSD's consistency losses for the same proposals scored on an image and on its flip.

    Jeong et al., NeurIPS 2019, Sec. 3 (consistency for classification and localisation,
    background elimination):

    * rows kept: :func:`foreground_mask` of ``logits`` (the original view, detached);
    * ``loss_csd_cls``: mean over kept rows of :func:`js_divergence` (the paper's JSD);
    * ``loss_csd_loc``: mean over kept rows and all delta columns of
      ``(deltas - flip_deltas(deltas_flip))^2``, i.e. CSD's
      ``((dx + dx')^2 + (dy - dy')^2 + (dw - dw')^2 + (dh - dh')^2) / 4``. With class-specific
      regression every class's deltas count, as in CSD's R-FCN code (soo89/CSD-RFCN,
      ``rfcn_consistency.py`` compares all ``[N, classes, 4]`` deltas).

    Both are 0 (with a graph) when no row is kept.

    Args:
        logits, logits_flip (Tensor[N, C + 1]): box-head logits of the original and flipped view.
        deltas, deltas_flip (Tensor[N, 4 * k]): their regression deltas; ``deltas_flip`` is in the
            flipped view's frame (its dx is negated here).
        bg_thresh (float): background-elimination threshold.

    Returns:
        {"loss_csd_cls": scalar, "loss_csd_loc": scalar}.
    """
    keep = foreground_mask(logits, bg_thresh)
    if not bool(keep.any()):
        zero = zero_with_graph(logits, logits_flip, deltas, deltas_flip)
        return {"loss_csd_cls": zero, "loss_csd_loc": zero.clone()}
    cls = js_divergence(logits[keep], logits_flip[keep]).mean()
    diff = deltas[keep].float() - flip_deltas(deltas_flip[keep]).float()
    return {"loss_csd_cls": cls, "loss_csd_loc": (diff**2).mean()}
