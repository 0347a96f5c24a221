"""aria_vrs against the real AEA sample recording (skipped when the shared data is absent)."""
from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.testing import run_source
from nodes.aria_vrs import AriaVrsSource

VRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "aea" / "recording.vrs"
needs_vrs = pytest.mark.skipif(not VRS.is_file(), reason=f"sample recording {VRS} is absent")
pytest.importorskip("projectaria_tools")


def replay(path=VRS, limit: int | None = None, **params):
    """Drive the node as the runtime does; returns [(port, packet)]."""
    return run_source(AriaVrsSource(name="vrs", path=str(path), **{"speed": 0.0, **params}),
                      limit)


def on(out, port):
    return [packet for p, packet in out if p == port]


@needs_vrs
def test_delivers_every_rgb_frame_and_audio_sample_in_order():
    out = replay()
    frames, blocks = on(out, "image"), on(out, "audio")
    assert len(frames) == 8 and on(out, "sensor") == []
    for seq, frame in enumerate(frames):
        assert frame.stream == "camera-rgb" and frame.seq == seq
        assert frame.payload.shape == (1408, 1408, 3) and frame.payload.dtype == np.uint8
        assert frame.meta["width"] == frame.meta["height"] == 1408
    audio = np.concatenate([block.payload for block in blocks])
    assert audio.shape == (16384, 7) and audio.dtype == np.int32
    assert [block.seq for block in blocks] == list(range(4))
    for stream in (frames, blocks):
        stamps = [packet.timestamp_ns for packet in stream]
        assert all(b > a for a, b in zip(stamps, stamps[1:]))
    for block, after in zip(blocks, blocks[1:]):
        assert block.meta["sample_rate"] == 48000 and block.meta["channels"] == 7
        assert block.meta["first_sample_ns"] == block.timestamp_ns
        # Blocks are contiguous: the next starts one sample period after this one ends.
        expected = block.timestamp_ns + 4096 * 1e9 / 48000
        assert abs(after.timestamp_ns - expected) < 1e9 / 48000


@needs_vrs
def test_audio_is_int32_with_per_channel_dc_offsets():
    audio = np.concatenate([b.payload for b in on(replay(rgb=False), "audio")]).astype(np.int64)
    assert audio.min() >= np.iinfo(np.int32).min and audio.max() <= np.iinfo(np.int32).max
    means = np.abs(audio.mean(axis=0))
    assert means.max() > 1e7 and means.max() / means.min() > 10  # the drift DANCE filters out
    assert np.all(audio.std(axis=0) > 1e4)


@needs_vrs
def test_start_and_end_offsets_select_a_window():
    everything = replay(mic=False)
    first_all = min(p.timestamp_ns for _, p in replay(extra_streams=[
        "imu-right", "imu-left", "baro0", "mag0", "camera-et", "camera-slam-left",
        "camera-slam-right"], rgb=True))
    window = on(replay(mic=False, start_s=0.1, end_s=0.3), "image")
    assert 0 < len(window) < len(on(everything, "image"))
    for frame in window:
        assert first_all + 0.1e9 <= frame.timestamp_ns <= first_all + 0.3e9
    assert [f.seq for f in window] == list(range(len(window)))


@needs_vrs
def test_start_beyond_the_end_is_one_clear_error():
    with pytest.raises(ValueError, match="start_s 5.0 is beyond the end of .*0.402 s long"):
        replay(start_s=5.0)


@needs_vrs
def test_loop_keeps_timestamps_increasing_and_repeats_the_content():
    out = replay(loop=True, limit=12 * 3)
    frames, blocks = on(out, "image"), on(out, "audio")
    assert len(frames) > 8 and len(blocks) > 4
    for stream in (frames, blocks):
        assert [p.seq for p in stream] == list(range(len(stream)))
        stamps = [p.timestamp_ns for p in stream]
        assert all(b > a for a, b in zip(stamps, stamps[1:]))
    np.testing.assert_array_equal(frames[8].payload, frames[0].payload)
    np.testing.assert_array_equal(blocks[4].payload, blocks[0].payload)
    assert blocks[4].meta["first_sample_ns"] == blocks[4].timestamp_ns
    # The second pass starts after the first pass's last audio sample.
    assert blocks[4].timestamp_ns >= blocks[3].timestamp_ns + 4096 * 1e9 / 48000


@needs_vrs
def test_extra_streams_by_label_or_id():
    out = replay(rgb=False, mic=False, extra_streams=["imu-right", "1201-1"])
    imu = [p for p in on(out, "sensor") if p.stream == "imu-right"]
    slam = [p for p in on(out, "sensor") if p.stream == "camera-slam-left"]
    assert len(imu) == 400 and imu[0].payload.shape == (2, 3)
    accel = np.linalg.norm([p.payload[0] for p in imu], axis=1)
    assert 8.0 < accel.mean() < 11.6  # gravity (plus head motion), in m/s²
    assert len(slam) == 4 and slam[0].payload.shape == (480, 640)
    assert slam[0].meta["pixel_format"] == "gray8"


@needs_vrs
def test_unknown_extra_stream_is_named_in_the_error():
    with pytest.raises(ValueError, match="no stream 'imu-middle'.*imu-right"):
        replay(extra_streams=["imu-middle"])


@needs_vrs
def test_paces_at_the_speed_factor():
    out = replay(speed=0.0)
    span_s = (max(p.timestamp_ns for _, p in out) - min(p.timestamp_ns for _, p in out)) / 1e9
    started = time.monotonic()
    replay(speed=2.0)
    assert time.monotonic() - started >= 0.5 * span_s / 2.0


def test_missing_file_is_one_clear_error(tmp_path):
    missing = tmp_path / "nope.vrs"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        replay(missing)


def test_file_that_is_not_vrs(tmp_path):
    bogus = tmp_path / "notes.vrs"
    bogus.write_bytes(b"hello, this is not a recording\n" * 10)
    with pytest.raises(ValueError, match=f"{bogus}: not a VRS file"):
        replay(bogus)


@needs_vrs
@pytest.mark.parametrize("keep", [100, 50_000, 2_000_000, VRS.stat().st_size - 500
                                  if VRS.is_file() else 1])
def test_truncated_file_is_one_clear_error(tmp_path, keep):
    cut = tmp_path / "cut.vrs"
    cut.write_bytes(VRS.read_bytes()[:keep])
    with pytest.raises(ValueError, match=f"{cut}: truncated VRS file"):
        replay(cut)


@needs_vrs
def test_damaged_record_chain_is_one_clear_error(tmp_path):
    data = bytearray(VRS.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 100_000] = np.random.default_rng(0).bytes(100_000)
    damaged = tmp_path / "damaged.vrs"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{damaged}: corrupt VRS file: record at byte 1834740 "
                                         "has unknown compression type"):
        replay(damaged)


def write_non_aria_copy(source: Path, target: Path) -> None:
    """A valid VRS file whose RGB and mic streams have instance 7 instead of 1, i.e. streams
    214-7 and 231-7 that no Aria device writes (the index is dropped so VRS rescans)."""
    data = bytearray(source.read_bytes())
    header_size, record_header_size = struct.unpack_from("<II", data, 16)
    description = struct.unpack_from("<q", data, 32)[0]
    struct.pack_into("<q", data, 24, 0)  # no index record
    offset = header_size
    while offset < len(data):
        size, _, type_id = struct.unpack_from("<IIi", data, offset)
        if type_id in (214, 231):
            struct.pack_into("<H", data, offset + 24, 7)
        offset += size
    size = struct.unpack_from("<I", data, description)[0]
    body = bytes(data[description + record_header_size:description + size])
    for type_id in (214, 231):
        body = body.replace(struct.pack("<iH", type_id, 1), struct.pack("<iH", type_id, 7))
    data[description + record_header_size:description + size] = body
    target.write_bytes(bytes(data))


@needs_vrs
def test_vrs_without_aria_streams_is_one_clear_error(tmp_path):
    other = tmp_path / "other.vrs"
    write_non_aria_copy(VRS, other)
    with pytest.raises(ValueError, match=f"{other}: not an Aria recording: no camera-rgb"):
        replay(other)
    with pytest.raises(ValueError, match=f"{other}: not an Aria recording: no mic"):
        replay(other, rgb=False)
    imu = replay(other, rgb=False, mic=False, extra_streams=["imu-right"])
    assert len(imu) == 400  # the rest of the file is fine
