"""Delay-compensated multichannel coding: line the microphones up before coding, undo it after.

A sound reaches the Aria microphones up to ~24 samples apart; those delays are what perception
reads its direction from (GCC-PHAT). At 600:1 a codec keeps mostly what the channels share and
drops the small differences between them, so its output comes back nearly in phase on every
channel and every delay collapses towards zero. Here the encoder measures, per segment, each
channel's delay (GCC-PHAT between all pairs, fitted to one delay per channel), shifts every
channel so the dominant sound lines up, and sends the delays (one int8 per channel and
segment); the decoder shifts each channel back. What the codec keeps in common then comes back
with the measured delays, and lining up makes the channels more alike, so the codec spends
less on their differences.

The coded signal is `max_shift` samples longer at each end than the original (free in practice:
the model pads to its stride anyway), so that every original sample lands inside it whatever its
channel's shift: a block is coded alone, with no look-ahead. Within a segment the shift is exact;
where the delays change between segments, the |change| samples at the boundary come from the
neighbouring segment's alignment.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

BAND_HZ = (100.0, 8000.0)   # where sources carry energy (as evaluation.direction scores it)
SEGMENT = 4096              # samples per delay set in a long signal (a stream block is one)
MIN_SEGMENT = 256           # shorter segments are not measured (delays 0)
PHAT_FLOOR_DB = 40.0        # bins this far below a pair's strongest get proportionally less weight
FIT_TOLERANCE = 1           # samples: a pair agrees with a delay set within this


def gcc_phat(block: np.ndarray, pairs: list[tuple[int, int]], max_lag: int, sample_rate: int,
             band: tuple[float, float] = BAND_HZ, dynamic_db: float = PHAT_FLOOR_DB,
             upsample: int = 1) -> np.ndarray:
    """GCC-PHAT correlation (2·max_lag·upsample + 1 lags from −max_lag, pairs) of channel j
    against channel i for each pair (i, j) of one window `block` (samples×channels), from the
    frequencies within `band` (Hz); bins more than `dynamic_db` below a pair's strongest are
    weighted down in proportion. Zero-padded to twice the length against wrap-around: a
    circular correlation is ~2× cheaper, but on reverberant rooms its delays fit the padded
    ones 5–8 points less often."""
    from scipy import fft
    n = 2 * len(block)
    spectra = fft.rfft(block, n, axis=0)                         # (bins, C)
    i, j = np.array(pairs).T
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    inside = (freqs >= band[0]) & (freqs <= band[1])
    cross = spectra[inside][:, j] * np.conj(spectra[inside][:, i])  # (bins in band, pairs)
    magnitude = np.abs(cross)
    floor = np.maximum(magnitude.max(0, initial=0.0) * 10 ** (-dynamic_db / 20), 1e-30)
    full = np.zeros((len(freqs), len(pairs)), dtype=cross.dtype)
    full[inside] = cross / np.maximum(magnitude, floor)
    corr = fft.irfft(full, n * upsample, axis=0)
    reach = max_lag * upsample
    return np.concatenate((corr[-reach:], corr[:reach + 1]))     # lags -reach..reach


def gcc_phat_delays(block: np.ndarray, pairs: list[tuple[int, int]], max_lag: int,
                    sample_rate: int, band: tuple[float, float] = BAND_HZ,
                    dynamic_db: float = PHAT_FLOOR_DB, upsample: int = 1) -> np.ndarray:
    """GCC-PHAT delay (samples, in 1/upsample steps) of channel j behind channel i for each pair
    (i, j): the peak of `gcc_phat` within ±max_lag."""
    corr = gcc_phat(block, pairs, max_lag, sample_rate, band, dynamic_db, upsample)
    return (np.argmax(corr, axis=0) - max_lag * upsample) / upsample


def channel_delays(block: np.ndarray, max_shift: int, sample_rate: int) -> np.ndarray:
    """One integer delay per channel (C,), |d| <= max_shift, centred on the median, such that as
    many pairs as possible have d_j − d_i within a sample of their GCC-PHAT delay (block:
    samples×channels). Pairs of a reverberant room with several sources rarely agree on one set:
    the fit keeps the majority rather than averaging in the outliers."""
    channels = block.shape[1]
    if len(block) < MIN_SEGMENT or channels < 2 or not np.any(block):
        return np.zeros(channels, dtype=np.int64)
    pairs = list(combinations(range(channels), 2))
    lags = gcc_phat_delays(np.asarray(block, dtype=np.float32), pairs, 2 * max_shift,
                           sample_rate)
    lag = np.zeros((channels, channels))
    for (i, j), value in zip(pairs, lags):
        lag[i, j], lag[j, i] = value, -value                     # lag[i, j] ~ d_j - d_i
    delays = lag[0].copy()                                       # start: relative to channel 0
    candidates = np.arange(-2 * max_shift, 2 * max_shift + 1)
    for _ in range(2):                                           # coordinate ascent, two sweeps
        for c in range(channels):
            others = np.delete(np.arange(channels), c)
            # pairs (o, c): d_c - d_o should be lag[o, c]
            fits = np.abs(candidates[:, None] - delays[others][None] - lag[others, c][None])
            score = (fits <= FIT_TOLERANCE).sum(1) - 1e-3 * np.abs(candidates - delays[c])
            delays[c] = candidates[int(np.argmax(score))]
    delays -= np.round(np.median(delays))
    return np.clip(delays, -max_shift, max_shift).astype(np.int64)


def segment_delays(x: torch.Tensor, max_shift: int, sample_rate: int,
                   segment: int = SEGMENT) -> np.ndarray:
    """Delays (segments, C) of a 1×C×T signal, one set per `segment` samples."""
    signal = x[0].detach().to("cpu", torch.float32).numpy().T
    starts = range(0, max(len(signal), 1), segment)
    return np.stack([channel_delays(signal[s:s + segment], max_shift, sample_rate)
                     for s in starts])


def _segment_of(samples: np.ndarray, count: int, segment: int) -> np.ndarray:
    return np.clip(samples // segment, 0, count - 1)


def align(x: torch.Tensor, delays: np.ndarray, max_shift: int,
          segment: int = SEGMENT) -> torch.Tensor:
    """1×C×T -> 1×C×(T + 2·max_shift): channel c's sample i at i + max_shift − d_c (its
    segment's delay), edges held."""
    frames = x.shape[-1]
    coded = np.arange(frames + 2 * max_shift)
    seg = _segment_of(np.clip(coded - max_shift, 0, frames - 1), len(delays), segment)
    source = np.clip(coded[None] - max_shift + delays[seg].T, 0, frames - 1)     # C×T'
    return torch.gather(x, 2, torch.from_numpy(source)[None].to(x.device))


def unalign(x_hat: torch.Tensor, delays: np.ndarray, max_shift: int, frames: int,
            segment: int = SEGMENT) -> torch.Tensor:
    """The inverse of `align`: 1×C×(≥ frames + 2·max_shift) -> 1×C×frames."""
    samples = np.arange(frames)
    seg = _segment_of(samples, len(delays), segment)
    source = samples[None] + max_shift - delays[seg].T                            # C×frames
    return torch.gather(x_hat, 2, torch.from_numpy(source)[None].to(x_hat.device))


def align_batch(x: torch.Tensor, max_shift: int, sample_rate: int) -> torch.Tensor:
    """Training crops B×C×T lined up in place of their length (one delay set per crop, edges
    held): what the codec sees at inference, without the extension."""
    out = torch.empty_like(x)
    frames = x.shape[-1]
    for b in range(x.shape[0]):
        delays = channel_delays(x[b].detach().float().cpu().numpy().T, max_shift, sample_rate)
        source = np.clip(np.arange(frames)[None] + delays[:, None], 0, frames - 1)
        out[b] = torch.gather(x[b], 1, torch.from_numpy(source).to(x.device))
    return out


def pack_delays(delays: np.ndarray) -> bytes:
    return delays.astype(np.int8).tobytes()


def unpack_delays(string: bytes, segments: int, channels: int, max_shift: int) -> np.ndarray:
    """The delays string back to (segments, C); ValueError when it cannot be this codec's."""
    if len(string) != segments * channels:
        raise ValueError(f"the delay string holds {len(string)} bytes, expected "
                         f"{segments * channels}")
    delays = np.frombuffer(string, np.int8).astype(np.int64).reshape(segments, channels)
    if np.abs(delays).max(initial=0) > max_shift:
        raise ValueError(f"a channel delay is over the codec's {max_shift} samples")
    return delays
