"""Per-signal preprocessing from the config: raw arrays <-> the float tensors the model sees.

Images: H×W×C uint8 <-> 1×C×H×W float in [0, 1].
Audio (the paper's Fig. 4 pipeline): frames×channels int32 counts -> DC blocker (a notch at
0 Hz that removes each microphone's offset and slow drift; streaming, its state carries across
blocks) -> divide by `scale` -> mu-law companding -> 1×C×T float in [-1, 1]. The inverse undoes
companding and scaling; the removed DC/drift is not restored (it carries no acoustic content).
Float audio is taken as full scale ±1 and converted to int32-scaled counts (×2^31), as soundfile
does, so one codec serves both.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.signal import lfilter, lfilter_zi

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
        return torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0)

    def inverse(self, x: torch.Tensor, dtype: str = "uint8") -> np.ndarray:
        pixels = x[0].mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return pixels.permute(1, 2, 0).cpu().numpy()


class AudioPreprocessor:
    kind = "audio"

    def __init__(self, channels: int, sample_rate: int = 48000, dc_cutoff_hz: float = 10.0,
                 scale: float = 2.0 ** 31, mu: float = 65535.0):
        self.channels, self.sample_rate = channels, int(sample_rate)
        self.scale, self.mu = float(scale), float(mu)
        pole = math.exp(-2.0 * math.pi * dc_cutoff_hz / sample_rate)
        self.b, self.a = np.array([1.0, -1.0]), np.array([1.0, -pole])

    def stream(self) -> "AudioStream":
        """A stateful forward transform for consecutive blocks of one signal."""
        return AudioStream(self)

    def forward(self, samples: np.ndarray) -> torch.Tensor:
        """The whole signal at once (same result as streaming it block by block)."""
        return self.stream().forward(samples)

    def counts(self, samples: np.ndarray) -> np.ndarray:
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            raise PreprocessError(f"audio must be frames×{self.channels}, got {samples.shape}")
        if samples.dtype.name not in AUDIO_DTYPES:
            raise PreprocessError(f"audio dtype must be one of {AUDIO_DTYPES}, got {samples.dtype}")
        counts = samples.astype(np.float64)
        if samples.dtype.kind == "f":
            counts *= FLOAT_FULL_SCALE
        return counts

    def compand(self, filtered: np.ndarray) -> torch.Tensor:
        x = np.clip(filtered / self.scale, -1.0, 1.0)
        y = np.sign(x) * np.log1p(self.mu * np.abs(x)) / math.log1p(self.mu)
        return torch.from_numpy(y.T.astype(np.float32)).unsqueeze(0)

    def inverse(self, x: torch.Tensor, dtype: str = "int32") -> np.ndarray:
        y = x[0].detach().cpu().to(torch.float64).numpy().T
        y = np.clip(y, -1.0, 1.0)
        counts = np.sign(y) * np.expm1(np.abs(y) * math.log1p(self.mu)) / self.mu * self.scale
        if dtype.startswith("float"):
            return (counts / FLOAT_FULL_SCALE).astype(dtype)
        info = np.iinfo(np.int32)
        return np.clip(np.round(counts), info.min, info.max).astype(dtype)


class AudioStream:
    """Forward audio preprocessing with the DC blocker's state carried across blocks."""

    def __init__(self, pre: AudioPreprocessor):
        self.pre = pre
        self.state: np.ndarray | None = None

    def forward(self, samples: np.ndarray) -> torch.Tensor:
        counts = self.pre.counts(samples)
        if len(counts) == 0:
            return self.pre.compand(counts)
        if self.state is None:
            # start as if the signal had sat at its first value forever: no start-up transient
            self.state = lfilter_zi(self.pre.b, self.pre.a)[:, None] * counts[:1]
        filtered, self.state = lfilter(self.pre.b, self.pre.a, counts, axis=0, zi=self.state)
        return self.pre.compand(filtered)


def build_preprocessor(config: dict) -> ImagePreprocessor | AudioPreprocessor:
    spec = dict(config.get("preprocess") or {})
    kind = spec.pop("type", config.get("kind"))
    channels = int(config["in_channels"])
    if kind == "image":
        return ImagePreprocessor(channels)
    if kind == "audio":
        return AudioPreprocessor(channels, **spec)
    raise ValueError(f"config needs preprocess.type 'image' or 'audio', got {kind!r}")
