"""Entropy priors with operating points, the parts families compose: `FactorizedPrior` (a latent
coded alone, per channel) and `GaussianPrior` (a latent coded given scales from a hyperprior).

Variable rate is a quantisation step per level (QVRF, Tong et al. 2022): level k of K codes
round(y / step_k) with steps geometric from `step_max` (level 0, fewest bytes) to `step_min`;
training draws continuous levels in between, so one network serves every step. A family may
give its own ladder instead (`steps=`, largest first: the slimmable family's step per bit
depth). The steps are stored float32 values, never recomputed by a decoder.
"""
from __future__ import annotations

import numpy as np
import torch

from .entropy import (CdfTables, EntropyCodingError, GaussianConditional, TableCoder,
                      VariableRateBottleneck, ans_bytes, gaussian_likelihood)
from .legacy_rans import RansPayloadError, decode_with_indexes
from .models import geometric


class _Levels:
    """The step ladder and the stored state shared by both priors: CDF tables, one float32
    tensor named `constant` (`stored_constant`), and the steps."""

    constant: str
    stored_constant: torch.Tensor
    coder: TableCoder | None
    tables: CdfTables
    levels: int
    step_min: float
    step_max: float
    steps: torch.Tensor
    explicit_steps: bool

    def _init_levels(self, levels: int, step_min: float, step_max: float,
                     steps: list[float] | None = None) -> None:
        self.explicit_steps = steps is not None
        if steps is not None:
            values = [float(s) for s in steps]
            if not values or any(not b < a for a, b in zip(values, values[1:])) or values[-1] <= 0:
                raise ValueError(f"steps must be positive and decreasing (level 0 = the largest), "
                                 f"got {values}")
            self.levels, self.step_min, self.step_max = len(values), values[-1], values[0]
            self.steps = torch.tensor(values, dtype=torch.float32)
            return
        self.levels, self.step_min, self.step_max = int(levels), float(step_min), float(step_max)
        self.steps = torch.tensor([self.step(k) for k in range(self.levels)], dtype=torch.float32)

    def step(self, level: float | None) -> float:
        """Quantisation step at a (continuous) level; None: the top level. Explicit steps are
        interpolated geometrically between the two levels around a continuous one."""
        level = self.levels - 1 if level is None else level
        if self.explicit_steps:
            level = min(max(float(level), 0.0), self.levels - 1.0)
            low = int(level)
            high = min(low + 1, self.levels - 1)
            a, b = float(self.steps[low]), float(self.steps[high])
            return a * (b / a) ** (level - low)
        return geometric(level, self.levels, self.step_max, self.step_min)

    def _stored_step(self, level: int) -> float:
        return float(self.steps[level])

    def state(self, prefix: str = "") -> dict[str, torch.Tensor]:
        if self.coder is None:
            self.update()
        steps = {f"{prefix}steps": self.steps.clone()} \
            if self.levels > 1 or self.explicit_steps else {}
        return {**self.tables.to_dict(prefix),
                f"{prefix}{self.constant}": self.stored_constant.clone(), **steps}

    def load_state(self, state: dict, prefix: str = "") -> None:
        value = state.get(f"{prefix}{self.constant}")
        if value is None or value.dtype != torch.float32:
            raise ValueError(f"entropy state lacks float32 {prefix}{self.constant}")
        steps = state.get(f"{prefix}steps", torch.ones(1))
        if steps.dtype != torch.float32 or steps.numel() != self.levels:
            raise ValueError(f"entropy state {prefix}steps must hold {self.levels} float32 steps")
        self.steps = steps.reshape(-1).clone()
        self._install(CdfTables.from_dict(state, prefix), value)

    def _install(self, tables: CdfTables, constant: torch.Tensor) -> None:
        raise NotImplementedError


class FactorizedPrior(_Levels, VariableRateBottleneck):
    """A factorized density per channel (CompressAI's bottleneck), one CDF table per channel and
    level. Entropy state: quantized_cdf [levels·C, L], cdf_length, offset, medians [C] and, for
    levels > 1 (or explicit `steps`), steps — with one level exactly the state of version-1
    checkpoints."""

    constant = "medians"

    def __init__(self, channels: int, levels: int = 1, step_min: float = 1.0,
                 step_max: float = 1.0, steps: list[float] | None = None):
        VariableRateBottleneck.__init__(self, channels)
        self._init_levels(levels, step_min, step_max, steps)
        self.coder = None

    def forward(self, y: torch.Tensor, level: float | None = None, training: bool | None = None):
        with torch.autocast(y.device.type, enabled=False):  # likelihoods in float32 under AMP
            return VariableRateBottleneck.forward(self, y.float(), self.step(level), training)

    def update(self, force: bool = True) -> bool:
        tables = CdfTables.stack([self.tables_at(float(s)) for s in self.steps])
        self._install(tables, self.medians())
        return True

    def _install(self, tables: CdfTables, medians: torch.Tensor) -> None:
        if tables.rows != self.levels * self.channels or medians.numel() != self.channels:
            raise ValueError(f"entropy state holds {tables.rows} CDF rows and {medians.numel()} "
                             f"medians; the model needs {self.levels}×{self.channels} and "
                             f"{self.channels}")
        self.tables, self.coder = tables, TableCoder(tables)
        self.stored_constant = medians.to(torch.float32).reshape(-1).clone()
        self._cost_tables: dict[int, tuple] = {}   # estimate_bytes' per-level tables

    @property
    def stored_medians(self) -> torch.Tensor:
        return self.stored_constant

    # -- coding one latent (C, *spatial) ------------------------------------------------------
    def _rows(self, shape: tuple[int, ...], level: int) -> np.ndarray:
        per_channel = int(np.prod(shape[1:]))
        return np.repeat(np.arange(shape[0], dtype=np.int64) + level * shape[0], per_channel)

    def symbols(self, y: torch.Tensor, level: int) -> tuple[np.ndarray, np.ndarray]:
        """(symbols, CDF rows) of latent y at `level`: round((y - median) / step)."""
        return self._symbols(y, level), self._rows(tuple(y.shape), level)

    def code(self, y: torch.Tensor, level: int) -> bytes:
        if y.dim() < 2 or y.shape[0] != self.channels:
            raise ValueError(f"latent must be (C={self.channels}, *spatial), got {tuple(y.shape)}")
        # channel c is one run of row level·C + c: the bytes of coder.encode(*self.symbols())
        return self.coder.encode_runs(self._symbols(y, level),
                                      np.arange(self.channels) + level * self.channels)

    def _symbols(self, y: torch.Tensor, level: int) -> np.ndarray:
        latent = y.detach().to("cpu", torch.float32).numpy().reshape(y.shape[0], -1)
        medians = self.stored_medians.numpy()[:, None]
        step = self.steps.numpy()[level]              # float32, as _stored_step's
        return np.rint((latent - medians) / step).astype(np.int32)

    def centered(self, y: torch.Tensor) -> np.ndarray:
        """(C, N) float32 latent minus the medians: the level-independent part of the symbols,
        for `estimate_bytes` at several levels."""
        if y.dim() < 2 or y.shape[0] != self.channels:
            raise ValueError(f"latent must be (C={self.channels}, *spatial), got {tuple(y.shape)}")
        latent = y.detach().to("cpu", torch.float32).numpy().reshape(y.shape[0], -1)
        return latent - self.stored_medians.numpy()[:, None]

    def estimate_bytes(self, y: torch.Tensor | None, level: int,
                       centered: np.ndarray | None = None) -> int:
        """Length of `code(y, level)` without coding: the symbols' information content from
        the stored CDF tables (exactly as the coder quantizes them), rounded up to the ANS
        string's 32-bit words (`ans_bytes`) — the exact length for most latents, else a word
        off. `centered`: `centered(y)`, when it is at hand (y is then not read)."""
        if centered is None:
            centered = self.centered(y)
        bits, base, low, high, step = self._cost_table(level)
        symbols = centered / step                            # float32, as `_symbols`
        np.rint(symbols, out=symbols)
        np.minimum(symbols, high, out=symbols)               # the level's widest support
        np.maximum(symbols, low, out=symbols)
        symbols += base                                      # (C, 1): row c's entry of 0
        return ans_bytes(float(bits.take(symbols.astype(np.intp)).sum(dtype=np.float64)))

    def _cost_table(self, level: int) -> tuple[np.ndarray, np.ndarray, int, int, np.float32]:
        """(bits, base, low, high, step) of a level: the information content of symbol s in
        channel c is bits[base[c] + clip(s, low, high)], low..high the widest support of the
        level's rows; a symbol outside its own row's support costs what the coder codes it as
        (the row's end value)."""
        cache = self._cost_tables
        if level not in cache:
            costs, starts = self.coder.costs()
            rows = np.arange(self.channels) + level * self.channels
            offsets = self.tables.offset.numpy()[rows].astype(np.int64)
            top = self.tables.cdf_length.numpy()[rows].astype(np.int64) - 2
            low, high = int(offsets.min()), int((offsets + top).max())
            values = np.clip(np.arange(low, high + 1)[None, :] - offsets[:, None], 0,
                             top[:, None])
            width = high - low + 1
            bits = costs[starts[rows][:, None] + values].astype(np.float32).reshape(-1)
            base = (np.arange(self.channels) * width - low).astype(np.float32)[:, None]
            cache[level] = (bits, base, low, high, self.steps.numpy()[level])
        return cache[level]

    def decode(self, data: bytes, shape: tuple[int, ...], level: int) -> torch.Tensor:
        symbols = self.coder.decode(data, self._rows(shape, level))
        return self.dequantize(torch.from_numpy(symbols).reshape(shape), level)

    def decode_v1(self, payload: bytes, shape: tuple[int, ...]) -> torch.Tensor:
        """A version-1 payload (CompressAI rANS, one level): bounds-checked, same symbols."""
        t = self.tables
        try:
            symbols = decode_with_indexes(payload, self._rows(shape, 0).tolist(),
                                          t.quantized_cdf.tolist(), t.cdf_length.tolist(),
                                          t.offset.tolist())
        except RansPayloadError as exc:
            raise EntropyCodingError(str(exc)) from None
        return self.dequantize(torch.tensor(symbols, dtype=torch.int32).reshape(shape), 0)

    def dequantize(self, symbols: torch.Tensor, level: int) -> torch.Tensor:
        """Latent values of integer symbols at `level`: symbols · step + median (what every
        coder of these symbols decodes to)."""
        medians = self.stored_medians.reshape(-1, *([1] * (symbols.dim() - 1)))
        return symbols.to(torch.float32) * self.steps[level] + medians


class GaussianPrior(_Levels, GaussianConditional):
    """Zero-mean Gaussian conditional (Ballé 2018) with a scale table; symbols round(y / step)
    use the table row of scale / step. Entropy state: the CDF rows, scale_table, steps.
    The scales come from the decoder's hyper-synthesis network in float, so as in CompressAI a
    different CPU may pick another row for a scale on a table boundary (docs/bitstream.md)."""

    constant = "scale_table"

    def __init__(self, levels: int = 1, step_min: float = 1.0, step_max: float = 1.0):
        from compressai.models.google import get_scale_table
        GaussianConditional.__init__(self, None)
        self._init_levels(levels, step_min, step_max)
        self.initial_scales = get_scale_table().to(torch.float32)
        self.coder = None

    def forward(self, y: torch.Tensor, scales: torch.Tensor, level: float | None = None,
                training: bool | None = None):
        training = self.training if training is None else training
        with torch.autocast(y.device.type, enabled=False):  # likelihoods in float32 under AMP
            return gaussian_likelihood(self, y.float(), scales.float(), self.step(level), training)

    def update(self, force: bool = True) -> bool:
        self.scale_table = self._prepare_scale_table(self.initial_scales)
        GaussianConditional.update(self)   # CompressAI's CDFs of the scale table
        self._install(CdfTables.of(self), self.initial_scales)
        return True

    def _install(self, tables: CdfTables, scale_table: torch.Tensor) -> None:
        if tables.rows != scale_table.numel():
            raise ValueError("entropy state: one CDF row per scale_table entry needed")
        self.tables, self.coder = tables, TableCoder(tables)
        self.stored_constant = scale_table.to(torch.float32).reshape(-1).clone()
        self.stored_scales = self.stored_constant.numpy()

    def _rows(self, scales: torch.Tensor, level: int) -> np.ndarray:
        s = scales.detach().to("cpu", torch.float32).numpy().reshape(-1)
        s = np.maximum(s / np.float32(self._stored_step(level)), self.stored_scales[0])
        return np.searchsorted(self.stored_scales[:-1], s, side="left").astype(np.int64)

    def code(self, y: torch.Tensor, scales: torch.Tensor, level: int) -> bytes:
        step = np.float32(self._stored_step(level))
        symbols = np.rint(y.detach().to("cpu", torch.float32).numpy().reshape(-1) / step)
        return self.coder.encode(symbols.astype(np.int32), self._rows(scales, level))

    def decode(self, data: bytes, scales: torch.Tensor, level: int) -> torch.Tensor:
        symbols = self.coder.decode(data, self._rows(scales, level))
        return torch.from_numpy(symbols).reshape(scales.shape).to(torch.float32) * self.steps[level]
