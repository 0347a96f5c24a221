"""Bjøntegaard delta rate (BD-rate): the average bit-rate difference between two
rate-distortion curves at equal quality, over the quality range both cover.

Curves are interpolated as log(rate) over quality with monotone piecewise-cubic (PCHIP)
segments, the variant of the JVET common test conditions (Bjøntegaard's cubic fit overshoots
with few points); needs at least two points per curve.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.interpolate import PchipInterpolator


def bd_rate(rate_ref, quality_ref, rate_test, quality_test, samples: int = 1000) -> float:
    """Percent more (+) or fewer (−) bits the test curve spends than the reference at equal
    quality; NaN when a curve has fewer than two distinct qualities or they share no range."""
    ref, test = _curve(rate_ref, quality_ref), _curve(rate_test, quality_test)
    if ref is None or test is None:
        return math.nan
    low, high = max(ref.x[0], test.x[0]), min(ref.x[-1], test.x[-1])
    if not high > low:
        return math.nan
    q = np.linspace(low, high, samples)
    diff = float(np.trapezoid(test(q) - ref(q), q) / (high - low))
    return (math.exp(diff) - 1.0) * 100.0


def _curve(rate, quality) -> PchipInterpolator | None:
    rate, quality = np.asarray(rate, float), np.asarray(quality, float)
    if len(rate) < 2 or len(rate) != len(quality) or (rate <= 0).any():
        raise ValueError("a BD-rate curve needs >= 2 points with positive rates")
    order = np.argsort(quality)
    quality, log_rate = quality[order], np.log(rate[order])
    keep = np.concatenate([[True], np.diff(quality) > 0])   # equal qualities: keep the first
    if keep.sum() < 2:
        return None
    return PchipInterpolator(quality[keep], log_rate[keep])
