"""Recording files and the record/replay nodes: round trips, crashes, damage, timing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nodes.recording import Record, Replay
from pipeline.packet import Packet, audio_packet, image_packet
from pipeline.recordfile import RecordError, RecordReader, RecordWriter

ROOT = Path(__file__).resolve().parents[1]


def sample_packets(count: int = 12) -> list[Packet]:
    """Every payload kind the wire format carries, on three streams, 0.1 s apart."""
    rng = np.random.default_rng(0)
    packets = []
    for i in range(count):
        ts = 5_000_000_000 + i * 100_000_000
        kind = i % 3
        if kind == 0:
            packets.append(image_packet("camera-rgb", ts, i // 3,
                                        rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)))
        elif kind == 1:
            packets.append(audio_packet("mic", ts, i // 3,
                                        rng.integers(-2**31, 2**31, (256, 7), dtype=np.int32),
                                        48000))
        else:
            packets.append(Packet("encoded", ts, i // 3, rng.bytes(100 + i),
                                  {"codec": "dance", "raw_bytes": 9000}))
    packets.append(Packet("metrics", packets[-1].timestamp_ns + 1, 0,
                          {"psnr": 31.5, "label": "ok", "n": 3}))
    return packets


def assert_same(got: Packet, want: Packet) -> None:
    assert (got.stream, got.timestamp_ns, got.seq, got.meta) == (
        want.stream, want.timestamp_ns, want.seq, want.meta)
    if isinstance(want.payload, np.ndarray):
        assert got.payload.dtype == want.payload.dtype
        np.testing.assert_array_equal(got.payload, want.payload)
    else:
        assert got.payload == want.payload


def write_file(path: Path, packets: list[Packet], close: bool = True) -> list[int]:
    """Write `packets`; returns the file size after each record."""
    writer = RecordWriter(path)
    ends = []
    for packet in packets:
        writer.write(packet)
        ends.append(path.stat().st_size)
    if close:
        writer.close()
    return ends


def test_round_trip_of_every_payload_kind(tmp_path):
    path, packets = tmp_path / "a.rec", sample_packets()
    write_file(path, packets)
    reader = RecordReader(path)
    got = list(reader)
    assert len(got) == len(packets) and reader.complete and reader.trailing_bytes == 0
    for g, w in zip(got, packets):
        assert_same(g, w)


def test_index_of_a_closed_file_points_at_every_packet(tmp_path):
    path, packets = tmp_path / "a.rec", sample_packets()
    write_file(path, packets)
    reader = RecordReader(path)
    index = reader.index()
    assert index is not None and len(index.entries) == len(packets)
    assert set(index.streams) == {"camera-rgb", "mic", "encoded", "metrics"}
    scanned = [offset for offset, _ in reader.scan()]
    assert list(index.entries["offset"]) == scanned
    assert list(index.entries["timestamp_ns"]) == [p.timestamp_ns for p in packets]
    third_mic = index.offsets("mic")[2]
    assert_same(reader.read_at(int(third_mic)), [p for p in packets if p.stream == "mic"][2])


def test_file_cut_anywhere_reads_up_to_its_last_whole_record(tmp_path):
    path, packets = tmp_path / "a.rec", sample_packets()
    ends = write_file(path, packets, close=False)
    data = path.read_bytes()
    cut = tmp_path / "cut.rec"
    for size in range(ends[0] - 3, len(data), 97):
        cut.write_bytes(data[:size])
        reader = RecordReader(cut)
        got = list(reader)
        whole = sum(end <= size for end in ends)
        assert len(got) == whole
        assert reader.trailing_bytes == size - (ends[whole - 1] if whole else 16)
        assert not reader.complete
        for g, w in zip(got, packets):
            assert_same(g, w)
    assert RecordReader(path).index() is None  # never closed: no index, scanning suffices


def test_closed_file_cut_in_its_index_or_trailer_reads_every_packet(tmp_path):
    """A crash during close() leaves every packet whole: the file reads to its last whole
    record, not closed cleanly, whether the cut falls in the index record or the trailer."""
    path, packets = tmp_path / "a.rec", sample_packets()
    last_packet_end = write_file(path, packets)[-1]
    data = path.read_bytes()
    index_end = len(data) - 16
    cut = tmp_path / "cut.rec"
    for size in [*range(last_packet_end, index_end, 7), *range(index_end, len(data))]:
        cut.write_bytes(data[:size])
        reader = RecordReader(cut)
        got = list(reader)
        assert len(got) == len(packets), size
        assert not reader.complete, size
        whole = index_end if size >= index_end else last_packet_end
        assert reader.trailing_bytes == size - whole, size
        assert reader.index() is None
    assert_same(got[-1], packets[-1])
    cut.write_bytes(data[:index_end] + b"\x01" * 9)  # not a prefix of the trailer: damage
    with pytest.raises(RecordError, match="9 unexpected bytes after the index record"):
        list(RecordReader(cut))


def test_zero_filled_tail_after_power_loss_is_a_torn_end(tmp_path):
    path, packets = tmp_path / "a.rec", sample_packets()
    ends = write_file(path, packets, close=False)
    with open(path, "ab") as file:
        file.write(bytes(5000))
    reader = RecordReader(path)
    assert len(list(reader)) == len(packets)
    assert reader.trailing_bytes == path.stat().st_size - ends[-1]


WRITER = """
import sys, numpy as np
from pipeline.packet import Packet
from pipeline.recordfile import RecordWriter
writer = RecordWriter(sys.argv[1])
for i in range(10**9):
    writer.write(Packet("noise", 10**9 + i * 10**6, i, np.full((3000, 7), i, dtype=np.int32)))
    if i == 200:
        print("ready", flush=True)
"""


def test_recording_killed_with_sigkill_replays_every_whole_record(tmp_path):
    path = tmp_path / "killed.rec"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    reader = RecordReader(path)
    got = list(reader)
    assert len(got) > 200 and not reader.complete
    assert [p.seq for p in got] == list(range(len(got)))
    for packet in got:
        assert packet.payload.shape == (3000, 7) and np.all(packet.payload == packet.seq)
    record_size = (path.stat().st_size - 16 - reader.trailing_bytes) / len(got)
    assert reader.trailing_bytes < record_size  # only a torn last record, if any, is left out


def test_damaged_middle_record_names_file_and_offset(tmp_path):
    path, packets = tmp_path / "a.rec", sample_packets()
    write_file(path, packets)
    offsets = [offset for offset, _ in RecordReader(path).scan()]
    data = bytearray(path.read_bytes())
    data[offsets[4] + 40] ^= 0xFF  # one flipped bit pattern inside record 4
    path.write_bytes(bytes(data))
    reader = RecordReader(path)
    with pytest.raises(RecordError, match=f"{path}: corrupt record at byte {offsets[4]}"):
        list(reader)


def test_damaged_length_in_a_closed_file_is_an_error_not_an_end(tmp_path):
    path, packets = tmp_path / "a.rec", sample_packets()
    write_file(path, packets)
    offsets = [offset for offset, _ in RecordReader(path).scan()]
    data = bytearray(path.read_bytes())
    data[offsets[2]:offsets[2] + 4] = (10**8).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(RecordError, match=f"{path}: record at byte {offsets[2]} runs past"):
        list(RecordReader(path))


def test_foreign_and_missing_files(tmp_path):
    foreign = tmp_path / "x.rec"
    foreign.write_bytes(b"PK\x03\x04 not ours" * 4)
    with pytest.raises(RecordError, match=f"{foreign}: not a dance recording"):
        RecordReader(foreign)
    with pytest.raises(FileNotFoundError, match="nope.rec"):
        RecordReader(tmp_path / "nope.rec")


def run_source(node, limit: int | None = None):
    node.attach(lambda port, packet: None, threading.Event())
    node.setup()
    out = []
    for item in node.run():
        out.append((time.monotonic(), item[1] if isinstance(item, tuple) else item))
        if limit and len(out) >= limit:
            break
    node.teardown()
    return out


def record_with_node(path: Path, packets: list[Packet]) -> None:
    sink = Record(name="rec", path=str(path))
    sink.attach(lambda port, packet: None, threading.Event())
    sink.setup()
    for packet in packets:
        sink.handle("packets", packet)
    sink.teardown()


def test_record_then_replay_gives_the_same_packets_in_order(tmp_path):
    path, packets = tmp_path / "sub" / "run.rec", sample_packets()
    record_with_node(path, packets)
    replayed = [p for _, p in run_source(Replay(name="rp", path=str(path), speed=0.0))]
    assert len(replayed) == len(packets)
    for g, w in zip(replayed, packets):
        assert_same(g, w)


def test_replay_filters_streams_and_loops_with_increasing_time(tmp_path):
    path, packets = tmp_path / "run.rec", sample_packets()
    record_with_node(path, packets)
    mic = [p for p in packets if p.stream == "mic"]
    out = [p for _, p in run_source(Replay(name="rp", path=str(path), speed=0.0,
                                           streams=["mic"], loop=True), limit=3 * len(mic))]
    assert {p.stream for p in out} == {"mic"}
    assert [p.seq for p in out] == list(range(len(out)))
    stamps = [p.timestamp_ns for p in out]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    np.testing.assert_array_equal(out[len(mic)].payload, mic[0].payload)
    assert out[len(mic)].meta["first_sample_ns"] == out[len(mic)].timestamp_ns


def test_replay_keeps_the_original_timing(tmp_path):
    path, packets = tmp_path / "run.rec", sample_packets()
    record_with_node(path, packets)
    speed = 4.0
    out = run_source(Replay(name="rp", path=str(path), speed=speed))
    span_s = (packets[-1].timestamp_ns - packets[0].timestamp_ns) / 1e9
    wall_s = out[-1][0] - out[0][0]
    assert wall_s >= 0.5 * span_s / speed
    # Each packet arrives no earlier than its recorded offset allows.
    for (wall, packet) in out:
        due = (packet.timestamp_ns - packets[0].timestamp_ns) / 1e9 / speed
        assert wall - out[0][0] >= 0.5 * due


def test_replay_of_a_crashed_recording_warns_and_plays_what_is_whole(tmp_path, capsys):
    path, packets = tmp_path / "run.rec", sample_packets()
    ends = write_file(path, packets, close=False)
    with open(path, "r+b") as file:
        file.truncate(ends[-2] + 10)
    out = run_source(Replay(name="rp", path=str(path), speed=0.0))
    assert len(out) == len(packets) - 1
    assert "not closed cleanly; 10 trailing bytes ignored" in capsys.readouterr().err


def test_replay_of_an_unknown_stream_is_one_clear_error(tmp_path):
    path = tmp_path / "run.rec"
    record_with_node(path, sample_packets())
    with pytest.raises(ValueError, match=f"{path}: no stream imu in this recording"):
        Replay(name="rp", path=str(path), streams=["mic", "imu"]).setup()
