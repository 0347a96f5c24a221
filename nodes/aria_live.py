"""`aria_live`: stream from Project Aria glasses into a graph, via projectaria-client-sdk.

The SDK calls an observer on its own threads. `LiveObserver` turns each callback into the packet
`aria_vrs` emits for the same record (nodes/aria_packets.py) and hands it to `run()` through a
bounded `CallbackQueue`, so a slow graph drops (and counts) the oldest packets instead of stalling
the SDK. docs/live-capture.md covers setup and a manual check with glasses.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import threading
import time
from collections import deque
from typing import Any, Iterator

import numpy as np

from dance.aria import MIC_CHANNELS, MIC_SAMPLE_RATE, MIC_STREAM, RGB_STREAM, STREAM_NAMES
from nodes.aria_packets import audio_block_packet, frame_packet
from pipeline.node import Output, Param, Source
from pipeline.packet import Packet

RGB_CAMERA_ID = 2  # ImageDataRecord.camera_id of the RGB camera (aria.sdk.CameraId.Rgb)


class CallbackQueue:
    """Packets from the SDK's threads to `run()`: bounded, the oldest dropped and counted when full.
    A failure the SDK reports is raised once the packets queued before it are delivered."""

    def __init__(self, size: int):
        self.size, self.dropped, self.failure = size, 0, ""
        self._items: deque[tuple[str, Packet]] = deque()
        self._ready = threading.Condition()

    def put(self, port: str, packet: Packet) -> None:
        with self._ready:
            if len(self._items) >= self.size:
                self._items.popleft()
                self.dropped += 1
            self._items.append((port, packet))
            self._ready.notify()

    def fail(self, message: str) -> None:
        with self._ready:
            self.failure = self.failure or message
            self._ready.notify()

    def get(self, timeout: float) -> tuple[str, Packet] | None:
        """The oldest (port, packet), or None after `timeout` seconds without one."""
        with self._ready:
            self._ready.wait_for(lambda: self._items or self.failure, timeout)
            if self._items:
                return self._items.popleft()
            if self.failure:
                raise ConnectionError(self.failure)
            return None


class LiveObserver:
    """The streaming-client observer: every RGB frame and audio block becomes the packet
    `aria_vrs` would emit for it.

    projectaria-client-sdk 2.5.1 calls `on_image_received(image, record)` (a numpy array and an
    `ImageDataRecord`) and `on_audio_received(audio, record)` (`AudioData`, `AudioDataRecord`);
    its API reference documents one `(data, record)` pair instead, so that form works too.
    An error here is reported through the queue: raising would only reach the SDK's thread.
    """

    def __init__(self, node_name: str, queue: CallbackQueue, rgb: bool = True, mic: bool = True):
        self.where, self.queue, self.rgb, self.mic = f"node '{node_name}'", queue, rgb, mic
        self._seq = {RGB_STREAM: itertools.count(), MIC_STREAM: itertools.count()}

    def on_image_received(self, image: Any, record: Any = None) -> None:
        if record is None:
            image, record = image
        if not self.rgb or record.camera_id != RGB_CAMERA_ID:
            return
        # A copy: the packet outlives the callback, the SDK's buffer may not.
        pixels = image.to_numpy_array() if hasattr(image, "to_numpy_array") else np.array(image)
        self._deliver("image", frame_packet, RGB_STREAM, pixels, record)

    def on_audio_received(self, audio: Any, record: Any = None) -> None:
        if record is None:
            audio, record = audio
        if self.mic:
            self._deliver("audio", audio_block_packet, MIC_STREAM, audio, record,
                          MIC_SAMPLE_RATE, self.where)

    def on_streaming_client_failure(self, reason: Any, message: str) -> None:
        self.queue.fail(f"{self.where}: the Aria streaming client failed: "
                        f"{getattr(reason, 'name', reason)}: {message}")

    def _deliver(self, port: str, build, sid: str, *args: Any) -> None:
        try:
            self.queue.put(port, build(STREAM_NAMES[sid], sid, next(self._seq[sid]), *args))
        except ValueError as exc:  # names the node already
            self.queue.fail(str(exc))
        except Exception as exc:
            self.queue.fail(f"{self.where}: bad {STREAM_NAMES[sid]} data from the glasses: "
                            f"{type(exc).__name__}: {exc}")


class StreamingSession:
    """The SDK side of one live session: connect, start streaming, subscribe the observer.
    `close()` undoes whatever `open` got done, newest first."""

    def __init__(self, node: "AriaLiveSource", observer: LiveObserver):
        import aria.sdk as aria

        self._undo: list = []
        try:
            self._open(aria, node, observer)
        except BaseException:
            with contextlib.suppress(ConnectionError):  # the first error is the one to report
                self.close()
            raise

    def _open(self, aria: Any, node: "AriaLiveSource", observer: LiveObserver) -> None:
        security = aria.StreamingSecurityOptions()
        security.use_ephemeral_certs = node.ephemeral_certs
        if node.certs_path:
            security.local_certs_root_path = node.certs_path
        if node.start_streaming:
            client, config = aria.DeviceClient(), aria.DeviceClientConfig()
            if node.ip:
                config.ip_v4_address = node.ip
            client.set_client_config(config)
            where = f"at {node.ip}" if node.ip else "on USB"
            try:
                device = client.connect()
            except RuntimeError as exc:
                raise ConnectionError(f"node '{node.name}': cannot connect to Aria glasses "
                                      f"{where}: {exc}") from None
            self._undo.append(lambda: client.disconnect(device))
            manager = device.streaming_manager
            streaming = aria.StreamingConfig()
            streaming.profile_name = node.profile
            streaming.streaming_interface = (aria.StreamingInterface.Usb if node.interface == "usb"
                                             else aria.StreamingInterface.WifiStation)
            streaming.security_options = security
            manager.streaming_config = streaming
            try:
                manager.start_streaming()
            except RuntimeError as exc:
                raise ConnectionError(f"node '{node.name}': the glasses {where} did not start "
                                      f"streaming {node.profile} over {node.interface}: "
                                      f"{exc}") from None
            self._undo.append(manager.stop_streaming)
            streaming_client = manager.streaming_client
        else:
            streaming_client = aria.StreamingClient()
        subscription = streaming_client.subscription_config
        wanted = {kind: size for kind, size, on in (
            (aria.StreamingDataType.Rgb, node.rgb_sdk_queue, node.rgb),
            (aria.StreamingDataType.Audio, node.mic_sdk_queue, node.mic)) if on}
        subscription.subscriber_data_type = functools.reduce(operator.or_, wanted)
        for kind, size in wanted.items():
            subscription.message_queue_size[kind] = size
        subscription.security_options = security
        streaming_client.subscription_config = subscription
        streaming_client.set_streaming_client_observer(observer)
        streaming_client.subscribe()
        self._undo.append(streaming_client.unsubscribe)

    def close(self) -> None:
        errors = []
        while self._undo:
            try:
                self._undo.pop()()
            except RuntimeError as exc:
                errors.append(str(exc))
        if errors:
            raise ConnectionError("could not stop streaming cleanly: " + "; ".join(errors))


class AriaLiveSource(Source):
    """Stream live from Aria glasses: the same camera-rgb and mic packets `aria_vrs` replays.

    Connects through projectaria-client-sdk to the glasses on USB (or at `ip`), starts
    streaming `profile` over `interface` and subscribes; with start_streaming false it only
    subscribes to a stream started with `aria streaming start`. Stops with one line naming the
    node when the glasses cannot be reached, the SDK reports a failure, or nothing arrives for
    idle_timeout_s."""

    image = Output("image", f"camera-rgb ({RGB_STREAM}) frames, H×W×3 uint8, stream 'camera-rgb'")
    audio = Output("audio", f"mic ({MIC_STREAM}) blocks, frames×{MIC_CHANNELS} int32 at "
                   f"{MIC_SAMPLE_RATE // 1000} kHz, stream 'mic'")
    interface = Param(str, "usb", "link the sensor data travels over", choices=("usb", "wifi"))
    ip = Param(str, "", "IPv4 address of the glasses to connect to; empty: the glasses on USB")
    profile = Param(str, "profile18", "streaming profile; profile18 has RGB and 7-channel audio")
    start_streaming = Param(bool, True, "connect and start streaming; false: only subscribe to a "
                                        "stream started elsewhere (`aria streaming start`)")
    rgb = Param(bool, True, "emit the RGB camera frames")
    mic = Param(bool, True, "emit the microphone blocks")
    ephemeral_certs = Param(bool, True, "secure the stream with certificates made for this "
                                        "session instead of the persistent ones")
    certs_path = Param(str, "", "root folder of the streaming certificates; empty: the SDK's "
                                "default (~/.aria/streaming-certs)")
    rgb_sdk_queue = Param(int, 2, "frames the SDK holds for the callback before dropping", min=1)
    mic_sdk_queue = Param(int, 32, "audio blocks the SDK holds for the callback", min=1)
    queue = Param(int, 64, "packets held between the SDK's threads and the graph; when full the "
                           "oldest is dropped and counted (dropped_in_callbacks)", min=1)
    idle_timeout_s = Param(float, 10.0, "fail when nothing arrives for this long (unplugged, "
                                        "out of Wi-Fi range, stream stopped); 0 = wait forever",
                           min=0.0)

    def open_session(self, observer: LiveObserver) -> Any:
        """Start the session that calls `observer`; the one place that needs the glasses."""
        return StreamingSession(self, observer)

    def setup(self) -> None:
        self._session = None
        if not (self.rgb or self.mic):
            raise ValueError(f"node '{self.name}': rgb and mic are both off, nothing to stream")
        self._queue = CallbackQueue(self.queue)
        self.observer = LiveObserver(self.name, self._queue, self.rgb, self.mic)
        self._session = self.open_session(self.observer)

    def run(self) -> Iterator[tuple[str, Packet]]:
        last = time.monotonic()
        while not self.stopping:
            item = self._queue.get(timeout=0.1)
            self.counters["dropped_in_callbacks"] = self._queue.dropped
            if item is not None:
                last = time.monotonic()
                yield item
            elif self.idle_timeout_s and time.monotonic() - last > self.idle_timeout_s:
                raise ConnectionError(f"node '{self.name}': nothing from the glasses for "
                                      f"{self.idle_timeout_s:g} s (disconnected, or streaming "
                                      f"stopped)")

    def teardown(self) -> None:
        if getattr(self, "_session", None) is not None:
            session, self._session = self._session, None
            try:
                session.close()
            except ConnectionError as exc:
                raise ConnectionError(f"node '{self.name}': {exc}") from None
