"""The metric-learning losses of Chai et al. (ISBI 2022) as pure tensor functions.

Each equation of the paper maps to one function here:

- Eq. 2/3: :func:`proxy_loss` (proxy-based proposal alignment, L_pml and L'_pml).
- Eq. 4: :func:`class_prototypes` (P_gg without weights, P_cg with weights).
- Eq. 5: :func:`intra_alignment`.
- Eq. 6: :func:`inter_alignment`.
- Eq. 7/8: :func:`prototype_alignment_loss` (L_pmb and L'_pmb).

Phi is the plain Euclidean distance (``docs/METHOD_NOTES.md``), see
:func:`pairwise_distance`. None of these functions normalises its inputs; normalisation belongs
to the projection head and the proxies. None of them synchronises with the GPU: classes and
pairs are selected with masks, never with Python branches on tensor values.
"""

import torch

from ..utils.graph import zero_with_graph

__all__ = [
    "pairwise_distance",
    "proxy_loss",
    "class_prototypes",
    "intra_alignment",
    "inter_alignment",
    "prototype_alignment_loss",
]

# Floor of the squared distance under the square root: it keeps d/dx sqrt finite when two points
# coincide (the gradient there is 0) and is far below any distance the losses care about.
_EPS_SQ = 1e-12


def _norm(v):
    """Stable L2 norm over the last dim: sqrt(clamp(sum v^2, eps)), finite gradient at v == 0."""
    return v.pow(2).sum(dim=-1).clamp_min(_EPS_SQ).sqrt()


def pairwise_distance(a, b):
    """Phi of Eq. 2-6: the Euclidean (not squared) distance between every row pair.

    Computed from explicit differences rather than the ``|a|^2 + |b|^2 - 2ab`` expansion, which
    cancels catastrophically at large embedding scales. Memory is O(N * M * D); the callers pass
    at most a few thousand proposals against a handful of proxies or prototypes.

    Args:
        a (Tensor[N, D]): first set of points.
        b (Tensor[M, D]): second set of points.

    Returns:
        Tensor[N, M]: ``out[i, j] = ||a[i] - b[j]||_2``; a distance of exactly 0 comes out as
        1e-6 (the eps floor) with a zero gradient.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"pairwise_distance expects a [N, D] and b [M, D]; got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    return _norm(a[:, None, :] - b[None, :, :])


def proxy_loss(x, y, proxies, temperature=1.0, squared=False, include_positive=False):
    """Proxy-based proposal alignment, Eq. 2 (labelled) and Eq. 3 (pseudo-labelled).

    Per embedding with label c, with ``d_k = Phi(x, p_k) / temperature``:
    ``d_c + logsumexp_{k != c}(-d_k)``, i.e. ``-log(exp(-d_c) / sum_{k != c} exp(-d_k))`` as
    printed in Eq. 2, whose denominator excludes the positive proxy. For Eq. 3 pass
    ``proxies.detach()`` (docs/METHOD_NOTES.md: the proxies are updated from labelled data only).

    The defaults are Eq. 2 as printed. Its gradient stays about 1 per embedding even when the
    classes are separated (the positive never enters the normaliser). The tempered form of
    ProxyNCA++ is ``squared=True`` (``Phi^2``), ``include_positive=True`` (a softmax cross-entropy
    over all proxies, whose gradient vanishes once solved) and ``temperature < 1``.

    Args:
        x (Tensor[N, D]): embeddings.
        y (Tensor[N]): long labels in [0, C); not range-checked here (that would sync the GPU).
        proxies (Tensor[C, D]): one proxy per class (C counts a background proxy if present).
        temperature: divides the distances (> 0).
        squared: use the squared distance ``Phi^2``.
        include_positive: sum over every proxy in the denominator, the positive included.

    Returns:
        Tensor[]: the mean loss over the N embeddings; 0 with a graph to ``x`` and ``proxies``
        when N == 0.

    Raises:
        ValueError: if C < 2, where the sum over k != c is empty and the loss would be inf.
    """
    num_proxies = proxies.shape[0]
    if num_proxies < 2:
        raise ValueError(
            f"proxy_loss (Eq. 2) needs at least 2 proxies, got {num_proxies}: with a single "
            "class the sum over k != c is empty. Set DUALALIGN.PROXY.INCLUDE_BACKGROUND True to "
            "add a background proxy, or turn off DUALALIGN.LOSS.PML_LABELED/PML_UNLABELED."
        )
    if x.dim() != 2 or y.shape != x.shape[:1]:
        raise ValueError(
            f"proxy_loss expects x [N, D] and y [N]; got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[0] == 0:
        return zero_with_graph(x, proxies)
    dist = pairwise_distance(x, proxies)  # [N, C]
    if squared:
        dist = dist.pow(2)
    dist = dist / temperature
    positive = dist.gather(1, y[:, None]).squeeze(1)
    if include_positive:
        return (positive + torch.logsumexp(-dist, dim=1)).mean()
    is_positive = torch.zeros_like(dist, dtype=torch.bool).scatter_(1, y[:, None], True)
    # -inf drops the positive proxy from the logsumexp; C >= 2 leaves at least one finite term.
    negatives = (-dist).masked_fill(is_positive, float("-inf"))
    return (positive + torch.logsumexp(negatives, dim=1)).mean()


def class_prototypes(x, y, num_classes, weights=None):
    """Per-class prototypes of a mini-batch, Eq. 4.

    Without ``weights`` this is the ground-truth-guided prototype P_gg (the plain class mean);
    with ``weights`` it is the confidence-guided prototype P_cg = sum(q_i x_i) / sum(q_i).

    Args:
        x (Tensor[N, D]): embeddings.
        y (Tensor[N]): long class of each embedding, in [0, num_classes).
        num_classes (int): C, the number of prototype rows.
        weights (Tensor[N] or None): non-negative q_i. Pass detached scores
            (docs/METHOD_NOTES.md); a graph on ``weights`` is differentiated through, not cut.

    Returns:
        tuple: ``(P, present)`` with P (Tensor[C, D]) and present (Tensor[C], bool). A class
        with no embedding, or whose weights sum to 0, is absent: its row is 0.
    """
    if x.dim() != 2 or y.shape != x.shape[:1]:
        raise ValueError(
            f"class_prototypes expects x [N, D] and y [N]; got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    w = x.new_ones(x.shape[0]) if weights is None else weights.to(x.dtype)
    sums = x.new_zeros(num_classes, x.shape[1]).index_add(0, y, x * w[:, None])
    mass = x.new_zeros(num_classes).index_add(0, y, w)
    present = mass > 0
    # Dividing absent rows by 1 instead of 0 keeps their gradient finite (it is 0 anyway).
    P = sums / torch.where(present, mass, torch.ones_like(mass))[:, None]
    return P, present


def intra_alignment(P, Q, valid):
    """Intra-class prototype alignment, Eq. 5: mean over valid c of Phi(P[c], Q[c]).

    Averages over the valid classes only, not over all C (docs/METHOD_NOTES.md).

    Args:
        P (Tensor[C, D]): first prototypes.
        Q (Tensor[C, D]): second prototypes.
        valid (Tensor[C], bool): classes that take part.

    Returns:
        Tensor[]: the mean distance; 0 with a graph to P and Q when no class is valid.
    """
    dist = _norm(P - Q)  # [C]
    total = torch.where(valid, dist, torch.zeros_like(dist)).sum()
    return total / valid.sum().clamp_min(1)


def inter_alignment(P, Q, valid_p, valid_q, margin=1.0):
    """Inter-class prototype separation, Eq. 6.

    Mean over ordered pairs (c, k), c != k, valid_p[c] and valid_q[k], of
    ``max(0, margin - Phi(P[c], Q[k]))``. With Q = P every unordered pair counts twice, as in
    Eq. 6's double sum.

    Args:
        P (Tensor[C, D]): prototypes indexed by c.
        Q (Tensor[C, D]): prototypes indexed by k.
        valid_p (Tensor[C], bool): classes of P that take part.
        valid_q (Tensor[C], bool): classes of Q that take part.
        margin (float): m of Eq. 6 (1.0 in the paper).

    Returns:
        Tensor[]: the mean hinge; 0 with a graph to P and Q when no pair is valid.
    """
    num_classes = P.shape[0]
    hinge = (margin - pairwise_distance(P, Q)).clamp_min(0)  # [C, C]
    off_diagonal = ~torch.eye(num_classes, dtype=torch.bool, device=P.device)
    mask = valid_p[:, None] & valid_q[None, :] & off_diagonal
    total = torch.where(mask, hinge, torch.zeros_like(hinge)).sum()
    return total / mask.sum().clamp_min(1)


def prototype_alignment_loss(P_M, valid_M, P_cg, valid_cg, margin=1.0):
    """Memory-bank prototype alignment, Eq. 7 (P_cg = P_cg_L) and Eq. 8 (P_cg = P_cg_U).

    ``intra(P_M, P_cg) + inter(P_M, P_cg) + inter(P_cg, P_cg)``. The intra term runs over the
    classes valid in both (``valid_M & valid_cg``). While the bank is empty (``valid_M`` all
    False) the two terms with P_M have no valid class or pair and are exactly 0, which is the
    same as skipping them, without a GPU sync to test for emptiness.

    Args:
        P_M (Tensor[C, D]): per-class means of the memory bank (no gradient expected).
        valid_M (Tensor[C], bool): classes with at least one row in the bank.
        P_cg (Tensor[C, D]): confidence-guided prototypes of the batch (Eq. 4).
        valid_cg (Tensor[C], bool): classes present in the batch.
        margin (float): m of Eq. 6.

    Returns:
        Tensor[]: the three-term sum.
    """
    return (
        intra_alignment(P_M, P_cg, valid_M & valid_cg)
        + inter_alignment(P_M, P_cg, valid_M, valid_cg, margin)
        + inter_alignment(P_cg, P_cg, valid_cg, valid_cg, margin)
    )
