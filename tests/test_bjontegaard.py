"""BD-rate: known shifts of a curve come out as their rate difference."""
import math

import numpy as np
import pytest

from evaluation.bjontegaard import bd_rate

RATE, PSNR = np.array([0.05, 0.1, 0.2, 0.4]), np.array([28.0, 30.5, 33.0, 35.0])


@pytest.mark.parametrize("factor", [0.8, 1.0, 1.25])
def test_a_curve_scaled_in_rate_costs_that_factor(factor):
    assert bd_rate(RATE, PSNR, RATE * factor, PSNR) == pytest.approx((factor - 1) * 100)


def test_a_better_curve_saves_bits_and_disjoint_curves_have_no_figure():
    assert bd_rate(RATE, PSNR, RATE, PSNR + 1.0) < 0      # more quality at the same rate
    assert math.isnan(bd_rate(RATE, PSNR, RATE, PSNR + 20.0))
    assert math.isnan(bd_rate(RATE[:1].repeat(2), PSNR[:1].repeat(2), RATE, PSNR))
