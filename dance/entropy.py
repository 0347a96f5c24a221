"""Factorized-prior entropy model and its byte coding (rANS with stored integer CDF tables).

Training uses CompressAI's `EntropyBottleneck` (any spatial rank). For coding, the bottleneck's
state is frozen into `EntropyTables`: integer CDFs, their lengths and offsets, and the float32
medians used to centre symbols. These tables are stored in the checkpoint and are the only thing
the coder reads, so decoding a symbol never depends on a float computed at decode time: the same
bytes give the same latents on every machine (unlike CompressAI's hyperprior models, issues
#279/#309 there, which recompute scales on the decoder side).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from dance import quiet_compressai

quiet_compressai()
from compressai.ans import RansDecoder, RansEncoder  # noqa: E402
from compressai.entropy_models import EntropyBottleneck  # noqa: E402

__all__ = ["EntropyBottleneck", "EntropyTables", "FactorizedCoder", "EntropyCodingError"]

TABLE_KEYS = ("quantized_cdf", "cdf_length", "offset", "medians")


class EntropyCodingError(ValueError):
    """A payload that does not decode into the expected number of symbols."""


@dataclass(frozen=True)
class EntropyTables:
    """Everything the rANS coder needs, as stored values (int32 tables, float32 medians)."""

    quantized_cdf: torch.Tensor   # int32 [C, L]: per-channel CDF, 16-bit precision
    cdf_length: torch.Tensor      # int32 [C]: used entries of each row
    offset: torch.Tensor          # int32 [C]: symbol value of CDF entry 0
    medians: torch.Tensor         # float32 [C]: symbols are round(y - median)

    @classmethod
    def from_bottleneck(cls, bottleneck: EntropyBottleneck) -> "EntropyTables":
        """Read the tables of an updated bottleneck (call `update(force=True)` first)."""
        if bottleneck._offset.numel() == 0:
            raise RuntimeError("entropy bottleneck has no CDF tables yet: call update(force=True)")
        return cls(bottleneck._quantized_cdf.detach().to("cpu", torch.int32).clone(),
                   bottleneck._cdf_length.detach().to("cpu", torch.int32).clone(),
                   bottleneck._offset.detach().to("cpu", torch.int32).clone(),
                   bottleneck.quantiles[:, 0, 1].detach().to("cpu", torch.float32).clone())

    @classmethod
    def from_dict(cls, tables: dict) -> "EntropyTables":
        missing = [k for k in TABLE_KEYS if k not in tables]
        if missing:
            raise ValueError(f"entropy tables lack {missing}")
        out = cls(*(tables[k] for k in TABLE_KEYS))
        channels = out.medians.numel()
        if not (out.quantized_cdf.dtype == out.cdf_length.dtype == out.offset.dtype == torch.int32):
            raise ValueError("entropy tables must be int32")
        if out.quantized_cdf.shape[0] != channels or out.cdf_length.numel() != channels \
                or out.offset.numel() != channels:
            raise ValueError("entropy tables disagree on the number of channels")
        return out

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in TABLE_KEYS}

    @property
    def channels(self) -> int:
        return int(self.medians.numel())


class FactorizedCoder:
    """Entropy-codes one latent tensor (C, *spatial) into bytes and back, channel by channel."""

    def __init__(self, tables: EntropyTables):
        self.tables = tables
        self._cdf = tables.quantized_cdf.tolist()
        self._lengths = tables.cdf_length.reshape(-1).tolist()
        self._offsets = tables.offset.reshape(-1).tolist()
        self._medians = tables.medians.reshape(-1)
        self._medians_np = self._medians.numpy()[:, None]
        self._offsets_np = tables.offset.numpy().reshape(-1, 1)
        self._max_values = tables.cdf_length.numpy().reshape(-1, 1) - 2
        self._cdf_np = tables.quantized_cdf.numpy().astype(np.int64)
        # |symbol| below this is inside every channel's table: offset <= symbol < offset + max
        self._in_every_table = int(min(-self._offsets_np.max(),
                                       (self._offsets_np + self._max_values).min()))

    def _medians_for(self, dims: int, device: torch.device) -> torch.Tensor:
        return self._medians.to(device).reshape(-1, *([1] * dims))

    def quantize(self, y: torch.Tensor) -> torch.Tensor:
        """Integer symbols round(y - median) of one latent (C, *spatial), as int32."""
        return torch.round(y - self._medians_for(y.dim() - 1, y.device)).to(torch.int32)

    def dequantize(self, symbols: torch.Tensor) -> torch.Tensor:
        return symbols.to(torch.float32) + self._medians_for(symbols.dim() - 1, symbols.device)

    def compress(self, y: torch.Tensor) -> bytes:
        """Bytes for one latent y of shape (C, *spatial) (float; quantized here)."""
        if y.dim() < 2 or y.shape[0] != self.tables.channels:
            raise ValueError(f"latent must be (C={self.tables.channels}, *spatial), got "
                             f"{tuple(y.shape)}")
        # numpy, not torch: same round-half-to-even, and ndarray.tolist() (the int list the
        # rANS binding wants) costs half of Tensor.tolist()
        latent = y.detach().to("cpu", torch.float32).numpy().reshape(y.shape[0], -1)
        symbols = np.rint(latent - self._medians_np).astype(np.int32)
        self._check_room(symbols)
        indexes = _channel_indexes(tuple(y.shape))
        return RansEncoder().encode_with_indexes(symbols.reshape(-1).tolist(), indexes,
                                                 self._cdf, self._lengths, self._offsets)

    def _check_room(self, symbols: np.ndarray) -> None:
        """Refuse latents whose code would overrun CompressAI's rANS output buffer.

        Its encoder writes into 32 bits per symbol without checking the bound. An in-table
        symbol costs at most 16 bits and an escaped (out-of-table) one at most 16 + 40, so the
        exact cost is only computed when many symbols escape (far-off, e.g. untrained, latents).
        """
        room = 32 * symbols.size - 96  # 64 bits of final state, 32 of renormalisation slack
        if 16 * symbols.size <= room and np.abs(symbols).max() < self._in_every_table:
            return  # no symbol escapes (a trained codec's usual case): one reduction, no masks
        values = symbols - self._offsets_np
        escaped = (values < 0) | (values >= self._max_values)
        if 16 * symbols.size + 40 * int(np.count_nonzero(escaped)) <= room:
            return
        if self._code_bits(values, escaped) > room:
            raise EntropyCodingError(
                f"latent too far outside the entropy model's range ({np.count_nonzero(escaped)}"
                f" of {symbols.size} symbols escape the CDF tables): cannot code it safely")

    def _code_bits(self, values: np.ndarray, escaped: np.ndarray) -> float:
        """Bits the rANS coder spends on `values` (symbol - offset, C × positions)."""
        cells = np.where(escaped, self._max_values, values)
        freq = (np.take_along_axis(self._cdf_np, cells + 1, axis=1)
                - np.take_along_axis(self._cdf_np, cells, axis=1))
        bits = float(np.sum(16.0 - np.log2(freq)))
        raw = np.where(values < 0, -2 * values - 1, 2 * (values - self._max_values))[escaped]
        nibbles = (np.frexp(raw.astype(np.float64))[1] + 3) // 4  # ceil(bit length / 4)
        return bits + float(np.sum(4 * (nibbles + nibbles // 15 + 1)))

    def decompress(self, payload: bytes, latent_shape: tuple[int, ...]) -> torch.Tensor:
        """The dequantized latent (float32, shape `latent_shape`) encoded in `payload`."""
        latent_shape = tuple(int(s) for s in latent_shape)
        if len(latent_shape) < 2 or latent_shape[0] != self.tables.channels:
            raise EntropyCodingError(f"latent shape {latent_shape} does not fit a coder with "
                                     f"{self.tables.channels} channels")
        indexes = _channel_indexes(latent_shape)
        symbols = RansDecoder().decode_with_indexes(bytes(payload), indexes, self._cdf,
                                                    self._lengths, self._offsets)
        if len(symbols) != len(indexes):
            raise EntropyCodingError("payload decoded into the wrong number of symbols")
        return self.dequantize(torch.tensor(symbols, dtype=torch.int32).reshape(latent_shape))


@lru_cache(maxsize=16)
def _channel_indexes(latent_shape: tuple[int, ...]) -> list[int]:
    """CDF row of each latent element, in C-major (row-major) order."""
    per_channel = int(np.prod(latent_shape[1:]))
    return np.repeat(np.arange(latent_shape[0], dtype=np.int32), per_channel).tolist()
