"""MP3 / Opus baseline codecs (baselines.audio) and their nodes, on real PyAV encoders."""
from __future__ import annotations

import numpy as np
import pytest

from baselines.audio import AudioBaselineDecoder, AudioBaselineEncoder, BaselineError
from nodes.audio_baselines import AudioBaselineDecode, AudioBaselineEncode
from pipeline.packet import audio_packet
from pipeline.testing import NodeHarness

FS = 48000
T0 = 86_000_000_000
CLICKS = (3000, 25001, 40007)


def clicks(frames: int = FS, channels: int = 7) -> np.ndarray:
    """Quiet noise with clicks, as int32 counts at the Aria's level (~-70 dBFS)."""
    x = np.random.default_rng(0).normal(0, 300.0, (frames, channels))
    for i, k in enumerate(k for k in CLICKS if k + 7 * channels < frames):
        x[k + np.arange(channels) * 7, np.arange(channels)] = 3e6 * (1 + i)
    return x.astype(np.int32)


def blocks_of(x: np.ndarray, seed: int) -> list[np.ndarray]:
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, len(x)), 9, replace=False))
    return np.split(x, cuts)


def code(x, codec, bitrate, blocks) -> tuple[np.ndarray, int]:
    encoder, decoder = AudioBaselineEncoder(codec, bitrate, x.shape[1], FS), AudioBaselineDecoder()
    containers = [encoder.encode(b) for b in blocks] + [encoder.flush()]
    out = np.concatenate([decoder.decode(c) for c in containers])
    return out, sum(map(len, containers))


@pytest.mark.parametrize("codec, bitrate", [("mp3", 48000), ("opus", 64000)])
def test_clicks_land_on_the_same_sample(codec, bitrate):
    x = clicks()
    y, _ = code(x, codec, bitrate, blocks_of(x, 1))
    assert y.shape == x.shape and y.dtype == np.float32
    for c in range(7):
        for k in CLICKS:
            at = k + 7 * c
            window = np.abs(y[at - 200:at + 200, c])
            assert abs(int(np.argmax(window)) - 200) <= 1, (codec, c, k)


@pytest.mark.parametrize("codec, bitrate", [("mp3", 48000), ("opus", 6000)])
def test_block_size_does_not_change_the_stream(codec, bitrate):
    x = clicks(FS // 2)
    whole, size_whole = code(x, codec, bitrate, [x])
    parts, size_parts = code(x, codec, bitrate, blocks_of(x, 2))
    np.testing.assert_array_equal(parts, whole)
    # the per-block container overhead is all that differs
    assert 0 < size_parts - size_whole < 10 * 7 * 4 + 10 * 30


def test_bitrates_give_the_expected_ratios():
    x = clicks(2 * FS)
    _, mp3 = code(x, "mp3", 48000, [x])
    _, opus = code(x, "opus", 6000, [x])
    assert 29 < x.size * 4 / mp3 < 33                   # 32 bit / 48 kb/s = 32:1, plus framing
    assert 250 < x.size * 4 / opus < 400                # 1536 / 6 = 256:1 nominal


def test_quality_follows_bitrate():
    t = np.arange(FS)[:, None] / FS
    x = (2e6 * np.sin(2 * np.pi * 440 * t + np.arange(3))).astype(np.int32)  # ~-60 dBFS
    ref = x / 2.0 ** 31
    snr = {}
    for bitrate in (6000, 64000):
        y, _ = code(x, "opus", bitrate, [x])
        snr[bitrate] = 10 * np.log10(np.sum(ref ** 2) / np.sum((y - ref) ** 2))
    assert snr[64000] > 20 and snr[64000] > snr[6000] + 5


def test_corrupt_or_wrong_settings_are_refused():
    x = clicks(4800)
    data = bytearray(AudioBaselineEncoder("opus", 6000, 7, FS).encode(x))
    data[20] ^= 0xFF
    with pytest.raises(BaselineError, match="CRC"):
        AudioBaselineDecoder().decode(bytes(data))
    with pytest.raises(BaselineError, match="not an audio baseline"):
        AudioBaselineDecoder().decode(b"DNC\x01" + bytes(40))
    with pytest.raises(BaselineError, match="opus cannot code 44100 Hz"):
        AudioBaselineEncoder("opus", 6000, 7, 44100)


def test_nodes_stream_with_timestamps_and_flush():
    x = clicks()
    packets, start = [], 0
    for i, block in enumerate(blocks_of(x, 3)):
        packets.append(audio_packet("mic", T0 + round(start * 1e9 / FS), i, block, FS))
        start += len(block)
    with NodeHarness(AudioBaselineEncode(name="mp3", codec="mp3", bitrate=48000)) as enc:
        for p in packets:
            enc.send("audio", p)
        enc.node.end_of_input()
    encoded = enc.outputs["encoded"]
    assert len(encoded) == len(packets) + 1           # + the flush at the end of the stream
    assert all(p.meta["codec"] == "mp3@48000" for p in encoded)
    assert sum(p.meta["raw_bytes"] for p in encoded) == x.size * 4
    with NodeHarness(AudioBaselineDecode(name="dec")) as dec:
        for p in encoded:
            dec.send("encoded", p)
    decoded = dec.outputs["audio"]
    y = np.concatenate([p.payload for p in decoded])
    assert y.shape == x.shape and dec.node.counters["gaps"] == 0
    # every block's timestamp is that of its first sample in the input's timeline
    index = 0
    for p in decoded:
        assert abs(p.meta["first_sample_ns"] - (T0 + index * 1e9 / FS)) <= 1
        assert p.timestamp_ns == p.meta["first_sample_ns"] and "codec" not in p.meta
        index += len(p.payload)
    assert [p.seq for p in decoded] == list(range(len(decoded)))
    at = CLICKS[1]
    assert abs(int(np.argmax(np.abs(y[at - 200:at + 200, 0]))) - 200) <= 1


def test_node_names_itself_on_bad_input():
    node = AudioBaselineEncode(name="opus6", codec="opus", bitrate=6000)
    with NodeHarness(node) as harness:
        with pytest.raises(ValueError, match="node 'opus6'.*44100 Hz"):
            harness.send("audio", audio_packet("mic", 0, 0, clicks(100), 44100))
