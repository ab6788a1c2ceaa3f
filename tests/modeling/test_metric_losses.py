"""dualalign.modeling.metric_losses against hand-computed values, naive loops and gradcheck."""

import math

import pytest
import torch

from dualalign.modeling.metric_losses import (
    class_prototypes,
    inter_alignment,
    intra_alignment,
    pairwise_distance,
    prototype_alignment_loss,
    proxy_loss,
)
from dualalign.modeling.projection_head import ClassProxies, ProjectionHead

T = torch.tensor


def test_pairwise_distance_is_euclidean_not_squared():
    a = T([[0.0, 0.0], [3.0, 0.0]])
    b = T([[3.0, 4.0], [0.0, 0.0]])
    # |(0,0)-(3,4)| = 5, |(0,0)-(0,0)| = 0 (eps floor 1e-6), |(3,0)-(3,4)| = 4, |(3,0)-0| = 3
    expected = T([[5.0, 0.0], [4.0, 3.0]])
    torch.testing.assert_close(pairwise_distance(a, b), expected, atol=2e-6, rtol=0)


def test_proxy_loss_hand_computed_two_proxies():
    proxies = T([[0.0, 0.0], [3.0, 4.0]])
    x = T([[0.0, 0.0], [3.0, 0.0]])
    y = T([0, 1])
    # x0, c=0: d(x0,p0) = 0, d(x0,p1) = 5   -> 0 + log(exp(-5)) = -5
    # x1, c=1: d(x1,p1) = 4, d(x1,p0) = 3   -> 4 + log(exp(-3)) = 1
    # mean: (-5 + 1) / 2 = -2
    torch.testing.assert_close(proxy_loss(x, y, proxies), T(-2.0), atol=1e-5, rtol=0)


def test_proxy_loss_hand_computed_denominator_excludes_positive():
    proxies = T([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])
    x = T([[0.0, 0.0]])
    # c=0: d = (0, 5, 4) -> 0 + log(exp(-5) + exp(-4)) = -4 + log(1 + e^-1)
    expected = -4.0 + math.log(1.0 + math.exp(-1.0))
    torch.testing.assert_close(proxy_loss(x, T([0]), proxies), T(expected), atol=1e-5, rtol=0)
    # c=2: d(x,p2) = 4; others (0, 5) -> 4 + log(exp(0) + exp(-5))
    expected = 4.0 + math.log(1.0 + math.exp(-5.0))
    torch.testing.assert_close(proxy_loss(x, T([2]), proxies), T(expected), atol=1e-5, rtol=0)


def test_proxy_loss_empty_input_is_zero_with_graph():
    x = torch.zeros(0, 4, requires_grad=True)
    proxies = torch.randn(3, 4, requires_grad=True)
    loss = proxy_loss(x, torch.zeros(0, dtype=torch.long), proxies)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(proxies.grad == 0)


def test_proxy_loss_single_proxy_raises_clear_error():
    with pytest.raises(ValueError, match="INCLUDE_BACKGROUND"):
        proxy_loss(torch.randn(5, 4), torch.zeros(5, dtype=torch.long), torch.randn(1, 4))


def test_proxy_loss_finite_at_large_scale_and_at_coincident_points():
    torch.manual_seed(0)
    x = (torch.randn(16, 8) * 1e4).requires_grad_()
    proxies = (torch.randn(3, 8) * 1e4).requires_grad_()
    loss = proxy_loss(x, torch.randint(0, 3, (16,)), proxies)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(x.grad).all() and torch.isfinite(proxies.grad).all()

    # x exactly on its proxy: the sqrt would have an infinite derivative without the eps floor.
    proxies = T([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    x = T([[1.0, 2.0]], requires_grad=True)
    proxy_loss(x, T([0]), proxies).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(proxies.grad).all()


def test_detached_proxies_get_no_gradient_but_head_does():
    torch.manual_seed(0)
    head = ProjectionHead(in_dim=16, hidden_dim=8, out_dim=4)
    proxies = ClassProxies(num_classes=3, dim=4)
    loss = proxy_loss(head(torch.randn(10, 16)), torch.randint(0, 3, (10,)), proxies(detach=True))
    loss.backward()
    assert proxies.weight.grad is None or torch.all(proxies.weight.grad == 0)
    assert head.fc1.weight.grad.abs().sum() > 0 and head.fc2.weight.grad.abs().sum() > 0

    # The labelled loss (Eq. 2) does update the proxies.
    proxy_loss(head(torch.randn(10, 16)), torch.randint(0, 3, (10,)), proxies()).backward()
    assert proxies.weight.grad.abs().sum() > 0


def test_proxy_loss_matches_naive_loop():
    torch.manual_seed(1)
    x, proxies, y = torch.randn(20, 5), torch.randn(4, 5), torch.randint(0, 4, (20,))
    terms = []
    for i in range(20):
        d = [torch.dist(x[i], proxies[k]) for k in range(4)]
        c = int(y[i])
        denom = sum(torch.exp(-d[k]) for k in range(4) if k != c)
        terms.append(-torch.log(torch.exp(-d[c]) / denom))
    torch.testing.assert_close(proxy_loss(x, y, proxies), torch.stack(terms).mean())


def test_proxy_loss_gradcheck():
    torch.manual_seed(2)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    proxies = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (6,))
    assert torch.autograd.gradcheck(lambda a, p: proxy_loss(a, y, p), (x, proxies))


def test_class_prototypes_hand_computed():
    x = T([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [10.0, 10.0]])
    y = T([0, 0, 2, 2])
    # P_gg: class 0 = mean((0,0),(2,0)) = (1,0); class 1 absent; class 2 = mean((0,4),(10,10))
    P, present = class_prototypes(x, y, 3)
    torch.testing.assert_close(P, T([[1.0, 0.0], [0.0, 0.0], [5.0, 7.0]]))
    assert present.tolist() == [True, False, True]
    # P_cg with q = (.25, .75, 1, 0): class 0 = (.25*(0,0) + .75*(2,0)) / 1 = (1.5, 0);
    # class 2 = (1*(0,4) + 0*(10,10)) / 1 = (0, 4)
    P, present = class_prototypes(x, y, 3, weights=T([0.25, 0.75, 1.0, 0.0]))
    torch.testing.assert_close(P, T([[1.5, 0.0], [0.0, 0.0], [0.0, 4.0]]))
    assert present.tolist() == [True, False, True]
    # Class 2's weights sum to 0: absent, row 0.
    P, present = class_prototypes(x, y, 3, weights=T([0.25, 0.75, 0.0, 0.0]))
    torch.testing.assert_close(P[2], T([0.0, 0.0]))
    assert present.tolist() == [True, False, False]


def test_class_prototypes_empty_input():
    x = torch.zeros(0, 3, requires_grad=True)
    P, present = class_prototypes(x, torch.zeros(0, dtype=torch.long), 4)
    assert P.shape == (4, 3) and torch.all(P == 0) and not present.any()
    P.sum().backward()  # still differentiable


def test_class_prototypes_matches_naive_loop_and_has_finite_grad():
    torch.manual_seed(3)
    x = torch.randn(30, 6, requires_grad=True)
    y, q = torch.randint(0, 5, (30,)), torch.rand(30)
    y[y == 4] = 3  # class 4 absent
    P, present = class_prototypes(x, y, 5, weights=q)
    for c in range(5):
        sel = y == c
        assert bool(present[c]) == bool(sel.any())
        if sel.any():
            ref = (q[sel, None] * x[sel]).sum(0) / q[sel].sum()
            torch.testing.assert_close(P[c], ref)
    P.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_intra_alignment_hand_computed_and_empty():
    P = T([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    Q = T([[3.0, 4.0], [100.0, 100.0], [5.0, 8.0]])
    # valid c = 0, 2: (|(0,0)-(3,4)| + |(5,5)-(5,8)|) / 2 = (5 + 3) / 2 = 4; class 1 is ignored
    torch.testing.assert_close(intra_alignment(P, Q, T([True, False, True])), T(4.0))
    P.requires_grad_()
    loss = intra_alignment(P, Q, T([False, False, False]))
    assert loss.item() == 0.0 and loss.requires_grad


def test_inter_alignment_hand_computed_and_empty():
    P = T([[0.0, 0.0], [0.0, 0.5], [9.0, 9.0]])
    Q = T([[0.0, 0.6], [0.0, 0.0], [7.0, 7.0]])
    valid_p, valid_q = T([True, True, False]), T([True, True, True])
    # Pairs c != k with valid_p[c], valid_q[k]: (0,1), (0,2), (1,0), (1,2); margin 1:
    # (0,1): d = 0 -> 1; (0,2): d = 9.9 -> 0; (1,0): d = 0.1 -> 0.9; (1,2): d > 1 -> 0
    # mean: (1 + 0 + 0.9 + 0) / 4 = 0.475 (the diagonal (0,0), d = 0.6, does not count)
    torch.testing.assert_close(inter_alignment(P, Q, valid_p, valid_q), T(0.475), atol=1e-5, rtol=0)
    P.requires_grad_()
    loss = inter_alignment(P, Q, T([True, False, False]), T([True, False, False]))
    assert loss.item() == 0.0 and loss.requires_grad  # only the diagonal pair: excluded


def test_intra_inter_match_naive_loops():
    torch.manual_seed(4)
    P, Q = torch.randn(5, 3) * 0.4, torch.randn(5, 3) * 0.4
    vp, vq = T([True, False, True, True, True]), T([True, True, False, True, True])
    ref_intra = torch.stack([torch.dist(P[c], Q[c]) for c in range(5) if vp[c]]).mean()
    torch.testing.assert_close(intra_alignment(P, Q, vp), ref_intra)
    hinges = [
        torch.clamp(1.0 - torch.dist(P[c], Q[k]), min=0)
        for c in range(5)
        for k in range(5)
        if c != k and vp[c] and vq[k]
    ]
    torch.testing.assert_close(inter_alignment(P, Q, vp, vq), torch.stack(hinges).mean())


def test_inter_alignment_gradcheck_away_from_kink():
    torch.manual_seed(5)
    P = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    Q = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    margin = 1.0
    dist = pairwise_distance(P, Q)
    assert (dist - margin).abs().min() > 1e-3  # gradcheck's finite differences stay on one side
    vp, vq = T([True, True, False, True]), T([True, True, True, True])
    assert torch.autograd.gradcheck(lambda a, b: inter_alignment(a, b, vp, vq, margin), (P, Q))


def test_prototype_alignment_loss_hand_computed():
    P_M = T([[0.0, 0.0], [3.0, 4.0]])
    P_cg = T([[0.0, 0.5], [3.0, 4.5]])
    m = 6.0
    intra = 0.5  # both classes shifted by (0, 0.5)
    # inter(P_M, P_cg): (0,1): 6 - |(0,0)-(3,4.5)| ; (1,0): 6 - |(3,4)-(0,0.5)|
    h01, h10 = m - math.sqrt(9 + 4.5**2), m - math.sqrt(9 + 3.5**2)
    inter_cg = m - 5.0  # |(0,0.5)-(3,4.5)| = 5, both ordered pairs
    both = T([True, True])
    expected = intra + (h01 + h10) / 2 + inter_cg
    loss = prototype_alignment_loss(P_M, both, P_cg, both, margin=m)
    torch.testing.assert_close(loss, T(expected))
    # Bank holds class 0 only: intra over class 0, inter(P_M, P_cg) over the pair (0, 1).
    loss = prototype_alignment_loss(P_M, T([True, False]), P_cg, both, margin=m)
    torch.testing.assert_close(loss, T(0.5 + h01 + inter_cg))


def test_prototype_alignment_loss_empty_bank_skips_bank_terms():
    torch.manual_seed(6)
    P_cg = (torch.randn(3, 4) * 0.3).requires_grad_()
    valid_cg = T([True, True, True])
    none = T([False, False, False])
    loss = prototype_alignment_loss(torch.randn(3, 4), none, P_cg, valid_cg)
    torch.testing.assert_close(loss, inter_alignment(P_cg, P_cg, valid_cg, valid_cg))
    loss.backward()
    assert torch.isfinite(P_cg.grad).all()


def test_prototype_losses_finite_at_large_scale():
    torch.manual_seed(7)
    x = (torch.randn(40, 8) * 1e4).requires_grad_()
    y = torch.randint(0, 4, (40,))
    P_gg, present = class_prototypes(x, y, 4)
    P_cg, valid = class_prototypes(x, y, 4, weights=torch.rand(40))
    loss = prototype_alignment_loss(P_gg.detach(), present, P_cg, valid)
    loss = loss + intra_alignment(P_gg, P_cg, present & valid)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_tempered_proxy_loss_forms():
    torch.manual_seed(0)
    x, proxies = torch.randn(5, 4), torch.randn(3, 4)
    y = torch.tensor([0, 1, 2, 1, 0])
    dist = pairwise_distance(x, proxies)
    # include_positive: the softmax cross-entropy over all proxies of -Phi^2 / T (ProxyNCA++).
    expected = torch.nn.functional.cross_entropy(-dist.pow(2) / 0.5, y)
    got = proxy_loss(x, y, proxies, temperature=0.5, squared=True, include_positive=True)
    torch.testing.assert_close(got, expected)
    # Temperature alone scales Eq. 2's distances.
    d = dist / 0.25
    pos = d.gather(1, y[:, None]).squeeze(1)
    neg = (-d).masked_fill(torch.nn.functional.one_hot(y, 3).bool(), float("-inf"))
    torch.testing.assert_close(
        proxy_loss(x, y, proxies, temperature=0.25), (pos + neg.logsumexp(1)).mean()
    )
    torch.testing.assert_close(proxy_loss(x, y, proxies, temperature=1.0), proxy_loss(x, y, proxies))


def test_eq2_keeps_pushing_a_solved_embedding_the_tempered_form_does_not():
    proxies = torch.eye(3) * 3.0  # far apart
    x = proxies[:1].clone().requires_grad_(True)  # sits on its own proxy: solved
    y = torch.tensor([0])
    (g_eq2,) = torch.autograd.grad(proxy_loss(x, y, proxies), x)
    (g_nca,) = torch.autograd.grad(proxy_loss(x, y, proxies, include_positive=True), x)
    assert g_eq2.norm() > 0.5  # Eq. 2 as printed: still about 1
    assert g_nca.norm() < 0.05 * g_eq2.norm()
