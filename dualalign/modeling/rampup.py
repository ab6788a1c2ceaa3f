"""Loss-weight schedules: lambda(t) of Eq. 9 and CSD's ramp-down. Pure Python floats."""

import math

__all__ = ["sigmoid_rampup", "sigmoid_rampdown"]


def sigmoid_rampup(t, T, w_max):
    """lambda(t) of Eq. 9: the Mean-Teacher sigmoid ramp-up (Tarvainen & Valpola, 2017).

    ``w_max * exp(-5 (1 - t/T)^2)`` for t < T and ``w_max`` from T on (docs/METHOD_NOTES.md).

    Args:
        t (int or float): current iteration; negative values count as 0.
        T (int or float): ramp-up length in iterations (DUALALIGN.RAMPUP_ITERS); T <= 0 means
            no ramp.
        w_max (float): the final weight (DUALALIGN.LOSS_WEIGHT).

    Returns:
        float: the weight at t.
    """
    if T <= 0 or t >= T:
        return float(w_max)
    phase = 1.0 - max(float(t), 0.0) / T
    return float(w_max) * math.exp(-5.0 * phase * phase)


def sigmoid_rampdown(t, total, rampdown_len, w):
    """CSD's Gaussian ramp-down over the last ``rampdown_len`` iterations (Jeong et al., 2019).

    ``w * exp(-12.5 (1 - (total - t) / rampdown_len)^2)`` for t > total - rampdown_len, else
    ``w``. This is ``rampweight`` of the official CSD code (soo89/CSD-SSD, ``train_csd.py``:
    ``exp(-12.5 * (1 - (120000 - iteration) / 20000)^2)`` after iteration 100000), with its
    constants made parameters. It falls from w to w * exp(-12.5) at t = total; later t is held at
    ``total``. CSD multiplies this with its ramp-up; this function is only the ramp-down factor
    times w.

    Args:
        t (int or float): current iteration.
        total (int or float): the last iteration (SOLVER.MAX_ITER).
        rampdown_len (int or float): ramp-down length in iterations
            (DUALALIGN.CSD.RAMPDOWN_ITERS); <= 0 means no ramp-down.
        w (float): the weight before the ramp-down.

    Returns:
        float: the weight at t.
    """
    if rampdown_len <= 0 or t <= total - rampdown_len:
        return float(w)
    phase = 1.0 - (total - min(float(t), float(total))) / rampdown_len
    return float(w) * math.exp(-12.5 * phase * phase)
