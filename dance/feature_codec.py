"""Lightweight codecs for the feature tensor of a split network (seed 002): no retraining of
the network, a few comparisons per element on the device.

`EcqFeatureCodec` scales each channel with statistics of training activations (standardises
signed ones; non-negative ReLU/ReLU6 outputs are only scaled, so their zeros stay at 0), clips to
a range from their distribution (0 for rectified layers, else the 0.05% quantile; the 99.95%
quantile above), and quantises every element with an
entropy-constrained scalar quantiser (Chou, Lookabaugh & Gray 1989), designed on training
activations for each rate-distortion trade-off λ: cells minimise (x − y)² + λ·(−log2 p), then
centroids and probabilities are recomputed, empty cells dropped, until the cost settles; the
outer levels may be pinned at the clip values when that lowers the cost (clipped data piles up
there). The cell indices are coded with the engine's ANS (`dance.entropy.TableCoder`) under the
designed probabilities. One JSON file holds the statistics and every operating point.

`UniformZstdCodec`, the baseline: the same standardisation and clipping, uniform quantisation
to `bits` bits and zstandard.

Container (`EcqFeatureCodec`): b"DF", version 1, the codec's 4-byte tag (sha256 of its JSON),
operating point, C, H, W (u16 each), then the ANS words. Every field is checked against the
codec before anything is allocated; a bad payload is one `FeatureCodecError` line.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

MAGIC, VERSION = b"DF", 1
_HEADER = struct.Struct("<2sB4sBHHH")
CLIP_QUANTILES = (0.0005, 0.9995)
PRECISION = 16


class FeatureCodecError(ValueError):
    """A payload or codec file that does not fit; one-line message."""


# -- design ------------------------------------------------------------------------------------
def design_ecq(values: np.ndarray, lam: float, clip: tuple[float, float], levels: int = 64,
               iterations: int = 60, pin: bool = True,
               bins: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """(levels, probabilities) of an entropy-constrained scalar quantiser of `values` (already
    clipped to `clip`), for distortion + lam·bits, from `levels` uniform levels. With `pin`,
    also designs one whose outer levels stay on the clip values (clipped data piles up there:
    seed 002's modification for clipped activations) and keeps whichever costs less. Runs on a
    fine histogram of the values (`bins` cells over the clip range, and the clip values
    themselves), so the design costs the same for any amount of training data."""
    x, weight = _histogram(values, clip, bins)
    designs = [_design(x, weight, lam, clip, levels, iterations, pinned=False)]
    if pin:
        designs.append(_design(x, weight, lam, clip, levels, iterations, pinned=True))
    y, p, _ = min(designs, key=lambda d: d[2])
    return y, p


def _design(x, weight, lam, clip, levels, iterations, pinned: bool):
    """Chou-Lookabaugh-Gray iterations; (levels, probabilities, cost)."""
    y = np.linspace(clip[0], clip[1], levels)
    p = np.full(levels, 1.0 / levels)
    previous = np.inf
    for _ in range(iterations):
        cells = _assign(x, y, p, lam)
        counts = np.bincount(cells, weights=weight, minlength=len(y))
        sums = np.bincount(cells, weights=weight * x, minlength=len(y))
        keep = counts > 0
        y, p = sums[keep] / counts[keep], counts[keep] / counts[keep].sum()
        if pinned and len(y) > 2:
            y[0], y[-1] = clip
        cost = _cost(x, weight, y, p, lam)
        if previous - cost < 1e-9 * max(abs(previous), 1e-12):
            break
        previous = cost
    return y, p, cost


def _histogram(values: np.ndarray, clip: tuple[float, float], bins: int):
    """(value, weight) pairs standing for `values`: the clip values exactly (clipped data
    piles up there), the rest in `bins` equal cells at their mean."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    at_lo, at_hi = v <= clip[0], v >= clip[1]
    inner = v[~(at_lo | at_hi)]
    index = np.minimum(((inner - clip[0]) / (clip[1] - clip[0]) * bins).astype(np.int64),
                       bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    sums = np.bincount(index, weights=inner, minlength=bins)
    used = counts > 0
    x = np.concatenate([[clip[0]], sums[used] / counts[used], [clip[1]]])
    w = np.concatenate([[at_lo.sum()], counts[used], [at_hi.sum()]]).astype(np.float64)
    keep = w > 0
    return x[keep], w[keep] / w.sum()


def _assign(x: np.ndarray, y: np.ndarray, p: np.ndarray, lam: float) -> np.ndarray:
    """Cell of every value: argmin over levels of (x − y)² + lam·(−log2 p), in chunks."""
    bits = -np.log2(np.maximum(p, 1e-300))
    out = np.empty(x.size, dtype=np.int64)
    for start in range(0, x.size, 1 << 16):
        chunk = x[start:start + (1 << 16), None]
        out[start:start + chunk.shape[0]] = np.argmin((chunk - y) ** 2 + lam * bits, axis=1)
    return out


def _cost(x: np.ndarray, weight: np.ndarray, y: np.ndarray, p: np.ndarray, lam: float) -> float:
    cells = _assign(x, y, p, lam)
    return float(np.sum(weight * ((x - y[cells]) ** 2 - lam * np.log2(p[cells]))))


# -- codecs ------------------------------------------------------------------------------------
@dataclass
class FeatureStats:
    """Per-channel standardisation and the clip range of the standardised values."""
    mean: np.ndarray
    std: np.ndarray
    clip: tuple[float, float]
    activation: str                    # "rectified" (zeros pile at the lower clip) or "signed"

    @classmethod
    def fit(cls, activations: np.ndarray) -> "FeatureStats":
        """From training activations, N×C×H×W (or N×C). Non-negative activations (ReLU,
        ReLU6 outputs) are only scaled, so their zeros stay exactly on the lower clip value
        0; others are standardised. The upper (and for signed data the lower) clip value is
        the 99.95% (0.05%) quantile of the scaled values."""
        a = np.asarray(activations, dtype=np.float64)
        per_channel = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)
        rectified = per_channel.min() >= 0
        mean = np.zeros(a.shape[1]) if rectified else per_channel.mean(axis=1)
        std = np.sqrt(((per_channel - mean[:, None]) ** 2).mean(axis=1))
        std = np.maximum(std, 1e-6 * std.max() + 1e-30)      # a dead channel: any scale
        z = ((per_channel - mean[:, None]) / std[:, None]).reshape(-1)
        lo, hi = np.quantile(z, CLIP_QUANTILES)
        return cls(mean, std, (0.0 if rectified else float(lo), float(hi)),
                   "rectified" if rectified else "signed")

    def normalise(self, features: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (features.ndim - 1)
        z = (features - self.mean.reshape(shape)) / self.std.reshape(shape)
        return np.clip(z, *self.clip)

    def restore(self, z: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (z.ndim - 1)
        return (z * self.std.reshape(shape) + self.mean.reshape(shape)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "clip": list(self.clip),
                "activation": self.activation}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureStats":
        return cls(np.asarray(d["mean"], float), np.asarray(d["std"], float),
                   (float(d["clip"][0]), float(d["clip"][1])), str(d["activation"]))


@dataclass
class OperatingPoint:
    lam: float
    levels: np.ndarray
    probs: np.ndarray
    bits_per_element: float = 0.0      # entropy on the design data

    def tables(self):
        from dance.entropy import CdfTables
        import torch
        k = len(self.probs)
        cdf = np.concatenate([[0], np.cumsum(self.probs)])
        quantized = np.round(cdf * (2 ** PRECISION - k)).astype(np.int64) + np.arange(k + 1)
        quantized[-1] = 2 ** PRECISION
        return CdfTables(torch.tensor(quantized[None], dtype=torch.int32),
                         torch.tensor([k + 1], dtype=torch.int32),
                         torch.tensor([0], dtype=torch.int32))


@dataclass
class EcqFeatureCodec:
    """Codes the C×H×W tensor at `layer` of `model` at one of its operating points."""
    model: str
    layer: str
    shape: tuple[int, ...]
    stats: FeatureStats
    points: list[OperatingPoint]
    _coders: dict = field(default_factory=dict, repr=False)

    @cached_property
    def tag(self) -> bytes:
        """4 bytes of the sha256 of the codec's JSON: a payload names the codec it needs."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).digest()[:4]

    def quantise(self, features: np.ndarray, point: int) -> np.ndarray:
        op = self.points[point]
        z = self.stats.normalise(np.asarray(features, dtype=np.float64)).reshape(-1)
        return _assign(z, op.levels, op.probs, op.lam)

    def compress(self, features: np.ndarray, point: int = 0) -> bytes:
        features = np.asarray(features)
        if tuple(features.shape) != tuple(self.shape):
            raise FeatureCodecError(f"features of shape {features.shape}; this codec codes "
                                    f"{self.shape} at {self.model} {self.layer}")
        if not 0 <= point < len(self.points):
            raise FeatureCodecError(f"operating point {point}: this codec has "
                                    f"{len(self.points)} (0..{len(self.points) - 1})")
        cells = self.quantise(features, point)
        data = self._coder(point).encode(cells, np.zeros(cells.size, dtype=np.int64))
        c, h, w = (tuple(self.shape) + (1, 1))[:3]
        return _HEADER.pack(MAGIC, VERSION, self.tag, point, c, h, w) + data

    def decompress(self, data: bytes) -> np.ndarray:
        from dance.entropy import EntropyCodingError
        if len(data) < _HEADER.size:
            raise FeatureCodecError(f"feature payload of {len(data)} bytes is shorter than its "
                                    f"{_HEADER.size}-byte header")
        magic, version, tag, point, c, h, w = _HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION:
            raise FeatureCodecError(f"not a version-{VERSION} feature payload (starts "
                                    f"{data[:3]!r})")
        if tag != self.tag:
            raise FeatureCodecError(f"payload made by another feature codec (tag {tag.hex()}, "
                                    f"this one {self.tag.hex()})")
        if point >= len(self.points) or (c, h, w) != (tuple(self.shape) + (1, 1))[:3]:
            raise FeatureCodecError(f"payload header (point {point}, shape {c}×{h}×{w}) does "
                                    f"not fit this codec ({len(self.points)} points, "
                                    f"{self.shape})")
        size = int(np.prod(self.shape))
        try:
            cells = self._coder(point).decode(data[_HEADER.size:],
                                              np.zeros(size, dtype=np.int64))
        except EntropyCodingError as exc:
            raise FeatureCodecError(f"feature payload: {exc}") from None
        z = self.points[point].levels[cells].reshape(self.shape)
        return self.stats.restore(z)

    def _coder(self, point: int):
        from dance.entropy import TableCoder
        if point not in self._coders:
            self._coders[point] = TableCoder(self.points[point].tables())
        return self._coders[point]

    # -- files --
    def to_dict(self) -> dict:
        return {"format": "dance-feature-codec", "version": 1, "model": self.model,
                "layer": self.layer, "shape": list(self.shape), "stats": self.stats.to_dict(),
                "points": [{"lambda": p.lam, "levels": p.levels.tolist(),
                            "probs": p.probs.tolist(),
                            "bits_per_element": p.bits_per_element} for p in self.points]}

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "EcqFeatureCodec":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            if d.get("format") != "dance-feature-codec":
                raise KeyError("format")
            points = [OperatingPoint(float(p["lambda"]), np.asarray(p["levels"], float),
                                     np.asarray(p["probs"], float),
                                     float(p.get("bits_per_element", 0.0)))
                      for p in d["points"]]
            for p in points:
                if len(p.levels) != len(p.probs) or len(p.levels) < 2 or \
                        not np.isclose(p.probs.sum(), 1.0, atol=1e-6) or (p.probs <= 0).any():
                    raise ValueError("an operating point's levels and probabilities disagree")
            return cls(str(d["model"]), str(d["layer"]), tuple(int(v) for v in d["shape"]),
                       FeatureStats.from_dict(d["stats"]), points)
        except FileNotFoundError:
            raise FeatureCodecError(f"{path}: no such feature codec file") from None
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise FeatureCodecError(f"{path}: not a feature codec file ({exc})") from None


@dataclass
class UniformZstdCodec:
    """The baseline: standardise and clip as the ECQ codec, quantise uniformly to `bits` bits,
    zstandard (level 19) on the bytes."""
    stats: FeatureStats
    bits: int

    def compress(self, features: np.ndarray) -> bytes:
        import zstandard
        z = self.stats.normalise(np.asarray(features, dtype=np.float64))
        lo, hi = self.stats.clip
        q = np.round((z - lo) / (hi - lo) * (2 ** self.bits - 1)).astype(np.uint8)
        return zstandard.ZstdCompressor(level=19).compress(q.tobytes())

    def decompress(self, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        import zstandard
        size = int(np.prod(shape))
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
        if len(raw) != size:
            raise FeatureCodecError(f"uniform payload holds {len(raw)} elements, not {size}")
        lo, hi = self.stats.clip
        q = np.frombuffer(raw, dtype=np.uint8).reshape(shape).astype(np.float64)
        return self.stats.restore(lo + q / (2 ** self.bits - 1) * (hi - lo))


def fit_ecq_codec(model: str, layer: str, activations: np.ndarray, lambdas: list[float],
                  sample: int = 1_000_000, seed: int = 0, progress=None) -> EcqFeatureCodec:
    """An ECQ codec for N×C×H×W training activations of `layer`, one point per λ (sorted
    from the most bytes, smallest λ, to the fewest; a λ that leaves one level is dropped).
    Designs on at most `sample` values."""
    stats = FeatureStats.fit(activations)
    z = stats.normalise(np.asarray(activations, dtype=np.float64).swapaxes(0, 1)).reshape(-1)
    if z.size > sample:
        z = np.random.default_rng(seed).choice(z, sample, replace=False)
    points = []
    for lam in sorted(lambdas):
        levels, probs = design_ecq(z, lam, stats.clip)
        if progress is not None:
            progress.update()
        if len(levels) < 2:          # everything in one cell: nothing left to send
            continue
        bits = float(-(probs * np.log2(probs)).sum())
        points.append(OperatingPoint(float(lam), levels, probs, bits))
    return EcqFeatureCodec(model, layer, tuple(activations.shape[1:]), stats, points)
