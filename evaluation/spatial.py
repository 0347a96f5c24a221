"""Spatial audio quality: SSDR and SRDR of Watcharasupat & Lerch (ICASSP 2024, "SPAUQ").

The estimate ŝ of a multichannel reference s is split, frame by frame, into a *spatial* part p —
each estimate channel c explained by delayed, scaled reference channels — and a *residual* ŝ − p:

    SSDR = 10·log10(‖s‖² / ‖p − s‖²)    how far the spatial image moved (delays, gains, leakage)
    SRDR = 10·log10(‖p‖² / ‖ŝ − p‖²)    what is left over (noise, artefacts)

over all channels of a frame, clipped to ±80 dB; the summary is the median over frames.

Two projections (`projection=`):
- "spauq" (default): what the authors' reference implementation (github.com/kwatcharasupat/spauq,
  the version with 1 s / 0.5 s / ±0.1 s defaults) computes, and what the DANCE paper's Table 3
  numbers match: the gains A_c solve the least squares of ŝ_c on the *undelayed* reference
  channels, and the projection is p_c = (Σ_d A_cd)·s_c. The delays only decide which samples of
  the frame are scored. Leakage between channels thus shows up in SRDR rather than SSDR, and a
  delay of the whole estimate is not forgiven.
- "delayed": the paper's formula, p_c[n] = Σ_d A_cd·s_d[n − τ_cd], with A_c the least squares of
  ŝ_c on the delayed reference channels. On codec outputs it gives SSDR several dB lower than
  "spauq" (docs/spatial-audio.md has figures).

Shared semantics, as in the reference implementation:
- frames of `window_s` every `hop_s`; a signal shorter than one window is refused;
  ceil((N − W) / H) + 1 frames, the last one may be shorter than W;
- τ_cd maximises |cross-correlation| of reference d and estimate c within ±round(max_shift_s·fs)
  samples; a channel with std < 1e-8 (silent) gets τ = 0;
- the frame's first max(τ) samples and last max(−τ) samples (which a circular shift wraps round)
  are not scored — in "spauq" mode with the reference's exception: nothing is cut at the end when
  the largest delay is exactly 0;
- A_c solves the normal equations G A_c = b_c (least squares when G has full rank, else Tikhonov:
  (G Gᵀ + λI) A_c = G b_c, λ = 1e-6). Active reference channels: in "delayed" mode the non-silent
  ones; in "spauq" mode all of them if s_c is not silent, none if it is. A silent estimate
  channel gets p_c = 0;
- energies are means of squares, ratios clipped to [1e-8, 1e8]; 0/0 counts as 0 dB.

The silence threshold is absolute, as in the reference: pass float audio at full scale ±1
(int32 counts / 2^31), not raw counts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft

SILENCE_STD = 1e-8
TIKHONOV_LAMBDA = 1e-6
RATIO_FLOOR = 1e-8          # ratios clipped to [1e-8, 1e8]: ±80 dB
PROJECTIONS = ("spauq", "delayed")


@dataclass
class SpatialScores:
    """Per-frame scores and their medians for one reference/estimate pair."""

    frame_start: np.ndarray     # (frames,) first sample of each frame
    frame_ssdr_db: np.ndarray   # (frames,)
    frame_srdr_db: np.ndarray   # (frames,)
    delays: np.ndarray          # (frames, C_est, C_ref) τ_cd in samples (estimate late: > 0)
    gains: np.ndarray           # (frames, C_est, C_ref) A_cd

    @property
    def ssdr_db(self) -> float:
        return float(np.median(self.frame_ssdr_db))

    @property
    def srdr_db(self) -> float:
        return float(np.median(self.frame_srdr_db))


def ratio_db(signal_power: float, noise_power: float) -> float:
    """10·log10(signal / noise) with the reference's conventions at 0 and ±∞ (±80 dB)."""
    if noise_power == 0.0:
        ratio = 1.0 if signal_power == 0.0 else np.inf
    else:
        ratio = signal_power / noise_power
    return float(10.0 * np.log10(np.clip(ratio, RATIO_FLOOR, 1.0 / RATIO_FLOOR)))


def frame_bounds(n_samples: int, window: int, hop: int) -> list[tuple[int, int]]:
    """(start, end) of each analysis frame, as the reference implementation frames a signal."""
    if n_samples < window:
        raise ValueError(f"signal has {n_samples} samples, shorter than one {window}-sample "
                         f"window; use a shorter window_s")
    count = int(np.ceil((n_samples - window) / hop)) + 1
    return [(i * hop, min(i * hop + window, n_samples)) for i in range(count)]


def best_delays(reference: np.ndarray, estimate: np.ndarray, max_shift: int,
                active_ref: np.ndarray, active_est: np.ndarray) -> np.ndarray:
    """(C_est, C_ref) delays τ maximising |Σ_n s_d[n] ŝ_c[n + τ]| over |τ| ≤ max_shift.

    One FFT per channel and one inverse per pair; the FFT length W + max_shift keeps circular
    wrap-around out of the searched lags."""
    n = len(reference)
    max_shift = min(max_shift, n - 1)
    size = sp_fft.next_fast_len(n + max_shift, real=True)
    ref_f = sp_fft.rfft(reference, size, axis=0)        # (F, C_ref)
    est_f = sp_fft.rfft(estimate, size, axis=0)         # (F, C_est)
    # corr[k] = Σ_n est_c[n + k] ref_d[n]: positive k = estimate later than reference
    cross = est_f.T[:, None, :] * np.conj(ref_f.T)[None, :, :]      # (C_est, C_ref, F)
    corr = sp_fft.irfft(cross, size, axis=-1)
    window = np.concatenate([corr[..., size - max_shift:], corr[..., :max_shift + 1]], axis=-1)
    delays = np.argmax(np.abs(window), axis=-1) - max_shift
    delays[~active_est, :] = 0
    delays[:, ~active_ref] = 0
    return delays


def scored_samples(delays: np.ndarray, n: int, projection: str) -> slice:
    """The samples of an n-sample frame that are scored, given its delays."""
    lo, hi = int(delays.min()), int(delays.max())
    end = n + min(0, lo)
    if projection == "spauq" and hi == 0:
        end = n          # the reference implementation keeps the end in this one case
    return slice(max(0, hi), end)


def solve_gains(gram: np.ndarray, cross: np.ndarray, active: np.ndarray,
                tikhonov: float = TIKHONOV_LAMBDA) -> np.ndarray:
    """Per estimate channel c, A_c from G_c A_c = b_c over the active reference channels."""
    gains = np.zeros(cross.shape)
    for c in range(len(cross)):
        use = np.flatnonzero(active[c])
        if len(use) == 0:
            continue
        g, b = gram[c][np.ix_(use, use)], cross[c, use]
        if np.linalg.matrix_rank(g) == len(use):
            gains[c, use] = np.linalg.lstsq(g, b, rcond=None)[0]
        else:
            gains[c, use] = np.linalg.lstsq(g @ g.T + tikhonov * np.eye(len(use)), g @ b,
                                            rcond=None)[0]
    return gains


def project(reference: np.ndarray, estimate: np.ndarray, delays: np.ndarray,
            projection: str = "spauq") -> tuple[slice, np.ndarray, np.ndarray]:
    """The spatial projection p of one frame: (scored samples, p over them, gains A)."""
    n, channels = reference.shape
    kept = scored_samples(delays, n, projection)
    target = estimate[kept].T                                            # (C_est, M)
    active_est = target.std(axis=-1) > SILENCE_STD
    if projection == "spauq":
        basis = reference[kept].T                                        # (C_ref, M)
        gram = np.broadcast_to(basis @ basis.T, (channels, channels, channels))
        cross = target @ basis.T
        active = np.repeat(basis.std(axis=-1)[:, None] > SILENCE_STD, channels, axis=1)
        active &= active_est[:, None]
        gains = solve_gains(gram, cross, active)
        return kept, gains.sum(axis=1)[:, None] * basis, gains
    # shifted[c, d, m] = s_d[m − τ_cd] (circular in the frame; wrapped samples fall outside `kept`)
    index = (np.arange(n)[kept][None, None, :] - delays[:, :, None]) % n
    shifted = reference.T[np.arange(channels)[None, :, None], index]     # (C_est, C_ref, M)
    gram = shifted @ shifted.transpose(0, 2, 1)                          # (C_est, C_ref, C_ref)
    cross = np.einsum("cdm,cm->cd", shifted, target)
    active = (shifted.std(axis=-1) > SILENCE_STD) & active_est[:, None]
    gains = solve_gains(gram, cross, active)
    return kept, np.einsum("cd,cdm->cm", gains, shifted), gains


def spatial_metrics(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
                    window_s: float = 1.0, hop_s: float = 0.5, max_shift_s: float = 0.1,
                    projection: str = "spauq") -> SpatialScores:
    """SSDR and SRDR of `estimate` against `reference`, both samples×channels (float, ±1 scale)."""
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.ndim != 2 or reference.shape != estimate.shape:
        raise ValueError(f"reference and estimate must be samples×channels of one shape, got "
                         f"{reference.shape} and {estimate.shape}")
    if reference.shape[1] < 2:
        raise ValueError(f"spatial metrics need at least 2 channels, got {reference.shape[1]}")
    window = int(round(window_s * sample_rate))
    hop = int(round(hop_s * sample_rate))
    max_shift = int(round(max_shift_s * sample_rate))
    if window < 1 or hop < 1 or max_shift < 0:
        raise ValueError(f"window_s, hop_s must be > 0 and max_shift_s >= 0 "
                         f"(got {window_s}, {hop_s}, {max_shift_s})")
    bounds = frame_bounds(len(reference), window, hop)
    channels = reference.shape[1]
    ssdr, srdr = np.empty(len(bounds)), np.empty(len(bounds))
    delays = np.zeros((len(bounds), channels, channels), dtype=np.int64)
    gains = np.zeros((len(bounds), channels, channels))
    for i, (start, end) in enumerate(bounds):
        ref, est = reference[start:end], estimate[start:end]
        delays[i] = best_delays(ref, est, max_shift, ref.std(axis=0) >= SILENCE_STD,
                                est.std(axis=0) >= SILENCE_STD)
        kept, p, gains[i] = project(ref, est, delays[i], projection)
        s, s_hat = ref[kept].T, est[kept].T
        ssdr[i] = ratio_db(np.mean(s ** 2), np.mean((p - s) ** 2))
        srdr[i] = ratio_db(np.mean(p ** 2), np.mean((s_hat - p) ** 2))
    return SpatialScores(np.array([b[0] for b in bounds]), ssdr, srdr, delays, gains)
