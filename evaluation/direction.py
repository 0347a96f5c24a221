"""Does a codec keep where sounds come from? GCC-PHAT delay agreement between mic pairs.

Perception on the server (sound direction, beamforming, speaker localisation) reads the time
difference of arrival between microphones. This compares that delay on the decoded signal with
the delay on the original, window by window and pair by pair:

- windows of `window` samples (default 4096, the runtime's audio block) every `window` samples;
  only *energetic* windows count: the reference's mean-square over channels within
  `energy_db` (default 30 dB) of the clip's loudest window (a codec need not keep the direction
  of silence);
- per mic pair (all C·(C−1)/2), the GCC-PHAT delay (`dance.align.gcc_phat_delays`: the
  cross-power spectrum with unit magnitude per frequency in 100 Hz–8 kHz, bins 40 dB below the
  strongest weighted down, zero-padded against wrap-around, interpolated `upsample`× in the lag
  domain) searched within ±`max_lag` samples (default: the Aria array's widest spacing / c,
  plus two samples);
- a window-pair *agrees* when the decoded delay is within `tolerance` (one sample) of the
  original's; the score is the share of agreeing window-pairs (per pair too).

The phase transform weights every frequency alike, so this is sensitive to what a codec does in
bands where it spends no bits: inaudible there, but a shared artefact (the same ripple on every
channel) pulls every pair's delay to zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from dance.align import BAND_HZ as BAND
from dance.align import PHAT_FLOOR_DB as DYNAMIC_DB
from dance.align import gcc_phat_delays

WINDOW = 4096
ENERGY_DB = 30.0
UPSAMPLE = 4
TOLERANCE = 1.0


def aria_max_lag(sample_rate: int, margin: int = 2) -> int:
    """The widest delay two Aria microphones can see, in samples, plus a margin."""
    from dance.geometry import ARIA_MIC_POSITIONS, SPEED_OF_SOUND
    spread = max(np.linalg.norm(a - b) for a, b in combinations(ARIA_MIC_POSITIONS, 2))
    return int(np.ceil(spread / SPEED_OF_SOUND * sample_rate)) + margin


@dataclass
class DirectionScores:
    """Delays per energetic window and pair, and how often the estimate's agree."""

    pairs: list[tuple[int, int]]
    window_start: np.ndarray       # (windows,) first sample of each scored window
    reference_delay: np.ndarray    # (windows, pairs) samples, estimate minus reference channel
    estimate_delay: np.ndarray     # (windows, pairs)
    tolerance: float

    @property
    def agree(self) -> np.ndarray:
        return np.abs(self.estimate_delay - self.reference_delay) <= self.tolerance + 1e-9

    @property
    def agreement(self) -> float | None:
        """Share of energetic window-pairs whose delay survived (None: no energetic window)."""
        return float(self.agree.mean()) if self.agree.size else None

    @property
    def pair_agreement(self) -> dict[tuple[int, int], float]:
        return {p: float(a) for p, a in zip(self.pairs, self.agree.mean(0))} if self.agree.size else {}


def energetic_windows(reference: np.ndarray, window: int, energy_db: float) -> np.ndarray:
    """First samples of the full windows whose mean square is within `energy_db` of the loudest."""
    count = len(reference) // window
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    power = (reference[:count * window].reshape(count, window, -1) ** 2).mean((1, 2))
    loud = power >= power.max() * 10 ** (-energy_db / 10) if power.max() > 0 else power > 0
    return np.flatnonzero(loud) * window


def direction_agreement(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
                        window: int = WINDOW, energy_db: float = ENERGY_DB,
                        max_lag: int | None = None, tolerance: float = TOLERANCE,
                        band: tuple[float, float] = BAND, dynamic_db: float = DYNAMIC_DB,
                        upsample: int = UPSAMPLE) -> DirectionScores:
    """Delay agreement of `estimate` with `reference` (both samples×channels, same scale)."""
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.ndim != 2 or reference.shape != estimate.shape or reference.shape[1] < 2:
        raise ValueError(f"reference and estimate must be samples×channels (2+ channels) of one "
                         f"shape, got {reference.shape} and {estimate.shape}")
    if window < 2 or upsample < 1:
        raise ValueError(f"window must be >= 2 and upsample >= 1, got {window}, {upsample}")
    window = min(window, len(reference))
    pairs = list(combinations(range(reference.shape[1]), 2))
    max_lag = aria_max_lag(sample_rate) if max_lag is None else int(max_lag)
    max_lag = min(max_lag, window - 1)
    starts = energetic_windows(reference, window, energy_db)
    ref_delay = np.zeros((len(starts), len(pairs)))
    est_delay = np.zeros_like(ref_delay)
    for k, start in enumerate(starts):
        ref_delay[k] = gcc_phat_delays(reference[start:start + window], pairs, max_lag, sample_rate,
                                       band, dynamic_db, upsample)
        est_delay[k] = gcc_phat_delays(estimate[start:start + window], pairs, max_lag, sample_rate,
                                       band, dynamic_db, upsample)
    return DirectionScores(pairs, starts, ref_delay, est_delay, tolerance)
