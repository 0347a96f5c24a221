"""Per-signal preprocessing from the config: raw arrays <-> the float tensors the model sees.

Images: H×W×C uint8 <-> 1×C×H×W float in [0, 1].

Audio, the paper's Fig. 4 chain, in two steps that also exist as graph nodes (`notch`, `compand`,
`expand`; docs/spatial-audio.md):
1. scaling: int32/int64 counts are divided by 2^31 (`FLOAT_FULL_SCALE`), float input is taken as
   already at full scale ±1 — so int32 full scale is ±1.0 and one codec serves both;
2. `NotchFilter`: a notch at 0 Hz (zero at z = 1, pole at r = exp(−2π·fc/fs) just inside it) that
   removes each microphone's DC offset and slow drift, optionally with mains notches (50/60 Hz and
   harmonics); streaming, its state carries across blocks, and it starts as if the signal had sat
   at its first value forever, so there is no start-up transient from the offset;
3. `compand`: μ-law y = sign(x)·ln(1 + μ|x|)/ln(1 + μ) of x = clip(v·2^31/scale, ±1), the model's
   input (1×C×T float). `expand` is its exact inverse; the removed DC/drift is not restored (it
   carries no acoustic content).
`AudioPreprocessor` (built from a codec config) runs the chain for training data and coding
(its stream, `AudioStream`, filters with `StreamNotch`: the same filter, vectorised over chunks,
streaming still exactly equal to whole-signal processing); `notch_filter()` gives evaluation
the linear, notch-filtered reference with the same filter.
"""
from __future__ import annotations

import math

from typing import TYPE_CHECKING

import numpy as np
from scipy.signal import iirnotch, lfilter, sosfilt, sosfilt_zi

if TYPE_CHECKING:
    import torch
# torch is imported where tensors are made, so the numpy/scipy audio chain (notch, compand nodes,
# evaluation) runs without loading it

FLOAT_FULL_SCALE = 2.0 ** 31
AUDIO_DTYPES = ("int32", "int64", "float32", "float64")


class PreprocessError(ValueError):
    """An input array this codec cannot take (wrong shape, channel count or dtype)."""


class ImagePreprocessor:
    kind = "image"

    def __init__(self, channels: int = 3):
        self.channels = channels

    def forward(self, pixels: np.ndarray, multiple: int = 1, pool: int = 1) -> torch.Tensor:
        """1×C×H'×W' float32 (channels-last memory): padded by edge replication to a multiple
        of `multiple`, then, if `pool` > 1, averaged over pool×pool blocks — the encoder's
        leading AvgPool done here in integer arithmetic, ~2× cheaper than in float."""
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != self.channels:
            raise PreprocessError(f"image must be H×W×{self.channels} uint8, got "
                                  f"{pixels.shape} {pixels.dtype}")
        if min(pixels.shape[:2]) < 1:
            raise PreprocessError(f"image is empty: {pixels.shape}")
        pad = [(0, -pixels.shape[0] % multiple), (0, -pixels.shape[1] % multiple), (0, 0)]
        if pad[0][1] or pad[1][1]:
            pixels = np.pad(pixels, pad, mode="edge")
        if pool > 1:
            if pixels.shape[0] % pool or pixels.shape[1] % pool:
                raise PreprocessError(f"image {pixels.shape} is not a multiple of pool {pool}")
            rows = pixels[0::pool].astype(np.uint16)
            for i in range(1, pool):
                rows += pixels[i::pool]
            cells = rows.reshape(rows.shape[0], rows.shape[1] // pool, pool, self.channels)
            summed = cells[:, :, 0].copy()
            for j in range(1, pool):
                summed += cells[:, :, j]
            x = summed.astype(np.float32)
            x *= np.float32(1.0 / (255.0 * pool * pool))
        else:
            x = np.multiply(pixels, np.float32(1.0 / 255.0), dtype=np.float32)
        import torch
        return torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0)

    def inverse(self, x: torch.Tensor, dtype: str = "uint8") -> np.ndarray:
        import torch
        pixels = x[0].mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return pixels.permute(1, 2, 0).cpu().numpy()


def full_scale(samples: np.ndarray, channels: int | None = None) -> np.ndarray:
    """frames×channels audio as float64 at full scale ±1: integer counts / 2^31, floats as they are."""
    check_audio(samples, channels)
    if samples.dtype.kind == "f":
        return samples.astype(np.float64)
    return samples.astype(np.float64) / FLOAT_FULL_SCALE


def check_audio(samples: np.ndarray, channels: int | None = None) -> None:
    """Raise PreprocessError unless `samples` is frames×channels audio of a dtype we take."""
    if samples.ndim != 2 or (channels is not None and samples.shape[1] != channels):
        want = f"frames×{channels}" if channels is not None else "frames×channels"
        raise PreprocessError(f"audio must be {want}, got {samples.shape}")
    if samples.dtype.name not in AUDIO_DTYPES:
        raise PreprocessError(f"audio dtype must be one of {AUDIO_DTYPES}, got {samples.dtype}")


def notch_sos(sample_rate: int, dc_cutoff_hz: float = 10.0, mains_hz: float = 0.0,
              mains_harmonics: int = 3, mains_q: float = 30.0) -> np.ndarray:
    """Second-order sections of the notch chain: DC (−3 dB at `dc_cutoff_hz`), then, if
    `mains_hz` > 0, iirnotch at mains_hz·k for k = 1..mains_harmonics below Nyquist."""
    if not 0 < dc_cutoff_hz < sample_rate / 2:
        raise ValueError(f"dc_cutoff_hz must be in (0, {sample_rate / 2}), got {dc_cutoff_hz}")
    pole = math.exp(-2.0 * math.pi * dc_cutoff_hz / sample_rate)
    sections = [[1.0, -1.0, 0.0, 1.0, -pole, 0.0]]
    if mains_hz < 0 or mains_harmonics < 0 or mains_q <= 0:
        raise ValueError(f"mains_hz, mains_harmonics must be >= 0 and mains_q > 0 "
                         f"(got {mains_hz}, {mains_harmonics}, {mains_q})")
    for k in range(1, mains_harmonics + 1 if mains_hz > 0 else 1):
        if mains_hz * k < sample_rate / 2:
            b, a = iirnotch(mains_hz * k, mains_q, fs=sample_rate)
            sections.append([*b, *a])
    return np.array(sections)


class NotchFilter:
    """The notch chain over consecutive blocks of one signal (state carried across blocks)."""

    def __init__(self, sos: np.ndarray):
        self.sos = sos
        self.state: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """frames×channels float64 in, the same filtered out."""
        if len(x) == 0:
            return x.copy()
        if self.state is None:
            # steady state for a signal that sat at its first value forever: no start transient
            self.state = sosfilt_zi(self.sos)[:, :, None] * x[:1][None]
        y, self.state = sosfilt(self.sos, x, axis=0, zi=self.state)
        return y


class StreamNotch:
    """The notch chain over consecutive blocks of a stream, for the codec's audio stream: full
    scale conversion and filtering of frames×channels blocks into a chunk grid, the layout the
    recurrence below vectorises in (`AudioStream` compands it straight into the model's
    channels×frames).

    The plain DC notch (one first-order section, the audio codecs' default) runs as a
    recurrence vectorised over chunks of `CHUNK` samples at fixed positions of the stream:
    y = w + p^(j+1)·Y, w the recurrence over the chunk's first j+1 differences from zero, Y
    the output before the chunk (itself a recurrence over chunks, pole p^CHUNK) — the same
    arithmetic for a sample however the stream is cut into blocks (a chunk cut by a block
    boundary carries its partial w), so streaming equals whole-signal filtering exactly, for
    about half the cost of scipy's sample-by-sample kernel and its copies; its output differs
    from `NotchFilter`'s by float64 rounding (< 1e-13 of the signal's range). Other chains
    (mains notches) run `NotchFilter` itself (a grid of one chunk)."""

    CHUNK = 8

    def __init__(self, sos: np.ndarray):
        self.sos = np.asarray(sos, dtype=np.float64)
        b0, b1, b2, a0, a1, a2 = self.sos[0]
        self.dc_only = len(self.sos) == 1 and (b0, b1, b2, a0, a2) == (1.0, -1.0, 0.0, 1.0, 0.0)
        if self.dc_only:
            self.pole = -a1
            self.powers = self.pole ** np.arange(self.CHUNK + 1, dtype=np.float64)
            self.position = 0                       # samples filtered so far, modulo CHUNK
            self.last_input: np.ndarray | None = None
            self.partial: np.ndarray | None = None  # w at the last sample of a cut chunk
            self.before: np.ndarray | None = None   # the output before the current chunk (Y)
        else:
            self.filter = NotchFilter(self.sos)

    def __call__(self, samples: np.ndarray) -> tuple[np.ndarray, int]:
        """(grid, head) of a frames×channels block (checked audio, one frame or more): grid
        [j, k, c] is the filtered full-scale sample k·K + j − head of channel c, K the grid's
        first axis (CHUNK, or 1 for `NotchFilter`'s chains); the block is grid positions
        head .. head + frames. The grid is overwritten by the next call."""
        if not self.dc_only:
            return self.filter(full_scale(samples))[None], 0
        k, (frames, channels) = self.CHUNK, samples.shape
        head = self.position
        end = head + frames
        chunks = -(-end // k)
        x, step, before = self._buffers(chunks, channels)
        # full-scale input on the grid (frame k·K + j − head at [j, k]), written chunk-wise
        scale = 1.0 if samples.dtype.kind == "f" else 1.0 / FLOAT_FULL_SCALE  # exact: 2^-31
        first = min(k, end)                      # frames of chunk 0, from `head`
        x[:head, 0] = 0.0
        np.multiply(samples[:first - head], scale, out=x[head:first, 0])
        whole = (end - first) // k               # full chunks after it
        if whole:
            np.multiply(samples[first - head:first - head + whole * k]
                        .reshape(whole, k, channels).transpose(1, 0, 2), scale,
                        out=x[:, 1:1 + whole])
        tail = end - first - whole * k
        if tail:
            np.multiply(samples[frames - tail:], scale, out=x[:tail, chunks - 1])
        if self.last_input is None:   # as if the signal had sat at its first value forever
            self.last_input = x[head, 0].copy()
            self.before = np.zeros(channels)
        last_input, self.last_input = self.last_input, (x[(end - 1) % k, chunks - 1]).copy()
        if end % k:
            x[end % k:, chunks - 1] = self.last_input        # differences 0 after the block
        # the differences x[n] − x[n−1] on the grid, zero before the block but for the cut
        # chunk's partial w just before it (the recurrence resumes from it)
        np.subtract(x[0, 1:], x[k - 1, :-1], out=step[1:])   # across chunk boundaries
        for j in range(k - 1, 0, -1):            # in place, from the last row down
            x[j] -= x[j - 1]
        x[0, 1:] = step[1:]
        x[head, 0] -= last_input                 # the rows before it are 0 (minus 0)
        if head:
            x[head - 1, 0] = self.partial
        grid = x
        for j in range(1, k):                    # w_j = v_j + p·w_(j−1), every chunk at once
            np.multiply(grid[j - 1], self.pole, out=step)
            grid[j] += step
        # Y of each chunk: the output just before it, a recurrence over chunks (pole p^k)
        complete = chunks if end % k == 0 else chunks - 1
        before[0] = self.before
        last = before[chunks - 1]
        if complete:
            ends, _ = lfilter([1.0], [1.0, -self.powers[k]], grid[k - 1, :complete], axis=0,
                              zi=(self.powers[k] * self.before)[None])
            before[1:] = ends[:chunks - 1]
            last = ends[complete - 1] if complete == chunks else before[chunks - 1]
        self.position = end % k
        if self.position:
            self.partial = grid[self.position - 1, chunks - 1].copy()
        self.before = last.copy()
        for j in range(k):                       # y = w + p^(j+1)·Y
            np.multiply(before, self.powers[j + 1], out=step)
            grid[j] += step
        return grid, head

    def _buffers(self, chunks: int, channels: int) -> tuple[np.ndarray, ...]:
        """Work arrays for a block of `chunks` chunks, kept from block to block: fresh ones of
        this size would be fresh pages from the OS each time under glibc's default malloc (and
        the fewer there are, the less of the cache preprocessing takes from the encoder)."""
        grid = (self.CHUNK, chunks, channels)
        if getattr(self, "_work", None) is None or self._work[0].shape != grid:
            self._work = (np.empty(grid), np.empty(grid[1:]), np.empty(grid[1:]))
        return self._work


def notch_filter(samples: np.ndarray, sample_rate: int, **design) -> np.ndarray:
    """The whole signal through the notch chain, at full scale (the metrics' linear reference)."""
    return NotchFilter(notch_sos(sample_rate, **design))(full_scale(samples))


def compand(x: np.ndarray, mu: float, gain: float = 1.0) -> np.ndarray:
    """μ-law of clip(x·gain, ±1): [−1, 1] with resolution where quiet signals live.

    float32, the model's input type, on the encoder's hot path: ln(1 + μ|x|) is numpy's
    vectorised log of u = 1 + μ|x| plus the rounding error of u, (μ|x| − (u − 1))/u: log1p
    to a few float32 ulps (`expand` inverts it to 1e-6) at a third of np.log1p's cost (a
    scalar libm call per sample); far below the precision the codec keeps."""
    x = np.asarray(x)
    return _compand(x, mu, gain, np.empty(x.shape, np.float32), np.empty(x.shape, np.float32))


def _compand(x: np.ndarray, mu: float, gain: float, a: np.ndarray, u: np.ndarray) -> np.ndarray:
    """`compand` of x with float32 work arrays `a` and `u` of its shape; the result is `u`."""
    np.multiply(x, np.float32(gain * mu), dtype=np.float32, out=a)   # μ·x·gain
    np.abs(a, out=a)
    np.minimum(a, np.float32(mu), out=a)                             # μ·clip(|x·gain|, 1)
    np.add(a, np.float32(1.0), out=u)
    u -= np.float32(1.0)                                             # exact (Sterbenz), and
    np.subtract(a, u, out=a)                                         # so a − (u − 1) is
    u += np.float32(1.0)                                             # exact: back to 1 + a
    np.divide(a, u, out=a)
    np.log(u, out=u)
    u += a                                                           # ln(1 + μ|x·gain|)
    u *= np.float32(1.0 / math.log1p(mu))
    return np.copysign(u, x, out=u, dtype=np.float32)                # x's sign, as x·gain's


def expand(y: np.ndarray, mu: float, gain: float = 1.0) -> np.ndarray:
    """The inverse of `compand` (inputs clipped to [−1, 1] first)."""
    y = np.clip(np.asarray(y, dtype=np.float64), -1.0, 1.0)
    return np.sign(y) * np.expm1(np.abs(y) * math.log1p(mu)) / mu / gain


class AudioPreprocessor:
    kind = "audio"

    def __init__(self, channels: int, sample_rate: int = 48000, dc_cutoff_hz: float = 10.0,
                 scale: float = 2.0 ** 31, mu: float = 65535.0, mains_hz: float = 0.0,
                 mains_harmonics: int = 3, mains_q: float = 30.0):
        self.channels, self.sample_rate = channels, int(sample_rate)
        self.scale, self.mu = float(scale), float(mu)
        self.gain = FLOAT_FULL_SCALE / self.scale   # full-scale float -> the companded range
        self.sos = notch_sos(self.sample_rate, dc_cutoff_hz, mains_hz, mains_harmonics, mains_q)

    def stream(self) -> "AudioStream":
        """A stateful forward transform for consecutive blocks of one signal."""
        return AudioStream(self)

    def forward(self, samples: np.ndarray) -> torch.Tensor:
        """The whole signal at once (same result as streaming it block by block)."""
        return self.stream().forward(samples)

    def compand(self, filtered: np.ndarray) -> torch.Tensor:
        """Filtered full-scale audio -> the model's 1×C×T float32 input."""
        import torch
        return torch.from_numpy(np.ascontiguousarray(compand(filtered, self.mu, self.gain).T)
                                ).unsqueeze(0)

    def inverse(self, x: torch.Tensor, dtype: str = "int32") -> np.ndarray:
        """The model's 1×C×T output -> frames×channels in `dtype` (floats at full scale)."""
        import torch
        y = x[0].detach().cpu().to(torch.float64).numpy().T
        linear = expand(y, self.mu, self.gain)
        if dtype.startswith("float"):
            return linear.astype(dtype)
        info = np.iinfo(np.int32)
        return np.clip(np.round(linear * FLOAT_FULL_SCALE), info.min, info.max).astype(dtype)


class AudioStream:
    """Forward audio preprocessing with the notch filter's state carried across blocks: the
    notch's chunk grid (`StreamNotch`) is companded as it lies and turned into the model's
    channels×frames in one copy."""

    def __init__(self, pre: AudioPreprocessor):
        self.pre = pre
        self.notch = StreamNotch(pre.sos)

    def forward(self, samples: np.ndarray) -> torch.Tensor:
        import torch
        check_audio(samples, self.pre.channels)
        frames, channels = samples.shape
        if not frames:
            return torch.zeros(1, channels, 0)
        grid, head = self.notch(samples)
        if getattr(self, "_work", None) is None or self._work[0].shape != grid.shape:
            self._work = tuple(np.empty(grid.shape, np.float32) for _ in range(2))
        y = _compand(grid, self.pre.mu, self.pre.gain, *self._work)   # (K, chunks, C)
        y = y.transpose(2, 1, 0).copy().reshape(channels, -1)       # fresh: the work is reused
        if head or y.shape[1] != frames:
            y = np.ascontiguousarray(y[:, head:head + frames])
        return torch.from_numpy(y).unsqueeze(0)


class CompandedInput:
    """A stream whose blocks were already notch-filtered and companded (frames×channels floats
    in [−1, 1], e.g. from the `compand` node): passed to the model as they are."""

    def __init__(self, channels: int):
        self.channels = channels

    def forward(self, samples: np.ndarray) -> torch.Tensor:
        if samples.ndim != 2 or samples.shape[1] != self.channels or samples.dtype.kind != "f":
            raise PreprocessError(f"companded audio must be frames×{self.channels} float, got "
                                  f"{samples.shape} {samples.dtype}")
        if len(samples) and np.abs(samples).max() > 1.0:
            raise PreprocessError("companded audio must lie in [-1, 1]")
        import torch
        return torch.from_numpy(np.ascontiguousarray(samples.T, dtype=np.float32)).unsqueeze(0)

    def inverse(self, x: torch.Tensor, dtype: str = "float32") -> np.ndarray:
        """The model's 1×C×T output as frames×channels companded float32 (for `expand`)."""
        return x[0].detach().clamp(-1.0, 1.0).T.contiguous().cpu().float().numpy()


def build_preprocessor(config: dict) -> ImagePreprocessor | AudioPreprocessor:
    spec = dict(config.get("preprocess") or {})
    kind = spec.pop("type", config.get("kind"))
    channels = int(config["in_channels"])
    if kind == "image":
        return ImagePreprocessor(channels)
    if kind == "audio":
        return AudioPreprocessor(channels, **spec)
    raise ValueError(f"config needs preprocess.type 'image' or 'audio', got {kind!r}")
