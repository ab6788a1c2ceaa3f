"""Autograd helpers: ``zero_with_graph`` (the zero loss of an empty reduction, still connected
to its inputs) and ``scale_gradient`` (identity forward, scaled gradient backward)."""

import torch

__all__ = ["scale_gradient", "zero_with_graph"]


def zero_with_graph(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar 0 connected to ``tensors``, so backward (and DDP) see every input as used.

    Every loss that can see zero rows (no proposal kept, no class present) returns this instead
    of the NaN of an empty mean.
    """
    return sum(t.sum() for t in tensors) * 0.0


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in the forward pass; the gradient that flows back through it is multiplied by
    ``scale`` (1: unchanged; 0: none passes, but ``x`` stays a graph node, so DDP and
    backward still see its inputs as used)."""
    if scale == 1.0:
        return x
    return _ScaleGradient.apply(x, float(scale))
