"""`aria_vrs`: replay a Project Aria VRS recording through a graph, via projectaria-tools."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dance.aria import MIC_CHANNELS, MIC_SAMPLE_RATE, MIC_STREAM, RGB_STREAM, STREAM_NAMES
from dance.vrs import VrsError, open_provider, scan
from nodes.aria_packets import audio_block_packet, frame_packet
from nodes.recording import LoopClock
from pipeline.node import FILE, Output, Param, Source
from pipeline.packet import Packet
_STREAM_ID = re.compile(r"\d+-\d+")
SUPPORTED = {"IMAGE", "AUDIO", "IMU", "MAGNETOMETER", "BAROMETER"}


class AriaVrsSource(Source):
    """Replay an Aria VRS file: RGB frames, 7-channel audio blocks, optional other sensors.

    Packets come in device-time order (an audio block when its last sample is recorded); other
    sensors are IMU, SLAM/eye cameras, barometer and magnetometer streams."""

    image = Output("image", f"camera-rgb ({RGB_STREAM}) frames, H×W×3 uint8, stream 'camera-rgb'")
    audio = Output("audio", f"mic ({MIC_STREAM}) blocks, frames×{MIC_CHANNELS} int32 at "
                   f"{MIC_SAMPLE_RATE // 1000} kHz, stream 'mic'")
    sensor = Output("sensor", "the extra_streams, each on a stream named by its label")
    path = Param(str, doc="VRS file to replay", path=FILE)
    rgb = Param(bool, True, "emit the RGB camera frames")
    mic = Param(bool, True, "emit the microphone blocks")
    extra_streams = Param(list, [], "other streams by label or id, e.g. ['imu-right', '1201-1']")
    speed = Param(float, 1.0, "real-time factor; 0 = as fast as possible", min=0.0)
    start_s = Param(float, 0.0, "skip this many seconds after the first record", min=0.0)
    end_s = Param(float, 0.0, "stop this many seconds after the first record; 0 = at the end",
                  min=0.0)
    loop = Param(bool, False, "start over at the end, timestamps continuing to increase")

    @classmethod
    def check(cls, params: dict, wiring) -> Iterator[tuple[str, str]]:
        """The VRS file's headers, index and records, as setup() checks them (dance/vrs.py)."""
        try:
            scan(Path(params["path"]))
        except (FileNotFoundError, VrsError) as exc:
            yield "path", str(exc)

    def setup(self) -> None:
        path = Path(self.path)
        provider, self._scan = open_provider(path)
        from projectaria_tools.core.sensor_data import SensorDataType, TimeDomain
        from projectaria_tools.core.stream_id import StreamId

        self._device_time, self._record_time = TimeDomain.DEVICE_TIME, TimeDomain.RECORD_TIME
        self._skipped: dict[str, int] = {}
        self.counters["skipped_records"] = self._skipped
        present = {str(sid) for sid in provider.get_all_streams()}
        wanted = {RGB_STREAM: self.rgb, MIC_STREAM: self.mic}
        for sid, label in STREAM_NAMES.items():
            if wanted[sid] and sid not in present:
                raise ValueError(f"{path}: not an Aria recording: no {label} ({sid}) stream "
                                 f"(streams: {', '.join(sorted(present)) or 'none'})")
        self._names: dict[str, str] = dict(STREAM_NAMES)
        for entry in self.extra_streams:
            entry = str(entry)
            sid = entry if _STREAM_ID.fullmatch(entry) else str(
                provider.get_stream_id_from_label(entry) or entry)
            if sid not in present:
                raise ValueError(f"{path}: no stream '{entry}' (streams: "
                                 + ", ".join(f"{s} {self._label(provider, s)}"
                                             for s in sorted(present)) + ")")
            self._names[sid] = self._label(provider, sid)
            wanted[sid] = True
        active = [sid for sid, on in wanted.items() if on]
        if not active:
            raise ValueError(f"node '{self.name}': rgb, mic and extra_streams select no stream")
        kinds = {sid: provider.get_sensor_data_type(StreamId(sid)) for sid in active}
        for sid, kind in kinds.items():
            if kind.name not in SUPPORTED:
                raise ValueError(f"node '{self.name}': stream {sid} ({self._names[sid]}) of type "
                                 f"{kind.name} is not supported (supported: "
                                 f"{', '.join(sorted(SUPPORTED))})")
        self._sample_rates = {
            sid: int(provider.get_audio_configuration(StreamId(sid)).sample_rate)
            for sid, kind in kinds.items() if kind == SensorDataType.AUDIO}
        for sid, rate in self._sample_rates.items():
            if not 0 < rate <= 1_000_000:
                raise ValueError(f"{path}: stream {sid} has an unusable audio configuration "
                                 f"(sample rate {rate})")
        options = provider.get_default_deliver_queued_options()
        options.deactivate_stream_all()
        for sid in active:
            options.activate_stream(StreamId(sid))
        first = provider.get_first_time_ns_all_streams(self._device_time)
        last = provider.get_last_time_ns_all_streams(self._device_time)
        if self.start_s * 1e9 >= last - first:
            raise ValueError(f"node '{self.name}': start_s {self.start_s} is beyond the end of "
                             f"{path} ({(last - first) / 1e9:.3f} s long)")
        options.set_truncate_first_device_time_ns(round(self.start_s * 1e9))
        if self.end_s:
            if self.end_s <= self.start_s:
                raise ValueError(f"node '{self.name}': end_s {self.end_s} must exceed "
                                 f"start_s {self.start_s}")
            options.set_truncate_last_device_time_ns(max(0, last - first
                                                         - round(self.end_s * 1e9)))
        self._provider, self._options = provider, options

    def run(self) -> Iterator[tuple[str, Packet]]:
        try:
            yield from self._replay()
        finally:
            if self._skipped:
                counts = ", ".join(f"{sid}: {n}" for sid, n in sorted(self._skipped.items()))
                print(f"warning: node '{self.name}': {self.path}: skipped "
                      f"{sum(self._skipped.values())} damaged record(s) ({counts})",
                      file=sys.stderr, flush=True)

    def _replay(self) -> Iterator[tuple[str, Packet]]:
        clock, seq, passes = LoopClock(), {}, 0
        while True:
            for data in self._provider.deliver_queued_sensor_data(self._options):
                if self.stopping:
                    return
                sid = str(data.stream_id())
                built = self._intact_packet(sid, data, seq.get(sid, 0))
                if built is None:
                    self._skipped[sid] = self._skipped.get(sid, 0) + 1
                    continue
                port, packet = built
                seq[sid] = packet.seq + 1
                if passes == 0:
                    clock.observe(packet)
                # An audio block is complete (and so due) at its last sample.
                due = data.get_time_ns(self._device_time) + clock.offset
                packet = clock.shift(packet, packet.seq)
                self.pace(due)
                yield port, packet
            if not self.loop or not seq:
                return
            passes += 1
            clock.next_loop()

    def _intact_packet(self, sid: str, data: Any, seq: int) -> tuple[str, Packet] | None:
        """The packet of a record, or None for a damaged one: listed by the scan (the library
        would hand out the previous record's content) or unreadable to the library."""
        if self._scan.is_damaged(sid, data.get_time_ns(self._record_time)):
            return None
        try:
            port, packet = self._packet(sid, data, seq)
        except (RuntimeError, ValueError):  # e.g. "bad optional access" for an unreadable image
            return None
        if sid == MIC_STREAM and packet.payload.shape[1:] != (MIC_CHANNELS,):
            return None
        return port, packet

    def _packet(self, sid: str, data: Any, seq: int) -> tuple[str, Packet]:
        from projectaria_tools.core.sensor_data import SensorDataType

        kind, name = data.sensor_data_type(), self._names[sid]
        if kind == SensorDataType.IMAGE:
            image, record = data.image_data_and_record()
            return ("image" if sid == RGB_STREAM else "sensor"), frame_packet(
                name, sid, seq, image.to_numpy_array(), record)
        if kind == SensorDataType.AUDIO:
            audio, record = data.audio_data_and_record()
            return "audio" if sid == MIC_STREAM else "sensor", audio_block_packet(
                name, sid, seq, audio, record, self._sample_rates[sid], str(self.path))
        if kind == SensorDataType.IMU:
            imu = data.imu_data()
            values = np.array([imu.accel_msec2, imu.gyro_radsec], dtype=np.float64)
            return "sensor", self._sensor(name, sid, imu.capture_timestamp_ns, seq, values,
                                          rows="accel_m_s2,gyro_rad_s")
        if kind == SensorDataType.MAGNETOMETER:
            mag = data.magnetometer_data()
            values = np.array(mag.mag_tesla, dtype=np.float64)
            return "sensor", self._sensor(name, sid, mag.capture_timestamp_ns, seq, values,
                                          unit="tesla")
        if kind == SensorDataType.BAROMETER:
            baro = data.barometer_data()
            values = np.array([baro.pressure, baro.temperature], dtype=np.float64)
            return "sensor", self._sensor(name, sid, baro.capture_timestamp_ns, seq, values,
                                          fields="pressure_pa,temperature_c")
        raise AssertionError(f"stream {sid} of type {kind.name} passed the check in setup()")

    @staticmethod
    def _sensor(name: str, sid: str, timestamp_ns: int, seq: int, values: np.ndarray,
                **meta: Any) -> Packet:
        return Packet(name, int(timestamp_ns), seq, values, dict(meta, device_stream=sid))

    @staticmethod
    def _label(provider: Any, sid: str) -> str:
        from projectaria_tools.core.stream_id import StreamId

        return provider.get_label_from_stream_id(StreamId(sid)) or sid
