"""The projection head of Eq. 1 and the learnable class proxies of Eq. 2-3."""

import math

import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import nn

__all__ = ["ProjectionHead", "ClassProxies"]

# L2-normalisation floor: tiny, yet representable in float16 so mixed precision cannot divide
# by a flushed-to-zero norm.
_NORM_EPS = 1e-6


class ProjectionHead(nn.Module):
    """Maps ROI box-head features into the metric space, Eq. 1: x = W2 relu(W1 H).

    Both layers use detectron2's ``c2_xavier_fill`` (Caffe2 XavierFill, i.e. kaiming-uniform
    with a=1, bias 0), the init of the FPN box head whose output H it consumes.
    """

    def __init__(self, in_dim=1024, hidden_dim=512, out_dim=128, normalize=True):
        """
        Args:
            in_dim (int): size of H, the box-head feature (1024 for detectron2's FPN head).
            hidden_dim (int): output size of W1.
            out_dim (int): D, the metric-space dimension (output size of W2).
            normalize (bool): L2-normalise the embeddings (DUALALIGN.EMBED.NORMALIZE).
        """
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.normalize = normalize
        for layer in (self.fc1, self.fc2):
            weight_init.c2_xavier_fill(layer)

    @property
    def out_dim(self):
        return self.fc2.out_features

    def forward(self, H):
        """
        Args:
            H (Tensor[N, in_dim]): proposal features.

        Returns:
            Tensor[N, out_dim]: embeddings x, unit length when ``normalize``.
        """
        x = self.fc2(F.relu(self.fc1(H)))
        if self.normalize:
            x = F.normalize(x, dim=1, eps=_NORM_EPS)
        return x

    def extra_repr(self):
        return f"normalize={self.normalize}"


class ClassProxies(nn.Module):
    """Learnable class proxies p_c of Eq. 2-3, one row per class (+ an optional background).

    ``weight`` is a plain Parameter so the trainer can put it in its own optimizer param group
    (DUALALIGN.PROXY.BASE_LR). It is drawn from N(0, 1/D): each row then has an expected
    squared norm of 1, on the scale of the normalised embeddings, and random rows in high
    dimension are nearly orthogonal, so no two classes start on top of each other.

    Attributes:
        background_index (int or None): the row of the background proxy (C), or None.
    """

    def __init__(self, num_classes, dim, include_background=False, normalize=True):
        """
        Args:
            num_classes (int): C, the foreground classes.
            dim (int): D, the metric-space dimension.
            include_background (bool): add a background proxy as row C; Eq. 2 needs two
                proxies, so C == 1 requires it (DUALALIGN.PROXY.INCLUDE_BACKGROUND).
            normalize (bool): return L2-normalised proxies (DUALALIGN.EMBED.NORMALIZE).
        """
        super().__init__()
        self.num_classes = num_classes
        self.background_index = num_classes if include_background else None
        self.normalize = normalize
        self.weight = nn.Parameter(torch.empty(num_classes + int(include_background), dim))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(self.weight.shape[1]))

    @property
    def num_proxies(self):
        """int: C, or C + 1 with a background proxy."""
        return self.weight.shape[0]

    def forward(self, detach: bool = False):
        """
        Args:
            detach (bool): cut the graph to ``weight``; use it for the unlabelled loss (Eq. 3),
                since "we only update the proxies from the labeled data".

        Returns:
            Tensor[C', D]: the proxies, unit length when ``normalize``.
        """
        p = self.weight.detach() if detach else self.weight
        if self.normalize:
            p = F.normalize(p, dim=1, eps=_NORM_EPS)
        return p

    def extra_repr(self):
        return (
            f"num_proxies={self.num_proxies}, dim={self.weight.shape[1]}, "
            f"background_index={self.background_index}, normalize={self.normalize}"
        )
