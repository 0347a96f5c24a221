"""`rerun_view`: watch a graph in the Rerun viewer, the viewer the Aria tools are built on.

Everything is logged on one timeline, `device_time`: the packets' capture time on the device clock
(nanoseconds since the glasses booted, so a `duration` timeline). Entity paths:

    frames/original/<stream>, frames/decoded/<stream>   images, shown side by side
    audio/original/<stream>, audio/decoded/<stream>     waveforms, one series per channel
    labels/<stream>                                     text log, /probs bar chart, /probability
                                                        and /max_logit series
    metrics/<stream>/<key>                              every numeric value of a metrics dict
    link/<stream>/bytes_per_s, link/<stream>/ratio      encoded bytes per second, compression
    rates/<input>/<stream>                              packets per second reaching each input
"""
from __future__ import annotations

import math
import socket
import uuid
from collections import deque
from numbers import Integral, Real
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from pipeline.node import OUTPUT, Input, Node, Param
from pipeline.packet import Packet

TIMELINE = "device_time"
FLUSH_TIMEOUT_S = 10.0


def viewer_listening(url: str, timeout_s: float = 0.5) -> bool:
    """True when something accepts connections at the host and port of a Rerun gRPC `url`."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 9876), timeout_s):
            return True
    except OSError:
        return False


class Waveform:
    """Peak-per-bin downsampling of one audio stream: each point is the sample of largest
    magnitude in its bin, per channel, at full scale ±1. A partial bin waits for the next block,
    so block-wise output equals whole-signal output."""

    def __init__(self, points_per_s: int, sample_rate: int):
        self.rate, self.bin = sample_rate, max(1, round(sample_rate / points_per_s))
        self._pending: np.ndarray | None = None
        self._pending_ns = 0

    def add(self, block: np.ndarray, first_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """(times_ns, peaks bins×channels) of the bins this block completes."""
        full_scale = (float(np.iinfo(block.dtype).max) + 1 if block.dtype.kind in "iu" else 1.0)
        samples = block.astype(np.float64) / full_scale
        if self._pending is not None:
            samples, first_ns = np.concatenate([self._pending, samples]), self._pending_ns
        used = len(samples) // self.bin * self.bin
        bins = samples[:used].reshape(-1, self.bin, samples.shape[1])
        loudest = np.abs(bins).argmax(axis=1)[:, None, :]
        peaks = np.take_along_axis(bins, loudest, axis=1)[:, 0, :]
        times = first_ns + np.round(np.arange(len(bins)) * self.bin * 1e9 / self.rate)
        self._pending = samples[used:] if used < len(samples) else None
        self._pending_ns = first_ns + round(used * 1e9 / self.rate)
        return times.astype(np.int64), peaks


class Rate:
    """Packets and bytes per second over the last `window_ns` of device time."""

    def __init__(self, window_ns: int):
        self.window_ns = window_ns
        self._seen: deque[tuple[int, int]] = deque()

    def add(self, timestamp_ns: int, nbytes: int) -> tuple[float, float] | None:
        """(packets/s, bytes/s), or None until the window spans some time."""
        self._seen.append((timestamp_ns, nbytes))
        while self._seen[0][0] < timestamp_ns - self.window_ns:
            self._seen.popleft()
        stamps = [stamp for stamp, _ in self._seen]
        span_ns = max(stamps) - min(stamps)
        if span_ns <= 0:
            return None
        per_s = (len(stamps) - 1) * 1e9 / span_ns
        return per_s, per_s * sum(size for _, size in self._seen) / len(stamps)


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


class RerunView(Node):
    """Show frames, waveforms, labels, metrics and link rates in Rerun, on the device clock.

    Streams to a viewer listening at `connect` (start one with `rerun`); when none is listening,
    writes the recording to `path` (open it later with `rerun PATH`). Original and decoded frames
    appear side by side. See docs/viewer.md."""

    frames = Input("image", "frames as captured (frames/original/<stream>)")
    decoded_frames = Input("image", "frames after decoding (frames/decoded/<stream>)")
    audio = Input("audio", "audio blocks as captured (audio/original/<stream>)")
    decoded_audio = Input("audio", "audio blocks after decoding (audio/decoded/<stream>)")
    labels = Input("labels", "classifier results {label, index, probs, max_logit}")
    metrics = Input("metrics", "dicts of figures; every numeric value becomes a series")
    encoded = Input("encoded", "DANCE containers on the link: their bytes per second and ratio")
    connect = Param(str, "rerun+http://127.0.0.1:9876/proxy", "Rerun viewer to stream to when "
                    "one listens there; empty: always write `path`")
    path = Param(str, "dance.rrd", "recording file written when no viewer listens at `connect`",
                 path=OUTPUT)
    jpeg_quality = Param(int, 0, "send frames as JPEG of this quality to spare viewer memory and "
                         "bandwidth; 0: raw pixels", min=0, max=100)
    waveform_points_per_s = Param(int, 1000, "plotted points per second and channel (the peak "
                                  "of each bin)", min=1)
    rate_window_s = Param(float, 1.0, "device-time window of the rate and bytes/s figures",
                          min=0.001)

    def setup(self) -> None:
        import rerun as rr

        if self.connect and not urlsplit(self.connect).hostname:
            raise ValueError(f"node '{self.name}': connect {self.connect!r} is not a viewer URL "
                             f"like rerun+http://127.0.0.1:9876/proxy")
        self._rr = rr
        self._waveforms: dict[tuple[str, str], Waveform] = {}
        self._rates: dict[tuple[str, str], Rate] = {}
        self.rec = rr.RecordingStream("dance", recording_id=uuid.uuid4())
        if self.connect and viewer_listening(self.connect):
            self.rec.connect_grpc(self.connect, default_blueprint=self._blueprint())
            self.counters["rerun"] = self.connect
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.rec.save(self.path, default_blueprint=self._blueprint())
            self.counters["rerun"] = str(self.path)
        print(f"[{self.name}] logging to {self.counters['rerun']}", flush=True)

    def on_frames(self, packet: Packet) -> None:
        self._frame("original", "frames", packet)

    def on_decoded_frames(self, packet: Packet) -> None:
        self._frame("decoded", "decoded_frames", packet)

    def on_audio(self, packet: Packet) -> None:
        self._waveform("original", "audio", packet)

    def on_decoded_audio(self, packet: Packet) -> None:
        self._waveform("decoded", "decoded_audio", packet)

    def on_labels(self, packet: Packet) -> None:
        rr, result = self._rr, packet.payload
        path = f"labels/{self._part(packet.stream)}"
        self._arrived("labels", packet)
        probs, index = result.get("probs"), result.get("index")
        if isinstance(probs, (list, tuple, np.ndarray)):
            self.rec.log(f"{path}/probs", rr.BarChart(np.asarray(probs, dtype=np.float64)))
            probs = (probs[index] if isinstance(index, Integral) and 0 <= index < len(probs)
                     else None)
        top = float(probs) if _number(probs) else None
        self.rec.log(path, rr.TextLog(str(result.get("label"))
                                      + (f" ({top:.0%})" if top is not None else "")))
        for key, value in (("probability", top), ("max_logit", result.get("max_logit"))):
            if _number(value):
                self.rec.log(f"{path}/{key}", rr.Scalars(float(value)))

    def on_metrics(self, packet: Packet) -> None:
        self._arrived("metrics", packet)
        for key, value in packet.payload.items():
            if _number(value):
                self.rec.log(f"metrics/{self._part(packet.stream)}/{self._part(key)}",
                             self._rr.Scalars(float(value)))

    def on_encoded(self, packet: Packet) -> None:
        figures = self._arrived("encoded", packet)
        path = f"link/{self._part(packet.stream)}"
        if figures:
            self.rec.log(f"{path}/bytes_per_s", self._rr.Scalars(figures[1]))
        raw = packet.meta.get("raw_bytes")
        if _number(raw) and packet.nbytes:
            self.rec.log(f"{path}/ratio", self._rr.Scalars(raw / packet.nbytes))

    def teardown(self) -> None:
        if getattr(self, "rec", None) is None:
            return
        rec, self.rec = self.rec, None
        try:
            rec.flush(timeout_sec=FLUSH_TIMEOUT_S)
        except Exception as exc:
            raise RuntimeError(f"node '{self.name}': could not hand everything to "
                               f"{self.counters.get('rerun', 'Rerun')} within {FLUSH_TIMEOUT_S:g} s: "
                               f"{exc}") from None
        finally:
            rec.disconnect()

    # -- helpers ---------------------------------------------------------------------------
    def _frame(self, kind: str, port: str, packet: Packet) -> None:
        self._arrived(port, packet)
        image = self._rr.Image(packet.payload)
        if self.jpeg_quality:
            image = image.compress(jpeg_quality=self.jpeg_quality)
        self.rec.log(f"frames/{kind}/{self._part(packet.stream)}", image)

    def _waveform(self, kind: str, port: str, packet: Packet) -> None:
        rr, samples = self._rr, packet.payload
        self._arrived(port, packet)
        path = f"audio/{kind}/{self._part(packet.stream)}"
        key = (kind, packet.stream)
        if key not in self._waveforms:
            rate = int(packet.meta.get("sample_rate", 0))
            if rate <= 0:
                raise ValueError(f"node '{self.name}': audio stream '{packet.stream}' on input "
                                 f"'{port}' has no sample_rate in its meta")
            self._waveforms[key] = Waveform(self.waveform_points_per_s, rate)
            self.rec.log(path, rr.SeriesLines(names=[f"ch{c}" for c in range(samples.shape[1])]),
                         static=True)
        times, peaks = self._waveforms[key].add(samples, packet.timestamp_ns)
        if len(times):
            self.rec.send_columns(path, indexes=[rr.TimeColumn(
                TIMELINE, duration=times.astype("timedelta64[ns]"))],
                columns=rr.Scalars.columns(scalars=peaks))

    def _arrived(self, port: str, packet: Packet) -> tuple[float, float] | None:
        """Put the clock at the packet and log the input's packet rate; returns
        (packets/s, bytes/s) or None."""
        self.rec.set_time(TIMELINE, duration=np.timedelta64(packet.timestamp_ns, "ns"))
        key = (port, packet.stream)
        rate = self._rates.setdefault(key, Rate(round(self.rate_window_s * 1e9)))
        figures = rate.add(packet.timestamp_ns, packet.nbytes)
        if figures:
            self.rec.log(f"rates/{port}/{self._part(packet.stream)}",
                         self._rr.Scalars(figures[0]))
        return figures

    def _part(self, name: Any) -> str:
        return self._rr.escape_entity_path_part(str(name))

    def _blueprint(self) -> Any:
        import rerun.blueprint as rrb

        return rrb.Blueprint(rrb.Vertical(
            rrb.Horizontal(rrb.Spatial2DView(origin="frames/original", name="original"),
                           rrb.Spatial2DView(origin="frames/decoded", name="decoded")),
            rrb.Horizontal(rrb.TimeSeriesView(origin="audio/original", name="audio"),
                           rrb.TimeSeriesView(origin="audio/decoded", name="decoded audio"),
                           rrb.TextLogView(origin="labels", name="labels"),
                           rrb.BarChartView(origin="labels", name="label probabilities")),
            rrb.Horizontal(rrb.TimeSeriesView(origin="/", contents=["+ metrics/**",
                                                                    "+ labels/**"],
                                              name="metrics"),
                           rrb.TimeSeriesView(origin="link", name="link"),
                           rrb.TimeSeriesView(origin="rates", name="input rates")),
            row_shares=[3, 2, 2]))
