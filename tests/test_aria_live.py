"""aria_live without glasses: its observer driven with the record types the SDK hands out, filled
from the sample recording, must give the packets aria_vrs gives; failures are real SDK failures."""
from __future__ import annotations

import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from nodes.aria_live import AriaLiveSource
from nodes.aria_vrs import AriaVrsSource
from pipeline.testing import run_source
from tests.conftest import dance

aria = pytest.importorskip("aria.sdk")
pytest.importorskip("projectaria_tools")
SLAM_LEFT = "1201-1"


def sdk_records(path: Path, streams=("214-1", "231-1", SLAM_LEFT)):
    """The recording as the SDK would deliver it: ("image", ImageData, ImageDataRecord) and
    ("audio", AudioData, AudioDataRecord), new record objects filled from the VRS ones."""
    from projectaria_tools.core import data_provider
    from projectaria_tools.core.sensor_data import (AudioData, AudioDataRecord, ImageDataRecord,
                                                    SensorDataType)
    from projectaria_tools.core.stream_id import StreamId

    provider = data_provider.create_vrs_data_provider(str(path))
    options = provider.get_default_deliver_queued_options()
    options.deactivate_stream_all()
    for sid in streams:
        options.activate_stream(StreamId(sid))
    for data in provider.deliver_queued_sensor_data(options):
        if data.sensor_data_type() == SensorDataType.IMAGE:
            image, vrs_record = data.image_data_and_record()
            record = ImageDataRecord()
            for field in ("camera_id", "capture_timestamp_ns", "frame_number",
                          "exposure_duration", "gain", "temperature", "arrival_timestamp_ns"):
                setattr(record, field, getattr(vrs_record, field))
            yield "image", image, record
        else:
            vrs_audio, vrs_record = data.audio_data_and_record()
            audio, record = AudioData(), AudioDataRecord()
            audio.data = list(vrs_audio.data)
            record.capture_timestamps_ns = list(vrs_record.capture_timestamps_ns)
            record.audio_muted = vrs_record.audio_muted
            yield "audio", audio, record


class RecordedGlasses:
    """Plays the sample recording into the observer from its own thread, as the SDK calls it.
    `form="pair"` uses the API reference's one-argument callbacks ((data, record) pairs)."""

    def __init__(self, observer, path: Path, form: str = "sdk", failure=None):
        self.observer, self.path, self.form, self.failure = observer, path, form, failure
        self.thread = threading.Thread(target=self.play)
        self.thread.start()

    def play(self):
        for kind, data, record in sdk_records(self.path):
            callback = getattr(self.observer, f"on_{kind}_received")
            if self.form == "pair":
                callback((data, record))
            else:  # what the installed SDK passes: images as numpy arrays
                callback(data.to_numpy_array() if kind == "image" else data, record)
        if self.failure:
            self.observer.on_streaming_client_failure(*self.failure)

    def close(self):
        self.thread.join()


class LiveFromRecording(AriaLiveSource):
    """aria_live with the recording in place of the glasses: only the device seam differs."""

    glasses: dict = {}

    def open_session(self, observer):
        return RecordedGlasses(observer, **self.glasses)


def live(limit: int, glasses: dict, **params):
    node = LiveFromRecording(name="live", **params)
    node.glasses = glasses
    return node, run_source(node, limit)


def by_stream(out):
    streams: dict[str, list] = {}
    for port, packet in out:
        streams.setdefault((port, packet.stream), []).append(packet)
    return streams


@pytest.mark.parametrize("form", ["sdk", "pair"])
def test_live_packets_equal_the_replayed_ones(aea_vrs, form):
    _, got = live(12, {"path": aea_vrs, "form": form}, idle_timeout_s=5.0)
    replayed = run_source(AriaVrsSource(name="vrs", path=str(aea_vrs), speed=0.0))
    live_streams, vrs_streams = by_stream(got), by_stream(replayed)
    assert set(live_streams) == set(vrs_streams) == {("image", "camera-rgb"), ("audio", "mic")}
    assert [len(v) for v in live_streams.values()] == [len(vrs_streams[k]) for k in live_streams]
    for key, packets in vrs_streams.items():
        for mine, theirs in zip(live_streams[key], packets, strict=True):
            assert (mine.stream, mine.timestamp_ns, mine.seq) == (theirs.stream,
                                                                  theirs.timestamp_ns, theirs.seq)
            assert mine.meta == theirs.meta
            assert mine.payload.dtype == theirs.payload.dtype
            np.testing.assert_array_equal(mine.payload, theirs.payload)
    frames, blocks = vrs_streams[("image", "camera-rgb")], vrs_streams[("audio", "mic")]
    assert frames[0].payload.shape == (1408, 1408, 3) and blocks[0].payload.shape == (4096, 7)
    assert blocks[0].meta["sample_rate"] == 48000  # read from the file; live assumes it


def test_a_slow_graph_drops_the_oldest_packets_and_counts_them(aea_vrs):
    class Delivered(LiveFromRecording):
        def open_session(self, observer):
            glasses = super().open_session(observer)
            glasses.close()  # everything arrives before the graph takes a packet
            return glasses

    node = Delivered(name="live", queue=3)
    node.glasses = {"path": aea_vrs}
    got = run_source(node, 3)
    assert node.counters["dropped_in_callbacks"] == 12 - 3
    order = [(kind, int(record.capture_timestamp_ns) if kind == "image"
              else int(record.capture_timestamps_ns[0]))
             for kind, _, record in sdk_records(aea_vrs, ("214-1", "231-1"))]
    assert [(port, packet.timestamp_ns) for port, packet in got] == order[-3:]


def test_sdk_failure_after_data_delivers_what_came_before(aea_vrs):
    failure = (aria.ErrorCode.ConnectionLost, "link to the glasses lost")
    node = LiveFromRecording(name="live")
    node.glasses = {"path": aea_vrs, "failure": failure}
    got = []
    node.attach(lambda port, packet: None, threading.Event())
    node.setup()
    with pytest.raises(ConnectionError, match="^node 'live': the Aria streaming client failed: "
                                              "ConnectionLost: link to the glasses lost$"):
        for item in node.run():
            got.append(item)
    node.teardown()
    assert len(got) == 12


class SilentGlasses(AriaLiveSource):
    """Glasses that are connected but send nothing (the test calls the observer itself)."""

    def open_session(self, observer):
        return self

    def close(self):
        pass


def test_silence_from_the_glasses_is_a_disconnect():
    with pytest.raises(ConnectionError, match="node 'live': nothing from the glasses for 0.3 s"):
        run_source(SilentGlasses(name="live", idle_timeout_s=0.3))


def test_a_malformed_audio_record_is_one_clear_error():
    from projectaria_tools.core.sensor_data import AudioData, AudioDataRecord

    node = SilentGlasses(name="live")
    node.attach(lambda port, packet: None, threading.Event())
    node.setup()
    audio, record = AudioData(), AudioDataRecord()
    audio.data, record.capture_timestamps_ns = list(range(10)), [1, 2, 3]
    node.observer.on_audio_received(audio, record)  # on the test's thread, as on the SDK's
    with pytest.raises(ConnectionError, match="^node 'live': audio record of stream 231-1 has "
                                              "10 values for 3 timestamps$"):
        next(node.run())
    node.teardown()


def test_the_sdk_failure_callback_stops_the_node_with_one_line(tmp_path):
    """The real SDK, subscribing without streaming certificates, reports FileNotFound through
    on_streaming_client_failure."""
    with pytest.raises(ConnectionError, match=f"^node 'live': the Aria streaming client failed: "
                                              f"FileNotFound: .*{tmp_path}"):
        run_source(AriaLiveSource(name="live", start_streaming=False, ephemeral_certs=False,
                                  certs_path=f"{tmp_path}/"))


def test_unreachable_glasses_are_one_clear_error():
    with pytest.raises(ConnectionError, match="^node 'live': cannot connect to Aria glasses at "
                                              "127.0.0.1: .*Connection refused"):
        run_source(AriaLiveSource(name="live", ip="127.0.0.1"))


def test_no_streams_selected_is_refused():
    with pytest.raises(ValueError, match="node 'live': rgb and mic are both off"):
        run_source(AriaLiveSource(name="live", rgb=False, mic=False))


def test_dance_run_reports_unreachable_glasses_in_one_line(tmp_path):
    graph = tmp_path / "live.yaml"
    graph.write_text("nodes:\n"
                     "  - {name: glasses, type: aria_live, params: {ip: 127.0.0.1}}\n"
                     "  - {name: stats, type: stats}\n"
                     "edges:\n"
                     "  - glasses.image -> stats.packets\n"
                     "  - glasses.audio -> stats.packets\n")
    result = dance("run", graph, timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "failed" in line]
    assert len(errors) == 1 and "node 'glasses'" in errors[0]
    assert "cannot connect to Aria glasses at 127.0.0.1" in errors[0]


def test_the_graphs_in_the_live_capture_guide_validate(tmp_path):
    guide = (Path(__file__).resolve().parents[1] / "docs" / "live-capture.md").read_text()
    blocks = [block.split("```", 1)[0] for block in guide.split("```yaml\n")[1:]]
    assert len(blocks) == 2 and all("aria_live" in block for block in blocks)
    for i, block in enumerate(blocks):
        graph = tmp_path / f"guide{i}.yaml"
        graph.write_text(textwrap.dedent(block))  # the second one is indented in a list
        result = dance("validate", graph)
        assert result.returncode == 0, result.stdout + result.stderr
