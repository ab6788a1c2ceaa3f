"""Gradient-norm ratio of the unsupervised against the supervised loss, per part."""

import pytest
import torch

from dualalign.engine.diagnostics import gradient_norm_ratio


def test_ratio_of_two_losses_through_shared_and_private_parts():
    x = torch.ones(3)
    shared = torch.nn.Parameter(torch.full((3,), 0.5))
    private = torch.nn.Parameter(torch.full((3,), 2.0))
    supervised = (shared * x).sum() + (private * x).sum()
    unsupervised = 3.0 * (shared * x).sum()  # reaches `shared` only, three times as hard
    out = gradient_norm_ratio(supervised, unsupervised, {"shared": [shared], "private": [private]})
    assert float(out["grad/shared/unsup_over_sup"]) == pytest.approx(3.0)
    assert float(out["grad/private/unsup_over_sup"]) == 0.0
    # The graph is kept: the step's own backward still works and sees both losses.
    (supervised + unsupervised).backward()
    assert torch.allclose(shared.grad, torch.full((3,), 4.0))


def test_an_unsupervised_loss_without_graph_gives_zero():
    p = torch.nn.Parameter(torch.ones(2))
    out = gradient_norm_ratio(p.sum(), torch.zeros(()), {"p": [p]})
    assert float(out["grad/p/unsup_over_sup"]) == 0.0
