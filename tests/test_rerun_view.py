"""rerun_view on the sample recording: the .rrd it writes, read back with rerun's own reader, holds
the frames, waveforms, labels, metrics and link figures on the device-clock timeline."""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from nodes.aria_vrs import AriaVrsSource
from nodes.codec import Decode, Encode
from nodes.rerun_view import TIMELINE, RerunView, Waveform, viewer_listening
from pipeline.packet import Packet, audio_packet
from pipeline.testing import NodeHarness, feed, run_source
from tests.conftest import AEA_VRS, dance

from .dance_testing import TINY_AUDIO, TINY_IMAGE, tiny_checkpoint

rr = pytest.importorskip("rerun")
LABELS = ["indoor", "outdoor", "kitchen"]


def read_rrd(path: Path) -> dict[str, list[tuple[int | None, dict]]]:
    """{entity path: [(device time ns or None when static, {component: arrow value})]},
    ordered by time, read with rerun's RrdReader."""
    from rerun.experimental import RrdReader

    rows: dict[str, list] = defaultdict(list)
    for chunk in RrdReader(path).stream():
        batch = chunk.to_record_batch()
        names = [n for n in batch.schema.names if ":" in n and not n.startswith("rerun.")]
        times = (batch.column(TIMELINE).cast("int64").to_pylist()
                 if TIMELINE in batch.schema.names else [None] * batch.num_rows)
        for i, stamp in enumerate(times):
            values = {n: batch.column(n)[i] for n in names if batch.column(n)[i].is_valid}
            rows[chunk.entity_path.lstrip("/")].append((stamp, values))
    return {k: sorted(v, key=lambda row: -1 if row[0] is None else row[0])
            for k, v in rows.items()}


def series(rows, component="Scalars:scalars"):
    """(times, values) of the timed rows holding `component` (first instance of each row)."""
    timed = [(t, v[component].as_py()[0]) for t, v in rows if t is not None and component in v]
    return [t for t, _ in timed], [value for _, value in timed]


def free_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"rerun+http://127.0.0.1:{port}/proxy"


@pytest.fixture(scope="module")
def audio_ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "aud.pt", TINY_AUDIO)


def label_packets(frames):
    """What a CLIP node sends per frame: {label, index, probs, max_logit, confident}."""
    out = []
    for frame in frames:
        index = frame.seq % len(LABELS)
        probs = [0.1, 0.1, 0.1]
        probs[index] = 0.8
        out.append(Packet(frame.stream, frame.timestamp_ns, frame.seq,
                          {"label": LABELS[index], "index": index, "probs": probs,
                           "max_logit": 20.0 + frame.seq, "confident": True}))
    return out


def metric_packets(blocks):
    """Per audio block figures as an evaluation node sends them, with non-numeric entries."""
    return [Packet("spatial", block.timestamp_ns, block.seq,
                   {"ssdr_db": 10.5 + block.seq, "srdr_db": -3.0 + block.seq,
                    "retention": 0.9, "codec": "aria-audio", "motion": None, "ok": True})
            for block in blocks]


@pytest.fixture(scope="module")
def viewed(audio_ckpt, tmp_path_factory):
    """The sample recording, its audio encoded and decoded by a tiny codec, hand-built label
    and metric packets, all through rerun_view into an .rrd (no viewer listening)."""
    if not AEA_VRS.exists():
        pytest.skip(f"sample AEA recording not found at {AEA_VRS}")
    replayed = run_source(AriaVrsSource(name="vrs", path=str(AEA_VRS), speed=0.0))
    frames = [p for port, p in replayed if port == "image"]
    blocks = [p for port, p in replayed if port == "audio"]
    encoded = [p for _, p in feed(Encode(name="enc", checkpoint=str(audio_ckpt)), "audio", blocks)]
    decoded = [p for _, p in feed(Decode(name="dec", checkpoint=str(audio_ckpt)), "encoded",
                                  encoded)]
    inputs = ([("frames", p) for p in frames] + [("audio", p) for p in blocks]
              + [("labels", p) for p in label_packets(frames)]
              + [("metrics", p) for p in metric_packets(blocks)]
              + [("encoded", p) for p in encoded] + [("decoded_audio", p) for p in decoded])
    path = tmp_path_factory.mktemp("view") / "view.rrd"
    node = RerunView(name="view", path=str(path), connect=free_url())
    with NodeHarness(node) as harness:
        for port, packet in sorted(inputs, key=lambda item: item[1].timestamp_ns):
            harness.send(port, packet)
    assert node.counters["rerun"] == str(path)
    return {"rrd": read_rrd(path), "path": path, "frames": frames, "blocks": blocks,
            "encoded": encoded}


def test_frames_are_logged_whole_at_their_capture_times(viewed):
    rows, frames = viewed["rrd"]["frames/original/camera-rgb"], viewed["frames"]
    assert [t for t, _ in rows] == [f.timestamp_ns for f in frames]
    for (_, values), frame in zip(rows, frames):
        layout = values["Image:format"].as_py()[0]
        assert (layout["width"], layout["height"]) == (1408, 1408)
    pixels = rows[3][1]["Image:buffer"].values[0].values.to_numpy()
    np.testing.assert_array_equal(pixels, frames[3].payload.reshape(-1))


def test_labels_become_a_text_log_probability_bars_and_series(viewed):
    rrd, frames = viewed["rrd"], viewed["frames"]
    texts = [(t, v["TextLog:text"].as_py()[0]) for t, v in rrd["labels/camera-rgb"]
             if "TextLog:text" in v]
    assert texts == [(f.timestamp_ns, f"{LABELS[f.seq % 3]} (80%)") for f in frames]
    bars = [v["BarChart:values"].as_py()[0]["buffer"] for _, v in rrd["labels/camera-rgb/probs"]]
    assert bars == [packet.payload["probs"] for packet in label_packets(frames)]
    stamps, logits = series(rrd["labels/camera-rgb/max_logit"])
    assert stamps == [f.timestamp_ns for f in frames]
    assert logits == [20.0 + f.seq for f in frames]
    assert series(rrd["labels/camera-rgb/probability"])[1] == [0.8] * 8


def test_every_numeric_metric_is_a_series_and_nothing_else(viewed):
    rrd, blocks = viewed["rrd"], viewed["blocks"]
    stamps = [b.timestamp_ns for b in blocks]
    assert series(rrd["metrics/spatial/ssdr_db"]) == (stamps, [10.5 + b.seq for b in blocks])
    assert series(rrd["metrics/spatial/srdr_db"]) == (stamps, [-3.0 + b.seq for b in blocks])
    assert series(rrd["metrics/spatial/retention"]) == (stamps, [0.9] * 4)
    assert sorted(k for k in rrd if k.startswith("metrics/")) == [
        "metrics/spatial/retention", "metrics/spatial/srdr_db", "metrics/spatial/ssdr_db"]


def test_link_bytes_per_second_ratio_and_input_rates(viewed):
    rrd, encoded, frames = viewed["rrd"], viewed["encoded"], viewed["frames"]
    stamps = [p.timestamp_ns for p in encoded]
    sizes = [len(p.payload) for p in encoded]
    times, rates = series(rrd["link/mic/bytes_per_s"])
    assert times == stamps[1:]  # a rate needs two packets
    span_s = (stamps[-1] - stamps[0]) / 1e9  # < rate_window_s: all four count
    assert rates[-1] == pytest.approx(3 / span_s * np.mean(sizes))
    assert series(rrd["link/mic/ratio"])[1] == pytest.approx(
        [p.meta["raw_bytes"] / len(p.payload) for p in encoded])
    frame_span_s = (frames[-1].timestamp_ns - frames[0].timestamp_ns) / 1e9
    assert series(rrd["rates/frames/camera-rgb"])[1][-1] == pytest.approx(7 / frame_span_s)
    assert len(series(rrd["rates/labels/camera-rgb"])[0]) == 7
    assert len(series(rrd["rates/encoded/mic"])[0]) == 3


def test_waveforms_are_the_peak_of_each_bin_per_channel(viewed):
    rrd, blocks = viewed["rrd"], viewed["blocks"]
    signal = np.concatenate([b.payload for b in blocks]).astype(np.float64) / 2.0 ** 31
    bins = signal[:len(signal) // 48 * 48].reshape(-1, 48, 7)  # 1000 points/s at 48 kHz
    expected = np.array([[column[np.abs(column).argmax()] for column in b.T] for b in bins])
    rows = [(t, v["Scalars:scalars"].as_py()) for t, v in rrd["audio/original/mic"]
            if t is not None]
    assert len(rows) == 16384 // 48
    np.testing.assert_allclose([v for _, v in rows], expected)
    start = blocks[0].timestamp_ns
    offsets = np.array([t for t, _ in rows]) - start - np.arange(len(rows)) * 1_000_000
    assert np.abs(offsets).max() < 1e9 / 48000  # within a sample of the device clock
    names = [v for t, v in rrd["audio/original/mic"] if t is None][0]["SeriesLines:names"]
    assert names.as_py() == [f"ch{c}" for c in range(7)]
    assert len([t for t, _ in rrd["audio/decoded/mic"] if t is not None]) == 16384 // 48


def test_the_recording_carries_a_side_by_side_blueprint(viewed):
    from rerun.experimental import RrdReader

    assert len(RrdReader(viewed["path"]).blueprints()) == 1


def test_waveform_block_by_block_equals_the_whole_signal():
    rng = np.random.default_rng(3)
    signal = rng.integers(-2**31, 2**31 - 1, (10_007, 3), dtype=np.int64).astype(np.int32)
    whole_times, whole = Waveform(1000, 48000).add(signal, 5_000)
    blockwise, times, start = Waveform(1000, 48000), [], 0
    parts = []
    for size in [1, 47, 48, 1000, 3, 4096, 2000, 2812]:
        block = signal[start:start + size]
        stamp, peaks = blockwise.add(block, 5_000 + round(start * 1e9 / 48000))
        times.append(stamp)
        parts.append(peaks)
        start += size
    assert start == len(signal)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert np.abs(np.concatenate(times) - whole_times).max() <= 1


def test_audio_without_a_sample_rate_is_one_clear_error(tmp_path):
    block = audio_packet("mic", 1_000, 0, np.zeros((64, 2), np.int32), 48000)
    del block.meta["sample_rate"]
    node = RerunView(name="view", path=str(tmp_path / "v.rrd"), connect="")
    with pytest.raises(ValueError, match="node 'view': audio stream 'mic' on input 'audio' has "
                                         "no sample_rate"):
        feed(node, "audio", [block])


def test_a_connect_value_that_is_no_url_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="node 'view': connect 'localhost:9876' is not a viewer "
                                         "URL"):
        feed(RerunView(name="view", path=str(tmp_path / "v.rrd"), connect="localhost:9876"),
             "metrics", [])


def brightness_rows(path: Path) -> list:
    try:
        return read_rrd(path).get("metrics/scene/brightness", [])
    except ValueError:  # not written yet, or no whole recording header yet
        return []


@pytest.mark.filterwarnings("ignore:RRD file has no footer")  # the server writes a plain stream
@pytest.mark.skipif(not shutil.which("rerun", path=str(Path(sys.executable).parent)),
                    reason="the rerun CLI is not installed beside this Python")
def test_streams_to_a_listening_viewer_instead_of_the_file(tmp_path):
    """A real Rerun server (`rerun --save`, no window) receives what the node sends."""
    url, received, fallback = free_url(), tmp_path / "received.rrd", tmp_path / "fallback.rrd"
    port = url.split(":")[2].split("/")[0]
    server = subprocess.Popen([str(Path(sys.executable).parent / "rerun"), "--port", port,
                               "--bind", "127.0.0.1", "--save", str(received)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not viewer_listening(url) and time.monotonic() < deadline:
            time.sleep(0.1)
        node = RerunView(name="view", path=str(fallback), connect=url)
        feed(node, "metrics", [Packet("scene", 1_000 + i * 10**8, i, {"brightness": i / 2})
                               for i in range(5)])
        assert node.counters["rerun"] == url
        while time.monotonic() < deadline and len(brightness_rows(received)) < 5:
            time.sleep(0.2)  # the server writes what it receives on its own schedule
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=90)  # a loaded box: the viewer flushes its .rrd before it exits
    assert not fallback.exists()
    assert series(brightness_rows(received)) == (
        [1_000 + i * 10**8 for i in range(5)], [i / 2 for i in range(5)])


def test_a_graph_on_the_sample_recording_writes_an_rrd(aea_vrs, audio_ckpt, tmp_path):
    """aria_vrs -> tiny DANCE image and audio codecs -> decode -> scene statistics, all into
    rerun_view, run by `dance run` (a window of two frames and one audio block)."""
    image_ckpt = tiny_checkpoint(tmp_path / "img.pt", TINY_IMAGE)
    rrd = tmp_path / "graph.rrd"
    graph = tmp_path / "view.yaml"
    graph.write_text(f"""
nodes:
  - {{name: vrs, type: aria_vrs, params: {{path: "{aea_vrs}", speed: 0, end_s: 0.1}}}}
  - {{name: encode_image, type: encode, params: {{checkpoint: "{image_ckpt}"}}}}
  - {{name: encode_audio, type: encode, params: {{checkpoint: "{audio_ckpt}"}}}}
  - {{name: decode_image, type: decode, params: {{checkpoint: "{image_ckpt}"}}}}
  - {{name: decode_audio, type: decode, params: {{checkpoint: "{audio_ckpt}"}}}}
  - {{name: scene, type: "examples.brightness:SceneStats"}}
  - {{name: view, type: rerun_view, params: {{path: "{rrd}", connect: "{free_url()}"}}}}
edges:
  - vrs.image -> encode_image.image
  - vrs.audio -> encode_audio.audio
  - encode_image.encoded -> decode_image.encoded
  - encode_audio.encoded -> decode_audio.encoded
  - decode_image.image -> scene.image
  - vrs.image -> view.frames
  - vrs.audio -> view.audio
  - decode_image.image -> view.decoded_frames
  - decode_audio.audio -> view.decoded_audio
  - scene.metrics -> view.metrics
  - encode_image.encoded -> view.encoded
  - encode_audio.encoded -> view.encoded
""")
    result = dance("run", graph, timeout=300)
    assert result.returncode == 0, result.stderr
    stored, frame_times = read_rrd(rrd), [86385246037, 86435217662]
    assert [t for t, _ in stored["frames/original/camera-rgb"]] == frame_times
    assert [t for t, _ in stored["frames/decoded/camera-rgb"]] == frame_times
    assert series(stored["metrics/scene/brightness"])[0] == frame_times
    assert series(stored["metrics/scene/motion"])[0] == frame_times[1:]  # none for the first
    assert series(stored["link/camera-rgb/bytes_per_s"])[0] == frame_times[1:]
    assert len(series(stored["link/camera-rgb/ratio"])[0]) == 2
    assert series(stored["link/mic/ratio"])[0] == [86408734764]
    assert len([t for t, _ in stored["audio/original/mic"] if t is not None]) == 4096 // 48


def test_the_graph_in_the_viewer_guide_validates(tmp_path, aea_vrs):
    guide = (Path(__file__).resolve().parents[1] / "docs" / "viewer.md").read_text()
    blocks = [block.split("```", 1)[0] for block in guide.split("```yaml\n")[1:]]
    assert len(blocks) == 1 and "rerun_view" in blocks[0]
    graph = tmp_path / "guide.yaml"
    graph.write_text(blocks[0])
    # the guide's relative path is relative to where the file is saved (the repository root)
    result = dance("validate", graph, "--set", f"vrs.path={aea_vrs}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_jpeg_quality_sends_compressed_frames(aea_vrs, tmp_path):
    frame = run_source(AriaVrsSource(name="vrs", path=str(aea_vrs), speed=0.0, mic=False), 1)[0][1]
    path = tmp_path / "jpeg.rrd"
    feed(RerunView(name="view", path=str(path), connect="", jpeg_quality=80), "frames", [frame])
    (stamp, values), = read_rrd(path)["frames/original/camera-rgb"]
    assert stamp == frame.timestamp_ns and "Image:buffer" not in values
    jpeg = values["EncodedImage:blob"].values[0].values.to_numpy().tobytes()
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) < frame.payload.nbytes / 10
