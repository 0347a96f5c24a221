"""The audio preprocessing chain: notch (DC + mains) and μ-law companding, library and nodes."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from dance.data import open_vrs, read_vrs_audio
from dance.preprocess import (FLOAT_FULL_SCALE, AudioPreprocessor, NotchFilter, compand, expand,
                              notch_filter, notch_sos)
from nodes.audio_dsp import Compand, Expand, Notch
from pipeline.packet import audio_packet
from pipeline.testing import feed

from .dance_testing import sample_audio

FS = 48000


def random_blocks(total: int, rng: np.random.Generator) -> list[slice]:
    cuts = np.sort(rng.choice(np.arange(1, total), size=12, replace=False))
    edges = [0, *cuts.tolist(), total]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blockwise_notch_compand_expand_equals_whole_signal(seed):
    rng = np.random.default_rng(seed)
    samples = sample_audio(20000, seed=seed)
    sos = notch_sos(FS, 10.0, mains_hz=50.0, mains_harmonics=3)
    whole = NotchFilter(sos)(samples / FLOAT_FULL_SCALE)
    notch = NotchFilter(sos)
    parts = np.concatenate([notch(samples[s] / FLOAT_FULL_SCALE)
                            for s in random_blocks(len(samples), rng)])
    np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-15)
    companded = compand(parts, 65535.0)
    assert np.abs(companded).max() <= 1.0
    # companding is float32 (the model input type): inverse exact to float32 precision
    np.testing.assert_allclose(expand(companded, 65535.0), whole, rtol=2e-6, atol=1e-18)
    # the library entry point evaluation uses is the same filter over the whole signal
    np.testing.assert_allclose(notch_filter(samples, FS, mains_hz=50.0), whole, atol=1e-15)


def test_notch_design_response():
    sos = notch_sos(FS, 10.0, mains_hz=60.0, mains_harmonics=3)
    freqs = np.array([0.0, 10.0, 60.0, 120.0, 180.0, 1000.0, 8000.0])
    _, h = signal.sosfreqz(sos, worN=freqs, fs=FS)
    gain_db = 20 * np.log10(np.abs(h) + 1e-300)
    assert gain_db[0] < -200                                  # a true zero at DC
    assert gain_db[1] == pytest.approx(-3.0, abs=0.1)         # the -3 dB corner
    assert np.all(gain_db[2:5] < -40)                         # mains and harmonics
    assert np.all(np.abs(gain_db[5:]) < 0.1)                  # speech band untouched
    assert len(sos) == 4


def test_preprocessor_and_nodes_blockwise_match(tmp_path):
    rng = np.random.default_rng(3)
    samples = sample_audio(12000, seed=3)
    blocks = random_blocks(len(samples), rng)
    packets = [audio_packet("mic", 10**9 + s.start * 10**9 // FS, i, samples[s], FS)
               for i, s in enumerate(blocks)]
    filtered = [p for _, p in feed(Notch(name="notch"), "audio", packets)]
    companded = [p for _, p in feed(Compand(name="compand"), "audio", filtered)]
    restored = [p for _, p in feed(Expand(name="expand"), "audio", companded)]
    assert [p.meta["domain"] for p in companded] == ["mu-law"] * len(blocks)
    assert all(p.meta["domain"] == "linear" and "mu" not in p.meta for p in restored)
    linear = notch_filter(samples, FS)
    np.testing.assert_allclose(np.concatenate([p.payload for p in filtered]), linear,
                               rtol=1e-6, atol=1e-9)       # float32 output
    # the node chain gives the codec exactly what its own preprocessing would
    model_input = AudioPreprocessor(7).forward(samples)[0].numpy().T
    np.testing.assert_allclose(np.concatenate([p.payload for p in companded]), model_input,
                               atol=2e-6)
    np.testing.assert_allclose(np.concatenate([p.payload for p in restored]), linear,
                               rtol=2e-5, atol=1e-9)


def test_nodes_refuse_the_wrong_domain():
    block = audio_packet("mic", 0, 0, sample_audio(100), FS)
    with pytest.raises(ValueError, match="node 'expand'.*not μ-law"):
        feed(Expand(name="expand"), "audio", [block])
    companded = feed(Compand(name="c"), "audio", [block])[0][1]
    with pytest.raises(ValueError, match="companded already"):
        feed(Compand(name="c2"), "audio", [companded])


def test_dc_offsets_are_gone_on_the_sample_recording(aea_vrs):
    raw = read_vrs_audio(open_vrs(aea_vrs), aea_vrs).astype(np.float64)
    filtered = notch_filter(raw.astype(np.int32), FS) * FLOAT_FULL_SCALE
    offsets, left = raw.mean(axis=0), filtered.mean(axis=0)
    assert np.abs(offsets).max() > 4e7                      # mic3 sits at ~4.7e7 counts
    # 0.34 s is too short to see the slow drift; the offsets collapse to what a 10 Hz
    # high-pass leaves of the low-frequency sound over such a short window
    assert np.all(np.abs(left) < 0.2 * filtered.std(axis=0))
    assert np.abs(left).max() < 0.005 * np.abs(offsets).max()
    # the sound above the corner is kept: same power above 100 Hz as the raw signal
    high = signal.butter(4, 100, "high", fs=FS, output="sos")
    ratio = (signal.sosfiltfilt(high, filtered, axis=0).std(axis=0)
             / signal.sosfiltfilt(high, raw, axis=0).std(axis=0))
    assert np.all(np.abs(ratio - 1) < 0.02)


def test_drift_is_gone():
    samples = sample_audio(4 * FS, seed=4)        # offsets up to 4.6e7 and a 1e6 counts/s ramp
    filtered = notch_filter(samples, FS) * FLOAT_FULL_SCALE
    quarters = np.array([q.mean(axis=0) for q in np.array_split(samples, 4)])
    assert np.ptp(quarters, axis=0).min() > 2e6             # the raw means wander by 2e6+
    settled = np.array([q.mean(axis=0) for q in np.array_split(filtered, 4)])
    assert np.abs(settled).max() < 0.05 * filtered.std()    # ramp -> a constant ~1.5e4


def test_codec_takes_companded_blocks_without_preprocessing_twice(tmp_path):
    from nodes.codec import Decode, Encode

    from .dance_testing import TINY_AUDIO, tiny_checkpoint
    ckpt = str(tiny_checkpoint(tmp_path / "audio.pt", TINY_AUDIO))
    samples = sample_audio(6000, seed=5)
    packets = [audio_packet("mic", i * 10**9, i, samples[i * 2000:(i + 1) * 2000], FS)
               for i in range(3)]
    # raw int32 blocks: the codec filters and compands itself, decodes to int32 counts
    direct = [p for _, p in feed(Decode(checkpoint=ckpt), "encoded",
                                 [p for _, p in feed(Encode(checkpoint=ckpt), "audio", packets)])]
    # notch -> compand -> encode -> decode -> expand: the same model input, the same output
    companded = [p for _, p in feed(Compand(), "audio",
                                    [p for _, p in feed(Notch(), "audio", packets)])]
    encoded = [p for _, p in feed(Encode(checkpoint=ckpt), "audio", companded)]
    decoded = [p for _, p in feed(Decode(checkpoint=ckpt), "encoded", encoded)]
    assert all(p.meta["domain"] == "mu-law" and p.payload.dtype == np.float32 for p in decoded)
    restored = [p for _, p in feed(Expand(), "audio", decoded)]
    for chained, plain in zip(restored, direct):
        np.testing.assert_allclose(chained.payload * FLOAT_FULL_SCALE, plain.payload,
                                   rtol=1e-5, atol=2.0)
    with pytest.raises(ValueError, match="companded with mu=255.0"):
        feed(Encode(checkpoint=ckpt), "audio", feed(Compand(mu=255.0), "audio", packets[:1])[0][1:])


def test_compand_and_notch_follow_a_checkpoint(tmp_path):
    from .dance_testing import TINY_AUDIO, TINY_IMAGE, tiny_checkpoint
    config = {**TINY_AUDIO, "preprocess": {**TINY_AUDIO["preprocess"], "mu": 255.0,
                                           "scale": 2.0 ** 26, "dc_cutoff_hz": 20.0}}
    ckpt = str(tiny_checkpoint(tmp_path / "a.pt", config))
    block = audio_packet("mic", 0, 0, sample_audio(500), FS)
    out = feed(Compand(checkpoint=ckpt), "audio", [block])[0][1]
    assert (out.meta["mu"], out.meta["scale"]) == (255.0, 2.0 ** 26)
    notch = Notch(checkpoint=ckpt)
    feed(notch, "audio", [block])
    assert notch.dc_cutoff_hz == 20.0
    image = str(tiny_checkpoint(tmp_path / "i.pt", TINY_IMAGE))
    with pytest.raises(ValueError, match="node 'c': checkpoint .* is not an audio codec"):
        feed(Compand(name="c", checkpoint=image), "audio", [block])
