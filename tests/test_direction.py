"""GCC-PHAT delay agreement (evaluation/direction.py) and the phase training term that serves it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.direction import aria_max_lag, direction_agreement, gcc_phat_delays

RATE = 48_000


def _delayed_copies(rng, delays, frames=4 * 4096, noise=0.0):
    """A broadband source reaching each channel `delays[c]` samples late, plus own noise."""
    pad = max(delays) + 1
    source = rng.standard_normal(frames + pad)
    channels = [source[pad - d:pad - d + frames] for d in delays]
    x = np.stack(channels, 1)
    return x + noise * rng.standard_normal(x.shape)


def test_gcc_phat_finds_integer_and_fractional_delays():
    rng = np.random.default_rng(0)
    block = _delayed_copies(rng, [0, 3, 7, 12])[:4096]
    lags = gcc_phat_delays(block, [(0, 1), (0, 2), (1, 3), (3, 0)], max_lag=20, sample_rate=RATE)
    assert lags.tolist() == [3, 7, 9, -12]


def test_agreement_is_one_for_the_reference_and_drops_when_delays_are_lost():
    rng = np.random.default_rng(1)
    ref = _delayed_copies(rng, [0, 4, 9, 2, 6, 11, 1], noise=0.05)
    assert direction_agreement(ref, ref, RATE).agreement == 1.0
    noisy = ref + 0.2 * rng.standard_normal(ref.shape)       # 14 dB SNR, delays kept
    assert direction_agreement(ref, noisy, RATE).agreement > 0.95
    mono = np.repeat(ref[:, :1], 7, axis=1)                    # every delay pulled to zero
    scores = direction_agreement(ref, mono, RATE)
    assert scores.agreement < 0.2
    assert len(scores.pair_agreement) == 21


def test_quiet_windows_are_not_scored():
    rng = np.random.default_rng(2)
    ref = _delayed_copies(rng, [0, 2, 5], frames=8 * 4096)
    ref[4 * 4096:] *= 1e-3                                     # 60 dB quieter: not energetic
    scores = direction_agreement(ref, ref, RATE)
    assert scores.window_start.tolist() == [0, 4096, 8192, 12288]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="samples×channels"):
        direction_agreement(np.zeros((100, 7)), np.zeros((100, 6)), RATE)
    with pytest.raises(ValueError, match="2\\+ channels"):
        direction_agreement(np.zeros((100, 1)), np.zeros((100, 1)), RATE)


def test_aria_max_lag_covers_the_widest_pair():
    assert 20 <= aria_max_lag(RATE) <= 30      # mics 0..6 span ~16-17 cm: ~24 samples + 2


def test_phase_term_is_small_for_kept_delays_and_large_for_mono():
    from dance.spatial_loss import cross_phase_loss
    rng = np.random.default_rng(3)
    ref = torch.from_numpy(_delayed_copies(rng, [0, 3, 6, 1, 8, 2, 5], frames=9600).T[None]).float()
    assert cross_phase_loss(ref, ref, RATE).item() < 0.01
    mono = ref[:, :1].expand_as(ref).contiguous()
    assert cross_phase_loss(mono, ref, RATE).item() > 0.5
    estimate = torch.zeros_like(ref, requires_grad=True)
    cross_phase_loss(estimate, ref, RATE).backward()           # silence: a finite gradient
    assert torch.isfinite(estimate.grad).all()
