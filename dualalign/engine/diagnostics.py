"""Where the unsupervised gradient lands: its norm against the supervised loss's, per part.

Every ``DUALALIGN.DIAGNOSTICS.GRAD_SHARE_PERIOD`` steps the trainer differentiates the
supervised total and the weighted unsupervised total separately with respect to two parts of
the network and logs ``grad/<part>/unsup_over_sup`` (the ratio of the two gradient norms):

* ``box_head``: the FPN box head, whose output H feeds the classifier, the box regressor and the
  projection head alike: a large ratio here means the metric terms steer the features that
  localisation reads;
* ``backbone_last``: the last stage of the backbone's bottom-up network.

A ratio of 1 means both losses pull as hard; the unsupervised terms are already scaled by
lambda(t). Two extra backward passes through the part, so only every few steps.
"""

from typing import Dict, Iterable, List

import torch
from torch import nn

__all__ = ["diagnostic_parts", "gradient_norm_ratio"]


def diagnostic_parts(model: nn.Module) -> Dict[str, List[torch.Tensor]]:
    """The trainable parameters of the parts named in the module docstring (those found)."""
    parts = {}
    box_head = getattr(getattr(model, "roi_heads", None), "box_head", None)
    if box_head is not None:
        parts["box_head"] = [p for p in box_head.parameters() if p.requires_grad]
    bottom_up = getattr(model.backbone, "bottom_up", model.backbone)
    stages = getattr(bottom_up, "stages", None)
    if stages:
        parts["backbone_last"] = [p for p in stages[-1].parameters() if p.requires_grad]
    return {name: params for name, params in parts.items() if params}


def _norm(loss: torch.Tensor, params: Iterable[torch.Tensor]) -> torch.Tensor:
    params = list(params)
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
    return torch.stack(squares).sum().sqrt() if squares else loss.new_zeros(()).float()


def gradient_norm_ratio(
    supervised: torch.Tensor, unsupervised: torch.Tensor, parts: Dict[str, List[torch.Tensor]]
) -> Dict[str, torch.Tensor]:
    """``||d unsupervised / d part|| / ||d supervised / d part||`` for each part (0-d tensors).

    Args:
        supervised: the supervised total of the step (with its graph).
        unsupervised: the weighted unsupervised total of the step (with its graph).
        parts: ``{name: parameters}``, e.g. from :func:`diagnostic_parts`.

    Returns:
        ``{"grad/<name>/unsup_over_sup": ratio}``; 0 where the unsupervised loss does not reach
        the part, inf where only it does. The graph is kept for the step's own backward.
    """
    out = {}
    for name, params in parts.items():
        sup = _norm(supervised, params)
        unsup = _norm(unsupervised, params) if unsupervised.requires_grad else sup.new_zeros(())
        out[f"grad/{name}/unsup_over_sup"] = unsup / sup
    return out
