"""synthetic_aria: Aria-shaped, deterministic, streaming-consistent, paced."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pipeline.testing import run_source
from nodes.synthetic import SAMPLE_RATE, SyntheticAriaSource, sample_time_ns


def generate(limit: int | None = None, **params):
    return run_source(SyntheticAriaSource(name="syn", **{"speed": 0.0, **params}), limit)


@pytest.fixture(scope="module")
def default_run():
    return generate(frames=3)


def on(out, port):
    return [packet for p, packet in out if p == port]


def test_streams_have_the_aria_shapes_and_cover_the_same_time(default_run):
    frames, blocks = on(default_run, "image"), on(default_run, "audio")
    assert len(frames) == 3
    for seq, frame in enumerate(frames):
        assert (frame.stream, frame.seq) == ("camera-rgb", seq)
        assert frame.payload.shape == (1408, 1408, 3) and frame.payload.dtype == np.uint8
    audio = np.concatenate([b.payload for b in blocks])
    assert audio.dtype == np.int32 and audio.shape[1] == 7
    assert all(b.payload.shape == (4096, 7) and b.meta["sample_rate"] == SAMPLE_RATE
               for b in blocks)
    duration_ns = 3 * 1e9  # 3 frames at 1 fps
    assert blocks[-1].timestamp_ns < frames[0].timestamp_ns + duration_ns
    assert audio.shape[0] / SAMPLE_RATE >= duration_ns / 1e9


def test_timestamps_are_interleaved_in_order_and_audio_is_contiguous(default_run):
    stamps = [packet.timestamp_ns for _, packet in default_run]
    assert stamps == sorted(stamps)
    for k, block in enumerate(on(default_run, "audio")):
        assert block.seq == k
        assert block.timestamp_ns == block.meta["first_sample_ns"] == sample_time_ns(k * 4096)


def test_frames_look_like_a_fisheye_camera(default_run):
    frames = [f.payload for f in on(default_run, "image")]
    first = frames[0]
    assert first[:40, :40].max() == 0 and first[-40:, -40:].max() == 0  # dark corners
    centre = first[500:900, 500:900].astype(float)
    assert 20 < centre.mean() < 235 and centre.std() > 10  # content with texture and edges
    assert np.abs(np.diff(centre, axis=1)).mean() > 2
    assert np.abs(frames[1].astype(int) - first).mean() > 5  # the scene moves


def test_audio_has_the_microphones_dc_offsets_and_drift(default_run):
    audio = np.concatenate([b.payload for b in on(default_run, "audio")]).astype(np.float64)
    means = audio.mean(axis=0)
    assert np.all(means > 3e4) and np.all(means < 5e7) and means.max() / means.min() > 10
    assert np.all(audio.std(axis=0) > 1e5)
    # Drift: the per-channel mean moves between the first and the last second.
    first, last = audio[:SAMPLE_RATE].mean(axis=0), audio[-SAMPLE_RATE:].mean(axis=0)
    assert np.any(np.abs(last - first) > 1e3)
    # Each microphone hears the source with its own delay, so channels are not scaled copies.
    ac = audio - means
    corr = np.corrcoef(ac.T)
    assert np.all(corr[np.triu_indices(7, 1)] < 0.9999)


def test_same_seed_same_streams_other_seed_other_streams(default_run):
    again = generate(frames=3)
    other = generate(frames=3, seed=1)
    for (_, a), (_, b) in zip(default_run, again):
        assert a.timestamp_ns == b.timestamp_ns
        np.testing.assert_array_equal(a.payload, b.payload)
    assert not np.array_equal(on(default_run, "image")[0].payload, on(other, "image")[0].payload)
    assert not np.array_equal(on(default_run, "audio")[0].payload, on(other, "audio")[0].payload)


def test_block_size_does_not_change_the_signal(default_run):
    """Streaming state carries across blocks: blocks of 1000 give the same samples as 4096."""
    big = np.concatenate([b.payload for b in on(default_run, "audio")])
    small_blocks = on(generate(frames=3, block=1000), "audio")
    small = np.concatenate([b.payload for b in small_blocks])
    n = min(len(big), len(small))
    np.testing.assert_array_equal(small[:n], big[:n])
    assert small_blocks[5].timestamp_ns == sample_time_ns(5000)


def test_endless_until_stopped():
    out = generate(limit=40, frames=0, fps=30.0)
    assert len(out) == 40 and len(on(out, "image")) > 10


def test_paces_at_the_speed_factor():
    speed = 10.0
    node = SyntheticAriaSource(name="syn", frames=3, speed=speed)
    node.attach(lambda port, packet: None, threading.Event())
    node.setup()
    arrivals = [(time.monotonic(), packet.timestamp_ns) for _, packet in node.run()]
    wall_s = arrivals[-1][0] - arrivals[0][0]
    span_s = (arrivals[-1][1] - arrivals[0][1]) / 1e9
    assert span_s > 2.5
    assert wall_s >= 0.5 * span_s / speed


def test_room_audio_streams_the_room_simulator_clip_in_blocks_of_any_size():
    from dance.simulate import simulate_clip
    from nodes.synthetic import RoomRecording
    room = on(generate(frames=1, sound="room", block=3000), "audio")
    audio = np.concatenate([b.payload for b in room])
    clip = simulate_clip(RoomRecording.SEED_OFFSET, 1.0)
    assert audio.dtype == np.int32 and audio.shape[1] == 7
    np.testing.assert_array_equal(audio[:len(clip)], clip)           # the simulator's clip
    np.testing.assert_array_equal(audio[len(clip):], clip[:len(audio) - len(clip)])  # looped
    tones = np.concatenate([b.payload for b in on(generate(frames=1, block=3000), "audio")])
    assert not np.array_equal(audio, tones)


def test_mic_false_gives_the_same_frames_and_no_audio(default_run):
    frames_only = generate(frames=3, mic=False)
    assert [port for port, _ in frames_only] == ["image"] * 3
    for (_, a), b in zip(frames_only, on(default_run, "image")):
        np.testing.assert_array_equal(a.payload, b.payload)
