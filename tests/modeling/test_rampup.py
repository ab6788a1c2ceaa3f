"""lambda(t) of Eq. 9 and CSD's ramp-down."""

import math

import pytest

from dualalign.modeling.rampup import sigmoid_rampdown, sigmoid_rampup


def test_sigmoid_rampup_values():
    w = 2.0
    assert sigmoid_rampup(0, 100, w) == pytest.approx(w * math.exp(-5.0))
    assert sigmoid_rampup(50, 100, w) == pytest.approx(w * math.exp(-1.25))  # 5 * 0.5^2
    assert sigmoid_rampup(100, 100, w) == w
    assert sigmoid_rampup(10_000, 100, w) == w
    assert isinstance(sigmoid_rampup(3, 100, w), float)


def test_sigmoid_rampup_without_ramp():
    assert sigmoid_rampup(0, 0, 1.5) == 1.5


def test_sigmoid_rampup_is_monotone():
    values = [sigmoid_rampup(t, 50, 1.0) for t in range(60)]
    assert all(a < b for a, b in zip(values[:50], values[1:51]))


def test_sigmoid_rampdown_values():
    # total 120, length 20 (CSD's 120000 / 20000, scaled): flat up to 100, then Gaussian.
    assert sigmoid_rampdown(50, 120, 20, 3.0) == 3.0
    assert sigmoid_rampdown(100, 120, 20, 3.0) == 3.0
    assert sigmoid_rampdown(110, 120, 20, 3.0) == pytest.approx(3.0 * math.exp(-12.5 * 0.25))
    assert sigmoid_rampdown(120, 120, 20, 3.0) == pytest.approx(3.0 * math.exp(-12.5))
    assert sigmoid_rampdown(130, 120, 20, 3.0) == pytest.approx(3.0 * math.exp(-12.5))
    assert sigmoid_rampdown(119, 120, 0, 3.0) == 3.0
