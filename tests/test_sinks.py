"""jsonl and stats sinks."""
from __future__ import annotations

import json
import threading

import numpy as np

from nodes.jsonl import JsonlSink
from nodes.stats import StatsSink
from pipeline import testing
from pipeline.packet import Packet, audio_packet, image_packet


def feed(node, packets):
    testing.feed(node, "packets", packets)
    return node


def audio_blocks(count, frames=480, start_ns=1_000_000_000, gap_after=None):
    blocks, ts = [], start_ns
    for k in range(count):
        blocks.append(audio_packet("mic", ts, k, np.zeros((frames, 7), np.int32), 48000))
        ts += round(frames * 1e9 / 48000) + (50_000_000 if k == gap_after else 0)
    return blocks


def test_jsonl_writes_one_parsable_line_per_packet(tmp_path):
    path = tmp_path / "out" / "events.jsonl"
    packets = [
        Packet("metrics", 10, 0, {"psnr": 31.25, "bpp": np.float32(0.5), "mse": float("nan")},
               {"node": "enc"}),
        image_packet("camera-rgb", 20, 0, np.zeros((4, 6, 3), np.uint8)),
        Packet("encoded", 30, 1, b"\x00" * 77, {"codec": "dance"}),
    ]
    feed(JsonlSink(name="log", path=str(path)), packets)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 3
    assert lines[0] == {"stream": "metrics", "timestamp_ns": 10, "seq": 0,
                        "meta": {"node": "enc"},
                        "payload": {"psnr": 31.25, "bpp": 0.5, "mse": None}}
    assert lines[1]["payload"] == {"dtype": "uint8", "shape": [4, 6, 3], "nbytes": 72}
    assert lines[1]["meta"]["pixel_format"] == "rgb24"
    assert lines[2]["payload"] == {"dtype": "bytes", "nbytes": 77}


def test_jsonl_lines_are_on_disk_before_teardown(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(name="log", path=str(path))
    sink.attach(lambda port, packet: None, threading.Event())
    sink.setup()
    sink.handle("packets", Packet("metrics", 1, 0, {"x": 1}))
    assert json.loads(path.read_text())["payload"] == {"x": 1}
    sink.teardown()


def test_stats_counts_streams_bytes_and_samples(capsys):
    frames = [image_packet("camera-rgb", 1_000_000_000 + k * 50_000_000, k,
                           np.zeros((8, 8, 3), np.uint8)) for k in range(5)]
    stats = feed(StatsSink(name="stats"), frames + audio_blocks(4))
    rgb, mic = stats.summary["camera-rgb"], stats.summary["mic"]
    assert (rgb["packets"], rgb["bytes"], rgb["shape"], rgb["dtype"]) == (5, 960, [8, 8, 3],
                                                                         "uint8")
    assert rgb["monotonic"] and rgb["seq_gaps"] == 0 and abs(rgb["rate_hz"] - 20.0) < 1e-6
    assert (mic["samples"], mic["channels"], mic["sample_rate"]) == (1920, 7, 48000)
    assert mic["audio_gaps"] == 0 and "samples" not in rgb
    assert stats.counters["streams"] == stats.summary
    json.dumps(stats.counters)  # the run report can carry it
    table = capsys.readouterr().out
    assert "camera-rgb" in table and "1920×7" in table and "8×8×3" in table


def test_stats_flags_time_going_backwards_lost_packets_and_audio_gaps():
    frames = [image_packet("cam", ts, seq, np.zeros((2, 2), np.uint8))
              for ts, seq in [(100, 0), (200, 1), (150, 2), (300, 5)]]
    stats = feed(StatsSink(name="stats"), frames + audio_blocks(4, gap_after=1))
    cam, mic = stats.summary["cam"], stats.summary["mic"]
    assert not cam["monotonic"] and cam["backwards"] == 1 and cam["seq_gaps"] == 2
    assert mic["monotonic"] and mic["audio_gaps"] == 1


def test_stats_prints_progress_every_n_packets(capsys):
    feed(StatsSink(name="st", print_every=2), audio_blocks(5))
    out = capsys.readouterr().out
    assert out.count("[st] ") == 3  # after packets 2 and 4, then the summary
    assert "[st] 4 packets (mic 4)" in out


def test_stats_ignores_and_counts_metadata_of_the_wrong_type():
    good = Packet("coded", 0, 0, b"abcd", {"raw_bytes": 400})
    hostile = [Packet("coded", 10, 1, b"abcd", {"raw_bytes": "x"}),
               Packet("coded", 20, 2, b"abcd", {"raw_bytes": [1]}),
               Packet("coded", 30, 3, b"abcd", {"raw_bytes": -5}),
               audio_blocks(1)[0].replace(meta={"sample_rate": "fast", "channels": 7})]
    stats = feed(StatsSink(name="stats"), [good, *hostile])
    coded = stats.summary["coded"]
    assert coded["raw_bytes"] == 400 and coded["bad_meta"] == 3 and coded["packets"] == 4
    assert stats.summary["mic"]["bad_meta"] == 1 and "sample_rate" not in stats.summary["mic"]
