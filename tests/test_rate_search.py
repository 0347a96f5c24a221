"""The fast paths of target-rate encoding: size estimates instead of trial codings, one
constriction call per run of equal CDF rows (bit-identical to the per-row coder), the secant
level search, the chunked DC notch and the vectorised companding, and the 2-D ONNX lift."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dance.codec import load_codec, pad_to_multiple
from dance.entropy import TableCoder, ans_bytes
from dance.export import lift_to_2d
from dance.models import CodecModel, build_model
from dance.preprocess import (AudioPreprocessor, NotchFilter, StreamNotch, compand, expand,
                              full_scale, notch_sos)
from dance.targets import (ESTIMATE_SLACK, Target, TargetError, _highest_within, bisect_highest,
                           choose_level)
from dance.zoo import CheckpointError

from .dance_testing import TINY_AUDIO, sample_audio, tiny_checkpoint

RATE = 48000


@pytest.fixture(scope="module")
def trained():
    """The trained variable-rate audio codec and the latents of three 4096-sample blocks."""
    try:
        codec = load_codec("aria-audio-vr")
    except CheckpointError:
        pytest.skip("aria-audio-vr checkpoint not installed")
    stream = codec.preprocessor.stream()
    audio = sample_audio(3 * 4096, seed=7)
    outputs = []
    with torch.inference_mode():
        for i in range(0, len(audio), 4096):
            x = pad_to_multiple(stream.forward(audio[i:i + 4096]), codec.stride)
            outputs.append((codec.encoder(x).float(),))
    return codec, outputs


# -- entropy coding ------------------------------------------------------------------------------
def test_run_coder_is_bit_identical_to_the_per_symbol_coder(trained, tmp_path):
    codec, outputs = trained
    tiny = load_codec(tiny_checkpoint(tmp_path / "a.pt", {**TINY_AUDIO, "rate": {
        "levels": 4, "step_min": 0.5, "step_max": 2.0}}))
    rng = np.random.default_rng(0)
    cases = [(codec, out[0][0]) for out in outputs]
    cases.append((codec, torch.from_numpy(rng.standard_t(2, (128, 35)).astype(np.float32) * 20)))
    cases.append((tiny, torch.from_numpy(rng.normal(0, 3, (16, 9)).astype(np.float32))))
    for c, y in cases:
        prior = c.model.entropy_bottleneck
        for level in sorted({0, 1, c.levels // 2, c.levels - 1}):
            data = prior.code(y, level)
            assert data == prior.coder.encode(*prior.symbols(y, level))
            symbols = prior.decode(data, tuple(y.shape), level)
            expected = torch.from_numpy(prior.symbols(y, level)[0].reshape(y.shape))
            top = prior.tables.cdf_length.numpy()[level * y.shape[0]:][:y.shape[0]] - 2
            offsets = prior.tables.offset.numpy()[level * y.shape[0]:][:y.shape[0]]
            clipped = torch.from_numpy(np.clip(expected.numpy(), offsets[:, None],
                                               (offsets + top)[:, None]))
            assert torch.equal(prior.dequantize(clipped, level), symbols)


def test_unsorted_rows_code_as_their_stable_sort():
    rng = np.random.default_rng(1)
    coder = TableCoder(load_tables(rng))
    rows = rng.integers(0, coder.tables.rows, 500)
    symbols = rng.integers(-6, 6, 500).astype(np.int32)
    order = np.argsort(rows, kind="stable")
    data = coder.encode(symbols, rows)
    assert data == coder.encode(symbols[order], rows[order])
    assert np.array_equal(coder.decode(data, rows), np.clip(
        symbols, coder.tables.offset.numpy()[rows],
        coder.tables.offset.numpy()[rows] + coder.tables.cdf_length.numpy()[rows] - 2))


def load_tables(rng):
    from dance.entropy import CdfTables
    rows, width = 12, 10
    lengths = rng.integers(3, width + 1, rows).astype(np.int32)
    cdf = np.zeros((rows, width), np.int32)
    for r, n in enumerate(lengths):
        pmf = rng.integers(1, 1000, n - 1)
        cdf[r, 1:n] = np.cumsum(np.floor(pmf / pmf.sum() * (65536 - n)) + 1).astype(np.int32)
        cdf[r, n - 1] = 65536
    cdf[0, :4] = cdf[1, :4] = [0, 20000, 50000, 65536]      # equal rows side by side
    lengths[:2] = 4
    return CdfTables(torch.from_numpy(cdf), torch.from_numpy(lengths),
                     torch.from_numpy(-(lengths // 2).astype(np.int32)))


def test_size_estimate_is_within_two_percent_and_8_bytes(trained):
    codec, outputs = trained
    model = codec.model
    for out in outputs:
        for level in range(0, codec.levels, 7):
            real = len(model.code(out, level)[0][0])
            (estimate,) = model.estimate_bytes(out, level)
            assert abs(estimate - real) <= 0.02 * real + 8, (level, estimate, real)
    assert ans_bytes(0) == 4 and ans_bytes(100) == 4 * math.ceil(121 / 32)


def test_the_default_estimate_is_the_coded_size(tmp_path):
    from .test_codec_families import TINY_HYPER
    model = build_model(TINY_HYPER).eval()
    model.update()
    with torch.inference_mode():
        outputs = model.export_encoder()(torch.rand(1, 3, model.stride, 2 * model.stride))
    assert type(model).estimate_bytes is CodecModel.estimate_bytes
    for level in (0, model.levels - 1):
        assert model.estimate_bytes(outputs, level) == [len(s) for s in
                                                        model.code(outputs, level)[0]]


# -- the level search ----------------------------------------------------------------------------
def old_highest_within(budget, levels, size, hint):
    """The search before the secant steps (galloping from the hint, then bisection)."""
    top = levels - 1
    if hint is None:
        if size(0) > budget:
            return None
        low, high = 0, top
    else:
        start, jump = min(max(int(hint), 0), top), 1
        if size(start) <= budget:
            low = start
            while low < top:
                probe = min(low + jump, top)
                if size(probe) > budget:
                    break
                low, jump = probe, jump * 2
            high = top if low == top else probe - 1
        else:
            high, low = start - 1, None
            while high >= 0:
                probe = max(high - jump + 1, 0)
                if size(probe) <= budget:
                    low = probe
                    break
                if probe == 0:
                    return None
                high, jump = probe - 1, jump * 2
            if low is None:
                return None
    return bisect_highest(budget, low, high, size)


def ladders(rng, count):
    for i in range(count):
        levels = int(rng.integers(1, 70))
        kind = i % 3
        if kind == 0:
            sizes = np.sort(rng.integers(10, 500, levels))
        elif kind == 1:
            sizes = np.round(20 * np.exp(np.arange(levels) * rng.uniform(0.01, 0.3))).astype(int)
        else:
            sizes = 4 * (np.cumsum(rng.integers(0, 3, levels)) + 3)   # plateaus: word steps
        yield [int(s) for s in sizes]


def test_secant_search_finds_what_bisection_found_with_fewer_sizes():
    rng = np.random.default_rng(0)
    probes = {"old": 0, "new": 0}
    for sizes in ladders(rng, 6000):
        budget = float(rng.integers(0, max(sizes) + 20))
        hint = None if rng.random() < 0.1 else int(rng.integers(-3, len(sizes) + 3))
        calls = {"old": 0, "new": 0}

        def counted(which):
            def size(k):
                calls[which] += 1
                return sizes[k]
            return size
        assert _highest_within(budget, len(sizes), counted("new"), hint) == \
            old_highest_within(budget, len(sizes), counted("old"), hint)
        for k in probes:
            probes[k] += calls[k]
    assert probes["new"] < 0.9 * probes["old"]


def test_choose_level_picks_the_same_levels_with_exact_estimates():
    rng = np.random.default_rng(1)
    for sizes in ladders(rng, 3000):
        levels, raw = len(sizes), 100_000
        hint = None if rng.random() < 0.2 else int(rng.integers(0, levels))
        for target in (Target(ratio=raw / rng.uniform(5, max(sizes) + 30)),
                       Target(bytes=int(rng.integers(sizes[0], max(sizes) + 30))),
                       Target(kbps=float(rng.uniform(0.1, 40))), Target(level=levels - 1)):
            carry = float(rng.uniform(-50, 50))
            size = sizes.__getitem__
            plain = choose_level(target, levels, size, raw, 0.1, carry, hint)
            assert choose_level(target, levels, size, raw, 0.1, carry, hint, size) == plain


def test_estimated_bytes_targets_never_exceed_the_budget():
    rng = np.random.default_rng(2)
    for sizes in ladders(rng, 3000):
        levels = len(sizes)
        error = rng.integers(-12, 13, levels)        # estimates off by up to 12 bytes

        def estimate(k):
            return sizes[k] + int(error[k])

        coded: set[int] = set()

        def size(k):
            coded.add(k)
            return sizes[k]
        budget = int(rng.integers(sizes[0], max(sizes) + 30))
        hint = int(rng.integers(0, levels))
        level = choose_level(Target(bytes=budget), levels, size, 1, None, 0.0, hint, estimate)
        assert sizes[level] <= budget
        best = max(k for k in range(levels) if sizes[k] <= budget)
        slack = [ESTIMATE_SLACK[0] + ESTIMATE_SLACK[1] * estimate(k) for k in range(levels)]
        if all(e <= s for e, s in zip(error, slack)):  # no estimate over by more than the
            assert level == best                       # slack: the highest level that fits
    with pytest.raises(TargetError, match="smallest container"):
        choose_level(Target(bytes=9), 3, [10, 20, 30].__getitem__, 1, None, 0.0, 1,
                     [5, 20, 30].__getitem__)


def test_ratio_targets_code_one_level_with_estimates(trained):
    codec, outputs = trained
    model = codec.model
    for out in outputs:
        coded: list[int] = []

        def size(k, out=out):
            coded.append(k)
            return len(model.code(out, k)[0][0])
        for ratio in (300, 600, 1200):
            coded.clear()
            choose_level(Target(ratio=ratio), codec.levels, size, 4096 * 28, 4096 / RATE, 0.0,
                         30, lambda k, out=out: model.estimate_bytes(out, k)[0])
            assert coded == []


# -- preprocessing -------------------------------------------------------------------------------
@pytest.mark.parametrize("mains", [0.0, 50.0])
def test_stream_notch_equals_whole_signal_for_any_cuts(mains):
    sos = notch_sos(RATE, 10.0, mains_hz=mains)
    samples = sample_audio(9000, seed=3)
    rng = np.random.default_rng(4)

    def run(cuts):
        notch, parts = StreamNotch(sos), []
        for a, b in zip(cuts[:-1], cuts[1:]):
            grid, head = notch(samples[a:b])
            flat = grid.transpose(1, 0, 2).reshape(-1, 7)
            parts.append(flat[head:head + b - a].copy())
        return np.concatenate(parts)
    whole = run([0, len(samples)])
    reference = NotchFilter(sos)(full_scale(samples))
    assert np.abs(whole - reference).max() <= 1e-12 * np.abs(reference).max()
    for _ in range(8):
        cuts = np.sort(rng.choice(np.arange(1, len(samples)), int(rng.integers(1, 50)), False))
        assert np.array_equal(run([0, *cuts.tolist(), len(samples)]), whole)


def test_compand_is_log1p_to_a_few_float32_ulps():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, 200_000) * np.exp(rng.uniform(-14, 1, 200_000))
    for mu, gain in ((255.0, 32.0), (65535.0, 1.0)):
        y = compand(x, mu, gain)
        clipped = np.clip(x.astype(np.float32) * np.float32(gain), -1, 1).astype(np.float64)
        exact = np.sign(clipped) * np.log1p(mu * np.abs(clipped)) / math.log1p(mu)
        ulps = np.abs(y - exact) / np.spacing(np.abs(exact).astype(np.float32))
        assert y.dtype == np.float32 and ulps.max() <= 5 and np.abs(y).max() <= 1
        inside = np.abs(clipped) < 1                  # expand inverts it to float32 precision
        linear = clipped[inside] / gain
        assert np.all(np.abs(expand(y, mu, gain)[inside] - linear) <= 2e-6 * np.abs(linear))


def test_audio_stream_gives_the_reference_chain_to_float32_rounding():
    pre = AudioPreprocessor(7, scale=2.0 ** 26, mu=255.0)
    samples = sample_audio(8192, seed=6)
    reference = compand(NotchFilter(pre.sos)(full_scale(samples)), pre.mu, pre.gain).T
    got = pre.forward(samples)
    assert got.shape == (1, 7, 8192) and got.is_contiguous() and got.dtype == torch.float32
    assert np.abs(got[0].numpy() - reference).max() <= 1e-6


# -- the encoder network in ONNX Runtime ---------------------------------------------------------
def test_1d_encoders_lift_to_2d_convolutions(trained):
    codec, _ = trained
    encoder = codec.model.export_encoder()
    example = torch.zeros(1, 7, 240)
    lifted = lift_to_2d(encoder, example)
    assert lifted is not None
    x = torch.randn(1, 7, 4200)
    with torch.inference_mode():
        assert torch.allclose(lifted(x), encoder(x), atol=1e-5)
    assert lift_to_2d(torch.nn.Sequential(torch.nn.Conv1d(7, 4, 3), torch.nn.ReLU()),
                      example) is None                      # a module it does not know
