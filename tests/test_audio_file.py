"""audio_file: a WAV/FLAC file replayed as the mic stream, block by block, with clear errors."""
from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf

from nodes.audio_file import AudioFileSource
from nodes.synthetic import START_NS, sample_time_ns
from pipeline.testing import run_source
from tests.conftest import dance

RATE = 48000


def write(path, samples, rate=RATE, subtype="PCM_32", **kwargs):
    sf.write(path, samples, rate, subtype=subtype, **kwargs)
    return path


@pytest.fixture
def clip(tmp_path):
    rng = np.random.default_rng(0)
    samples = rng.integers(-2**31, 2**31 - 1, (10_000, 7), dtype=np.int64).astype(np.int32)
    return write(tmp_path / "clip.wav", samples), samples


def replay(path, limit=None, **params):
    out = run_source(AudioFileSource(name="mics", path=str(path), **{"speed": 0.0, **params}),
                     limit)
    assert {port for port, _ in out} <= {"audio"}
    return [packet for _, packet in out]


def test_blocks_concatenate_to_the_file_with_a_shorter_last_block(clip):
    path, samples = clip
    blocks = replay(path, block=4096)
    assert [b.payload.shape for b in blocks] == [(4096, 7), (4096, 7), (1808, 7)]
    assert all(b.payload.dtype == np.int32 for b in blocks)
    np.testing.assert_array_equal(np.concatenate([b.payload for b in blocks]), samples)
    for seq, b in enumerate(blocks):
        assert (b.stream, b.seq) == ("mic", seq)
        assert b.meta["sample_rate"] == RATE and b.meta["channels"] == 7


def test_timestamps_start_on_the_device_clock_and_advance_by_samples(clip):
    path, _ = clip
    blocks = replay(path, block=1000)
    assert blocks[0].timestamp_ns == START_NS
    for k, b in enumerate(blocks):
        assert b.timestamp_ns == b.meta["first_sample_ns"] == sample_time_ns(k * 1000)
    steps = np.diff([b.timestamp_ns for b in blocks])
    assert np.all(np.abs(steps - 1000 / RATE * 1e9) <= 1)


def test_other_rates_channels_stream_name_and_flac(tmp_path):
    samples = (np.arange(3000, dtype=np.int32)[:, None] * [1 << 16, -(1 << 16)]).astype(np.int32)
    path = write(tmp_path / "two.flac", (samples >> 16).astype(np.int16), rate=16000,
                 subtype="PCM_16")
    blocks = replay(path, block=1024, stream="speech")
    assert {b.stream for b in blocks} == {"speech"}
    assert blocks[1].timestamp_ns == START_NS + 64_000_000  # 1024 samples at 16 kHz
    assert blocks[0].meta["sample_rate"] == 16000 and blocks[0].payload.shape == (1024, 2)
    np.testing.assert_array_equal(np.concatenate([b.payload for b in blocks]), samples)


def test_sixteen_bit_files_are_scaled_to_int32_full_scale(tmp_path):
    quiet = np.random.default_rng(1).integers(-2**15, 2**15, (500, 7)).astype(np.int16)
    blocks = replay(write(tmp_path / "s16.wav", quiet, subtype="PCM_16"))
    audio = np.concatenate([b.payload for b in blocks])
    assert audio.dtype == np.int32
    np.testing.assert_array_equal(audio, quiet.astype(np.int32) << 16)


def test_start_s_and_end_s_cut_the_file(clip):
    path, samples = clip
    blocks = replay(path, block=1000, start_s=0.05, end_s=0.15)  # samples 2400..7200
    np.testing.assert_array_equal(np.concatenate([b.payload for b in blocks]),
                                  samples[2400:7200])
    assert [len(b.payload) for b in blocks] == [1000] * 4 + [800]
    assert blocks[0].timestamp_ns == sample_time_ns(2400)  # file time, as aria_vrs keeps it
    assert blocks[-1].timestamp_ns == sample_time_ns(6400)
    # end_s past the end of the file stops at the end
    tail = replay(path, start_s=0.2, end_s=10.0)
    np.testing.assert_array_equal(np.concatenate([b.payload for b in tail]), samples[9600:])


def test_loop_repeats_the_file_with_timestamps_continuing(clip):
    path, samples = clip
    blocks = replay(path, limit=9, block=4096, loop=True)  # 3 blocks per pass
    assert [b.seq for b in blocks] == list(range(9))
    assert [len(b.payload) for b in blocks] == [4096, 4096, 1808] * 3
    for k in range(3):
        np.testing.assert_array_equal(
            np.concatenate([b.payload for b in blocks[3 * k:3 * k + 3]]), samples)
    first = 0
    for b in blocks:  # contiguous: every block starts where the previous one ended
        assert b.timestamp_ns == sample_time_ns(first)
        first += len(b.payload)
    # with a cut, each pass replays the cut and the clock still runs on
    cut = replay(path, limit=4, block=4800, loop=True, start_s=0.1, end_s=0.2)
    assert [b.timestamp_ns for b in cut] == [sample_time_ns(4800 * (k + 1)) for k in range(4)]
    assert all(np.array_equal(b.payload, samples[4800:9600]) for b in cut)


def test_pacing_follows_speed(clip):
    path, _ = clip
    started = time.monotonic()
    replay(path, block=2400, speed=1.0)  # 5 blocks of 50 ms, the first due at once
    assert time.monotonic() - started >= 0.15


def text_file(path):
    path.write_text("not audio at all")  # a text file renamed .wav
    return path


def empty_file(path):
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("make, says", [
    (lambda path: path, "no such audio file"),
    (text_file, "cannot read audio (Format not recognised.)"),
    (empty_file, "cannot read audio"),
    (lambda path: write(path, np.zeros((0, 7), np.int32)), "no audio frames"),
], ids=["missing", "text", "zero-bytes", "zero-frames"])
def test_hostile_files_raise_one_line_naming_node_and_file(tmp_path, make, says):
    path = make(tmp_path / "x.wav")
    with pytest.raises(ValueError) as info:
        replay(path)
    message = str(info.value)
    assert message.startswith(f"node 'mics': {path}: ") and says in message
    assert "\n" not in message


def test_start_beyond_the_end_and_bad_cut_are_rejected(clip):
    path, _ = clip
    with pytest.raises(ValueError, match=r"start_s 1.0 is beyond the end .* \(0.208 s long\)"):
        replay(path, start_s=1.0)
    with pytest.raises(ValueError, match="end_s 0.1 must exceed start_s 0.1"):
        replay(path, start_s=0.1, end_s=0.1)


def graph(tmp_path, path):
    graph_path = tmp_path / "g.yaml"
    graph_path.write_text(f"""name: audio_file_test
nodes:
  - name: mics
    type: audio_file
    params: {{path: '{path}', speed: 0, block: 4096}}
  - name: stats
    type: stats
edges:
  - mics.audio -> stats.packets
""")
    return graph_path


def test_dance_run_replays_a_file_into_stats(clip, tmp_path):
    path, _ = clip
    result = dance("run", graph(tmp_path, path))
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:2] == ["mic", "3"] and "10000×7" in line
               for line in result.stdout.splitlines()), result.stdout


def test_dance_run_with_a_bad_file_prints_one_error_line(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    for path in (bad, tmp_path / "missing.wav"):
        result = dance("run", graph(tmp_path, path))
        assert result.returncode != 0
        assert "Traceback" not in result.stderr + result.stdout
        errors = [line for line in result.stderr.splitlines()  # found when the graph loads
                  if line.startswith(("error:", str(tmp_path)))]
        assert len(errors) == 1 and str(path) in errors[0], result.stderr
