"""SSDR / SRDR (evaluation.spatial) against answers known from the definitions."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from evaluation.spatial import spatial_metrics

FS = 8000


def white(seconds: float, channels: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.1, (int(seconds * FS), channels))


def delayed(x: np.ndarray, samples: int) -> np.ndarray:
    """x[n − samples] (zeros shifted in)."""
    out = np.zeros_like(x)
    if samples >= 0:
        out[samples:] = x[:len(x) - samples]
    else:
        out[:samples] = x[-samples:]
    return out


BOTH = pytest.mark.parametrize("projection", ["spauq", "delayed"])


@BOTH
def test_pure_gain_is_a_spatial_change_with_no_residual(projection):
    ref = white(2.0)
    scores = spatial_metrics(ref, 0.5 * ref, FS, projection=projection)
    # p = 0.5·s exactly: SSDR = −20·log10|1 − 0.5|, nothing is left for the residual
    assert scores.ssdr_db == pytest.approx(-20 * np.log10(0.5), abs=1e-6)
    assert scores.srdr_db == 80.0
    assert np.allclose(scores.gains, 0.5 * np.eye(4)[None], atol=1e-9)


def test_delayed_scaled_estimate_is_explained_by_the_delayed_projection():
    ref = white(2.0)
    est = 0.5 * delayed(ref, 37)
    scores = spatial_metrics(ref, est, FS, projection="delayed")
    assert np.all(np.diagonal(scores.delays, axis1=1, axis2=2) == 37)
    assert scores.srdr_db == 80.0                       # clipped: the residual is zero
    # p_c = 0.5·s_c[n − 37] and white s is uncorrelated with itself 37 samples on:
    # ‖p − s‖² / ‖s‖² = 1 + 0.25
    assert scores.ssdr_db == pytest.approx(-10 * np.log10(1.25), abs=0.05)


def test_delayed_estimate_is_not_forgiven_by_the_spauq_projection():
    ref = white(2.0)
    scores = spatial_metrics(ref, 0.5 * delayed(ref, 37), FS)
    assert np.all(np.diagonal(scores.delays, axis1=1, axis2=2) == 37)
    # white s is uncorrelated with ŝ = 0.5·s[n − 37]: gains ≈ 0, p ≈ 0, all of ŝ is residual
    assert np.abs(scores.gains).max() < 0.05
    assert scores.ssdr_db == pytest.approx(0.0, abs=0.05)
    assert scores.srdr_db < -20


@BOTH
def test_independent_noise_of_known_power_sets_srdr(projection):
    ref = white(3.0, seed=1)
    noise = np.random.default_rng(2).normal(0.0, 0.01, ref.shape)
    scores = spatial_metrics(ref, ref + noise, FS, projection=projection)
    assert scores.srdr_db == pytest.approx(20.0, abs=0.15)     # 10·log10(0.1² / 0.01²)
    assert scores.ssdr_db > scores.srdr_db + 20                # gains stay ≈ identity
    assert np.all(scores.delays[:, np.arange(4), np.arange(4)] == 0)


def test_delayed_leakage_is_recovered_as_gains():
    ref = white(2.0, channels=3, seed=3)
    mix = np.array([[1.0, 0.3, 0.0], [0.0, 0.8, -0.4], [0.2, 0.0, 1.1]])
    lag = np.array([[0, 5, 0], [0, -3, 12], [7, 0, 2]])
    est = np.stack([sum(mix[c, d] * delayed(ref[:, d], lag[c, d]) for d in range(3))
                    for c in range(3)], axis=1)
    scores = spatial_metrics(ref, est, FS, projection="delayed")
    assert np.allclose(np.median(scores.gains, axis=0), mix, atol=0.02)
    assert scores.srdr_db > 30


def test_spauq_projection_scales_each_channel_by_its_gain_sum():
    ref = white(2.0, channels=3, seed=3)
    mix = np.array([[1.0, 0.3, 0.0], [0.0, 0.8, -0.4], [0.2, 0.0, 1.1]])
    est = ref @ mix.T
    scores = spatial_metrics(ref, est, FS)
    assert np.allclose(scores.gains, mix[None], atol=1e-9)
    # p_c = (Σ_d A_cd)·s_c, so SSDR sees only the row sums and SRDR the leakage
    p = ref * mix.sum(axis=1)
    kept = [slice(max(0, d.max()), (min(0, d.min()) or None) if d.max() else None)
            for d in scores.delays]
    for i, (start, k) in enumerate(zip(scores.frame_start, kept)):
        s, sp, sh = (a[start:start + FS][k] for a in (ref, p, est))
        assert scores.frame_ssdr_db[i] == pytest.approx(
            10 * np.log10(np.sum(s ** 2) / np.sum((sp - s) ** 2)), abs=1e-9)
        assert scores.frame_srdr_db[i] == pytest.approx(
            10 * np.log10(np.sum(sp ** 2) / np.sum((sh - sp) ** 2)), abs=1e-9)


@BOTH
def test_silent_channels_are_skipped(projection):
    ref = white(2.0, channels=3, seed=4)
    est = ref + np.random.default_rng(5).normal(0.0, 0.02, ref.shape)
    base = spatial_metrics(ref, est, FS, projection=projection)
    pad = np.zeros((len(ref), 1))
    with_silent = spatial_metrics(np.hstack([ref, pad]), np.hstack([est, pad]), FS,
                                  projection=projection)
    # energies are sums over channels; a silent channel adds nothing to either side
    # (in spauq mode the silent reference channel makes the normal equations singular: the
    # Tikhonov solve then shifts the gains by ~λ/‖s‖², far below these tolerances)
    assert np.allclose(with_silent.frame_ssdr_db, base.frame_ssdr_db, atol=1e-6)
    assert np.allclose(with_silent.frame_srdr_db, base.frame_srdr_db, atol=1e-6)
    assert np.all(with_silent.gains[:, 3] == 0) and np.all(with_silent.gains[:, :, 3] == 0)
    assert np.all(with_silent.delays[:, 3] == 0) and np.all(with_silent.delays[:, :, 3] == 0)


def test_silent_reference_channel_zeroes_that_estimate_channel_in_spauq_mode():
    ref = white(2.0, channels=3, seed=4)
    ref[:, 1] = 0.0
    est = ref + np.random.default_rng(5).normal(0.0, 0.02, ref.shape)
    scores = spatial_metrics(ref, est, FS)
    assert np.all(scores.gains[:, 1] == 0)             # p_1 = 0: all of ŝ_1 is residual
    assert np.all(np.abs(scores.gains[:, [0, 2]][:, :, [0, 2]]
                         - np.eye(2)[None]) < 0.01)


def test_frames_and_medians():
    ref = white(2.25, seed=6)                          # 1 s frames every 0.5 s: 4 frames
    est = ref.copy()
    est[FS:] += np.random.default_rng(7).normal(0.0, 0.03, (len(ref) - FS, 4))
    scores = spatial_metrics(ref, est, FS)
    assert list(scores.frame_start) == [0, FS // 2, FS, 3 * FS // 2]   # last one 0.75 s long
    assert scores.frame_srdr_db[0] > 60                  # the clean first second
    assert np.all(scores.frame_srdr_db[2:] < 15)
    assert scores.srdr_db == np.median(scores.frame_srdr_db)
    assert scores.ssdr_db == np.median(scores.frame_ssdr_db)


def test_delays_beyond_the_search_range_are_not_found():
    ref = white(2.0, seed=8)
    est = delayed(ref, int(0.15 * FS))                   # 150 ms > the ±100 ms search
    scores = spatial_metrics(ref, est, FS, projection="delayed")
    assert not np.any(np.diagonal(scores.delays, axis1=1, axis2=2) == int(0.15 * FS))
    assert scores.srdr_db < 3
    wider = spatial_metrics(ref, est, FS, max_shift_s=0.2, projection="delayed")
    assert np.all(np.diagonal(wider.delays, axis1=1, axis2=2) == int(0.15 * FS))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="shorter than one"):
        spatial_metrics(white(0.5), white(0.5), FS)
    with pytest.raises(ValueError, match="one shape"):
        spatial_metrics(white(2.0), white(2.0)[:, :3], FS)
    with pytest.raises(ValueError, match="projection must be one of"):
        spatial_metrics(white(2.0), white(2.0), FS, projection="shifted")


def direct_definition(ref: np.ndarray, est: np.ndarray, max_shift: int) -> tuple[float, float]:
    """SSDR/SRDR of one frame straight from the definition: time-domain correlation for each
    pair, then least squares of each estimate channel on its delayed reference channels."""
    n, channels = ref.shape
    lags = signal.correlation_lags(n, n)
    keep = np.abs(lags) <= max_shift
    tau = np.zeros((channels, channels), dtype=int)
    for c in range(channels):
        for d in range(channels):
            corr = signal.correlate(est[:, c], ref[:, d], method="direct")[keep]
            tau[c, d] = lags[keep][np.argmax(np.abs(corr))]
    first, last = max(0, tau.max()), n + min(0, tau.min())
    s, s_hat = ref[first:last], est[first:last]
    projection = np.empty_like(s)
    for c in range(channels):
        basis = np.stack([np.roll(ref[:, d], tau[c, d])[first:last] for d in range(channels)], 1)
        projection[:, c] = basis @ np.linalg.lstsq(basis, s_hat[:, c], rcond=None)[0]
    ssdr = 10 * np.log10(np.sum(s ** 2) / np.sum((projection - s) ** 2))
    srdr = 10 * np.log10(np.sum(projection ** 2) / np.sum((s_hat - projection) ** 2))
    return ssdr, srdr


def test_agrees_with_a_direct_implementation_of_the_definition():
    rng = np.random.default_rng(9)
    source = signal.lfilter([1.0], [1.0, -0.9], rng.normal(0, 0.1, 3 * FS))   # coloured
    ref = np.stack([delayed(source[:, None], k)[:, 0] for k in (0, 4, 9)], 1)
    ref += rng.normal(0, 0.02, ref.shape)
    est = 0.9 * delayed(ref, 2) + 0.1 * ref[:, [1, 2, 0]] + rng.normal(0, 0.03, ref.shape)
    scores = spatial_metrics(ref, est, FS, max_shift_s=0.01, projection="delayed")
    for i, start in enumerate(scores.frame_start):
        frame = slice(start, start + FS)
        ssdr, srdr = direct_definition(ref[frame], est[frame], int(0.01 * FS))
        assert scores.frame_ssdr_db[i] == pytest.approx(ssdr, abs=1e-6)
        assert scores.frame_srdr_db[i] == pytest.approx(srdr, abs=1e-6)
