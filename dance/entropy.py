"""Entropy models (training) and their byte coding (stored integer CDF tables, constriction ANS).

Training uses CompressAI's entropy models: `VariableRateBottleneck` (its `EntropyBottleneck`
with a quantisation step, QVRF-style) for factorized priors and `GaussianConditional` for
hyperpriors. For coding, a model's state is frozen into `CdfTables`: integer CDF rows (16-bit
precision, as CompressAI computes them), their lengths and symbol offsets. They are stored in the
checkpoint and are all the coder reads, so a symbol never depends on a float computed at decode
time by the factorized models.

`TableCoder` codes integer symbols, each with the CDF row it uses, with constriction's ANS
(`constriction.stream.stack.AnsCoder`, Rust): memory-safe on any input, so a crafted payload is
one `EntropyCodingError`, never a read past the buffer. Symbols outside a row's support are
clamped to it (the row's last entry, CompressAI's tail bin, stands for the upper end): a
trained codec meets this on a vanishing share of symbols; decoding is exact for the rest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from dance import quiet_compressai

quiet_compressai()
import constriction  # noqa: E402
from compressai.entropy_models import EntropyBottleneck, GaussianConditional  # noqa: E402

__all__ = ["CdfTables", "TableCoder", "VariableRateBottleneck", "GaussianConditional",
           "EntropyCodingError", "gaussian_likelihood", "ans_bytes"]

PRECISION = 16
# bits an ANS string holds beyond its symbols' information content, on average: constriction's
# AnsCoder flushes a 64-bit state; fitted on aria-audio-vr strings (12..700 bytes), where
# `ans_bytes` then gives the exact length for ~95% of them and is a word off for most others
ANS_OVERHEAD_BITS = 21.0


def ans_bytes(bits: float) -> int:
    """Expected length of an ANS string (whole 32-bit words) holding `bits` of information."""
    return 4 * int(np.ceil((bits + ANS_OVERHEAD_BITS) / 32.0))


class EntropyCodingError(ValueError):
    """A payload that does not decode into the expected symbols."""


@dataclass(frozen=True)
class CdfTables:
    """Integer CDF rows: row r covers symbols offset[r] .. offset[r] + cdf_length[r] - 2."""

    quantized_cdf: torch.Tensor   # int32 [R, L]: CDF values, 0 .. 2^16
    cdf_length: torch.Tensor      # int32 [R]: used entries of each row (pmf length + 2)
    offset: torch.Tensor          # int32 [R]: symbol value of entry 0

    def __post_init__(self):
        rows = self.quantized_cdf.shape[0]
        if not (self.quantized_cdf.dtype == self.cdf_length.dtype == self.offset.dtype
                == torch.int32):
            raise ValueError("CDF tables must be int32")
        if self.quantized_cdf.dim() != 2 or self.cdf_length.numel() != rows \
                or self.offset.numel() != rows:
            raise ValueError("CDF tables disagree on the number of rows")
        lengths = self.cdf_length.reshape(-1)
        if rows and (int(lengths.min()) < 3 or int(lengths.max()) > self.quantized_cdf.shape[1]):
            raise ValueError("CDF table lengths out of range")

    @property
    def rows(self) -> int:
        return int(self.offset.numel())

    @classmethod
    def of(cls, model) -> "CdfTables":
        """The tables of an updated CompressAI entropy model (`update()` called)."""
        return cls(model._quantized_cdf.detach().to("cpu", torch.int32).clone(),
                   model._cdf_length.detach().to("cpu", torch.int32).reshape(-1).clone(),
                   model._offset.detach().to("cpu", torch.int32).reshape(-1).clone())

    @classmethod
    def stack(cls, tables: list["CdfTables"]) -> "CdfTables":
        width = max(t.quantized_cdf.shape[1] for t in tables)
        cdfs = [torch.nn.functional.pad(t.quantized_cdf, (0, width - t.quantized_cdf.shape[1]))
                for t in tables]
        return cls(torch.cat(cdfs), torch.cat([t.cdf_length for t in tables]),
                   torch.cat([t.offset for t in tables]))

    def to_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {f"{prefix}quantized_cdf": self.quantized_cdf,
                f"{prefix}cdf_length": self.cdf_length, f"{prefix}offset": self.offset}

    @classmethod
    def from_dict(cls, state: dict, prefix: str = "") -> "CdfTables":
        try:
            return cls(*(state[f"{prefix}{k}"] for k in ("quantized_cdf", "cdf_length", "offset")))
        except KeyError as exc:
            raise ValueError(f"entropy state lacks {exc.args[0]}") from None


class TableCoder:
    """Integer symbols <-> bytes, each symbol coded with its own row of `CdfTables`."""

    def __init__(self, tables: CdfTables):
        self.tables = tables
        self._offsets = tables.offset.numpy().astype(np.int64)
        self._max_values = tables.cdf_length.numpy().astype(np.int64) - 2
        self._cdf = tables.quantized_cdf.numpy()
        self._models: list = [None] * tables.rows
        self._costs: np.ndarray | None = None
        self._run_cache: dict[tuple[bytes, int], tuple] = {}

    def _model(self, row: int):
        model = self._models[row]
        if model is None:
            cdf = self._cdf[row, :self._max_values[row] + 2].astype(np.float64)
            model = constriction.stream.model.Categorical(np.diff(cdf) / 2.0 ** PRECISION,
                                                          perfect=False)
            self._models[row] = model
        return model

    def _groups(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions sorted by row (stable), the distinct rows and how many symbols each has."""
        flat = rows.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= self.tables.rows):
            raise EntropyCodingError("symbol uses a CDF row the tables do not have")
        order = np.argsort(flat, kind="stable")
        distinct, counts = np.unique(flat[order], return_counts=True)
        return order, distinct, counts

    def encode(self, symbols: np.ndarray, rows: np.ndarray) -> bytes:
        """Bytes for `symbols` (integers), symbol i coded with CDF row `rows[i]`.

        The stream holds the symbols grouped by row, rows ascending (a stable sort), one
        constriction call per row: symbols whose rows already ascend go in as they are."""
        symbols = np.asarray(symbols).reshape(-1)
        rows = np.asarray(rows).reshape(-1)
        if rows.size > 1 and not (rows[1:] >= rows[:-1]).all():
            order, distinct, counts = self._groups(rows)
            symbols, rows = symbols[order], rows[order]
        else:
            if rows.size and (rows[0] < 0 or rows[-1] >= self.tables.rows):
                raise EntropyCodingError("symbol uses a CDF row the tables do not have")
            starts = np.concatenate(([0], np.flatnonzero(rows[1:] != rows[:-1]) + 1))
            distinct = rows[starts] if rows.size else rows
            counts = np.diff(np.concatenate((starts, [rows.size]))) if rows.size else rows
        values = symbols.astype(np.int64) - self._offsets[rows]
        values = np.clip(values, 0, self._max_values[rows]).astype(np.int32)
        coder = constriction.stream.stack.AnsCoder()
        ends = np.cumsum(counts)
        for row, end, count in zip(distinct[::-1].tolist(), ends[::-1].tolist(),
                                   counts[::-1].tolist()):
            coder.encode_reverse(values[end - count:end], self._model(row))
        return coder.get_compressed().astype("<u4").tobytes()

    def encode_runs(self, symbols: np.ndarray, rows: np.ndarray) -> bytes:
        """Bytes for a (R, N) array of symbols, run r coded with CDF row `rows[r]`, runs in
        order: for ascending rows, the bytes of `encode` on the flattened symbols (each row
        repeated N times), cheaper: no sorting, no per-symbol row array, and one constriction
        call for consecutive runs whose CDF rows are equal (the same model codes them alike).
        `decode` with the repeated rows reads them back."""
        symbols = np.asarray(symbols)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if symbols.ndim != 2 or symbols.shape[0] != rows.size:
            raise ValueError(f"need one row per run: symbols {symbols.shape}, {rows.size} rows")
        if rows.size and (rows.min() < 0 or rows.max() >= self.tables.rows):
            raise EntropyCodingError("symbol uses a CDF row the tables do not have")
        if rows.size > 1 and not (rows[1:] > rows[:-1]).all():
            return self.encode(symbols.reshape(-1), np.repeat(rows, symbols.shape[1]))
        offsets, top, groups = self._runs(rows, symbols.shape[1])
        values = np.subtract(symbols, offsets, dtype=np.int64)
        np.clip(values, 0, top, out=values)
        flat = values.astype(np.int32).reshape(-1)
        coder = constriction.stream.stack.AnsCoder()
        encode = coder.encode_reverse
        for part, model in groups:
            encode(flat[part], model)
        return coder.get_compressed().astype("<u4").tobytes()

    def _runs(self, rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, list]:
        """For ascending `rows` of runs of `length` symbols: their offsets and top values as
        columns, and the groups of consecutive runs with equal CDF rows as (slice of the
        flattened symbols, model), last group first (the coding order of a stack coder)."""
        key = (rows.tobytes(), length)
        cached = self._run_cache.get(key)
        if cached is None:
            lengths = self._max_values[rows]
            groups, start = [], 0
            for i in range(1, rows.size + 1):
                if i == rows.size or lengths[i] != lengths[start] or not np.array_equal(
                        self._cdf[rows[i], :lengths[i] + 2],
                        self._cdf[rows[start], :lengths[i] + 2]):
                    groups.append((slice(start * length, i * length),
                                   self._model(int(rows[start]))))
                    start = i
            cached = (self._offsets[rows][:, None], lengths[:, None], groups[::-1])
            if len(self._run_cache) < 4096:
                self._run_cache[key] = cached
        return cached

    def costs(self) -> tuple[np.ndarray, np.ndarray]:
        """(bits, starts): bits[starts[r] + v] = information content, in bits, of value v
        (0 .. cdf_length[r] - 2, symbol offset[r] + v) in row r as the coder quantizes it
        (constriction's fast quantization of the row's probabilities to 2^-24 units: its
        floor(cdf·(2^24 − n)/2^16) + index, n values). The ANS string of a symbol sequence is
        within a 32-bit word or two of the sum of its symbols' bits (`ans_bytes`)."""
        if self._costs is None:
            lengths = self._max_values + 1                       # values per row
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
            width = int(lengths.max()) + 1 if lengths.size else 1
            cdf = self._cdf[:, :width].astype(np.float64)
            left = np.floor(cdf * ((2.0 ** 24 - lengths) / 2.0 ** PRECISION)[:, None]) \
                + np.arange(width)
            weights = np.maximum(np.diff(left, axis=1), 1.0)
            valid = np.arange(width - 1)[None, :] < lengths[:, None]   # row-major: as starts
            self._costs, self._cost_starts = 24.0 - np.log2(weights[valid]), starts
        return self._costs, self._cost_starts

    def decode(self, data: bytes, rows: np.ndarray) -> np.ndarray:
        """The symbols coded in `data` (int32, the shape of `rows`)."""
        rows = np.asarray(rows)
        if len(data) % 4:
            raise EntropyCodingError(f"payload of {len(data)} bytes is not whole 32-bit words")
        order, distinct, counts = self._groups(rows)
        try:
            coder = constriction.stream.stack.AnsCoder(
                np.frombuffer(data, dtype="<u4").astype(np.uint32))
        except ValueError as exc:
            raise EntropyCodingError(f"payload is not an ANS stream ({exc})") from None
        values = np.empty(order.size, dtype=np.int64)
        start = 0
        for row, count in zip(distinct.tolist(), counts.tolist()):
            values[start:start + count] = coder.decode(self._model(row), count)
            start += count
        if not coder.is_empty():
            raise EntropyCodingError("payload holds more data than its declared shape")
        out = np.empty(order.size, dtype=np.int32)
        out[order] = values + self._offsets[rows.reshape(-1)[order]]
        return out.reshape(rows.shape)


class VariableRateBottleneck(EntropyBottleneck):
    """CompressAI's factorized `EntropyBottleneck` (same parameters and state names) with a
    quantisation step: symbols round((y - median) / step), likelihood of a bin of width `step`
    (QVRF, Tong et al. 2022; compressai's `EntropyBottleneckVbr` idea). step = 1 is the plain
    bottleneck, so fixed-rate checkpoints load and behave as before."""

    def forward(self, x: torch.Tensor, step: float = 1.0, training: bool | None = None):
        training = self.training if training is None else training
        perm = [1, 0, *range(2, x.dim())]
        values = x.permute(*perm).reshape(x.shape[1], 1, -1)
        medians = self._get_medians()
        if training:
            outputs = values + torch.empty_like(values).uniform_(-0.5, 0.5) * step
        else:
            outputs = torch.round((values - medians) / step) * step + medians
        lower = self._logits_cumulative(outputs - 0.5 * step, stop_gradient=False)
        upper = self._logits_cumulative(outputs + 0.5 * step, stop_gradient=False)
        sign = -torch.sign(lower + upper).detach()
        likelihood = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        if self.use_likelihood_bound:
            likelihood = self.likelihood_lower_bound(likelihood)
        shape = [x.shape[1], x.shape[0], *x.shape[2:]]
        outputs = outputs.reshape(shape).permute(*perm).contiguous()
        likelihood = likelihood.reshape(shape).permute(*perm).contiguous()
        return outputs, likelihood

    @torch.no_grad()
    def tables_at(self, step: float) -> CdfTables:
        """Integer CDFs of the symbols at quantisation step `step` (one row per channel)."""
        medians = self.quantiles[:, 0, 1]
        minima = torch.clamp(torch.ceil((medians - self.quantiles[:, 0, 0]) / step).int(), min=0)
        maxima = torch.clamp(torch.ceil((self.quantiles[:, 0, 2] - medians) / step).int(), min=0)
        pmf_length = maxima + minima + 1
        max_length = int(pmf_length.max())
        samples = torch.arange(max_length, device=medians.device) * step
        samples = samples[None, None, :] + (medians - minima * step)[:, None, None]
        lower = self._logits_cumulative(samples - 0.5 * step, stop_gradient=True)
        upper = self._logits_cumulative(samples + 0.5 * step, stop_gradient=True)
        pmf = (torch.sigmoid(upper) - torch.sigmoid(lower))[:, 0, :]
        tail_mass = torch.sigmoid(lower[:, 0, :1]) + torch.sigmoid(-upper[:, 0, -1:])
        cdf = self._pmf_to_cdf(pmf, tail_mass, pmf_length, max_length)
        return CdfTables(cdf.to(torch.int32).cpu(), (pmf_length + 2).to(torch.int32).cpu(),
                         (-minima).to(torch.int32).cpu())

    def medians(self) -> torch.Tensor:
        return self.quantiles[:, 0, 1].detach().to("cpu", torch.float32).clone()


def gaussian_likelihood(gc: GaussianConditional, y: torch.Tensor, scales: torch.Tensor,
                        step: float, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_hat, likelihood) of a zero-mean Gaussian conditional at quantisation step `step`:
    the symbol is round(y / step), its scale scales / step (QVRF on a hyperprior)."""
    scaled = y / step
    if training:
        symbols = scaled + torch.empty_like(scaled).uniform_(-0.5, 0.5)
    else:
        symbols = torch.round(scaled)
    likelihood = gc._likelihood(symbols, scales / step)
    if gc.use_likelihood_bound:
        likelihood = gc.likelihood_lower_bound(likelihood)
    return symbols * step, likelihood
