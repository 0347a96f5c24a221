"""`record` writes any streams to a crash-safe file; `replay` plays such a file back with its
original timing. File layout: docs/record-format.md (pipeline/recordfile.py)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

from pipeline.node import FILE, OUTPUT, Input, Node, Output, Param, Source
from pipeline.packet import Packet
from pipeline.recordfile import RecordError, RecordReader, RecordWriter

CHECKED_PACKETS = 256  # how far `validate` scans a file without an index for its streams


class LoopClock:
    """Keeps timestamps increasing when a source replays the same recording again.

    During the first pass `observe` every packet; `next_loop()` then shifts later passes by the
    span of the first one, measured to the end of the last packet (an audio block's last sample,
    or one frame interval after the last frame) so consecutive passes never overlap.
    """

    def __init__(self) -> None:
        self.offset = 0
        self._first: int | None = None
        self._end = 0
        self._last: dict[str, tuple[int, int]] = {}  # stream -> (timestamp, interval)

    def observe(self, packet: Packet) -> None:
        ts = packet.timestamp_ns
        self._first = ts if self._first is None else min(self._first, ts)
        frames, rate = getattr(packet.payload, "shape", (0,))[0], packet.meta.get("sample_rate")
        if rate and packet.meta.get("first_sample_ns") is not None:
            interval = round(frames * 1e9 / rate)
        else:
            previous = self._last.get(packet.stream)
            interval = ts - previous[0] if previous and ts > previous[0] else (
                previous[1] if previous else 0)
        self._last[packet.stream] = (ts, interval)
        self._end = max(self._end, ts + interval)

    def next_loop(self) -> None:
        if self._first is not None:
            self.offset += max(self._end - self._first, 1)

    def shift(self, packet: Packet, seq: int) -> Packet:
        """`packet` moved by the current offset and renumbered to `seq`."""
        if not self.offset and packet.seq == seq:
            return packet
        meta = dict(packet.meta)
        if "first_sample_ns" in meta:
            meta["first_sample_ns"] += self.offset
        return packet.replace(timestamp_ns=packet.timestamp_ns + self.offset, seq=seq, meta=meta)


class Record(Node):
    """Write any streams to an append-only, crash-safe recording file.

    Any payload the wire format carries is kept as is; a file cut off by a crash stays
    readable up to its last whole packet."""

    packets = Input("any", "packets to record, of any stream")
    path = Param(str, doc="recording file to create (overwritten if it exists)", path=OUTPUT)
    fsync = Param(bool, False, "force every packet to disk (survives power loss; slower)")

    def setup(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = RecordWriter(self.path, fsync=self.fsync)

    def on_packets(self, packet: Packet) -> None:
        self._writer.write(packet)

    def teardown(self) -> None:
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.close()


class Replay(Source):
    """Play a recording file back, paced by its timestamps (speed 0 = as fast as possible)."""

    out = Output("any", "the recorded packets, streams and payloads unchanged")
    path = Param(str, doc="recording file written by `record`", path=FILE)
    speed = Param(float, 1.0, "real-time factor; 0 = as fast as possible", min=0.0)
    streams = Param(list, [], "stream names to play; empty = all")
    loop = Param(bool, False, "start over at the end, timestamps continuing to increase")

    @classmethod
    def check(cls, params: dict, wiring) -> Iterator[tuple[str, str]]:
        """The file opens, holds the wanted streams, and each stream's packets are of a type the
        inputs fed by `out` take (a raw camera stream cannot feed `decode`)."""
        path = params["path"]
        try:
            first = _first_packets(RecordReader(path))
        except (OSError, RecordError) as exc:
            yield "path", str(exc)
            return
        wanted = {str(name) for name in params["streams"]}
        if wanted - set(first):
            yield "streams", (f"{path}: no stream {', '.join(sorted(wanted - set(first)))} in "
                              f"this recording (streams: {', '.join(first) or 'none'})")
            return
        takes = wiring.outputs.get("out", set()) - {"any"}
        for stream, packet in first.items():
            kind = packet_type(packet)
            if kind and takes and (not wanted or stream in wanted) and kind not in takes:
                yield "path", (f"{path}: stream '{stream}' holds {kind} packets but `out` feeds "
                               f"inputs that take {' and '.join(sorted(takes))}; choose streams "
                               f"with `streams:`")

    def setup(self) -> None:
        self._reader = RecordReader(self.path)  # raises now for a missing or foreign file
        self._wanted = {str(name) for name in self.streams}
        index = self._reader.index()
        if index is not None and self._wanted - set(index.streams):
            missing = ", ".join(sorted(self._wanted - set(index.streams)))
            raise ValueError(f"{self.path}: no stream {missing} in this recording "
                             f"(streams: {', '.join(index.streams)})")

    def run(self) -> Iterator[Packet]:
        clock, seq_span, passes = LoopClock(), {}, 0
        while True:
            for packet in self._reader:
                if self.stopping:
                    return
                if self._wanted and packet.stream not in self._wanted:
                    continue
                if passes == 0:
                    clock.observe(packet)
                    seq_span[packet.stream] = max(seq_span.get(packet.stream, 0), packet.seq + 1)
                packet = clock.shift(packet, packet.seq + passes * seq_span[packet.stream])
                self.pace(packet.timestamp_ns)
                yield packet
            if passes == 0:
                self.counters.update(closed_cleanly=self._reader.complete,
                                     trailing_bytes=self._reader.trailing_bytes)
            if passes == 0 and not self._reader.complete:
                print(f"{self.name}: {self.path} was not closed cleanly; "
                      f"{self._reader.trailing_bytes} trailing bytes ignored", file=sys.stderr)
            if not self.loop or not seq_span:
                return
            passes += 1
            clock.next_loop()


def _first_packets(reader: RecordReader) -> dict[str, Packet]:
    """The first packet of each stream: from the index of a closed file, else from the first
    CHECKED_PACKETS packets."""
    index = reader.index()
    if index is not None:
        return {stream: reader.read_at(int(index.offsets(stream)[0])) for stream in index.streams
                if len(index.offsets(stream))}
    first: dict[str, Packet] = {}
    for count, packet in enumerate(reader):
        first.setdefault(packet.stream, packet)
        if count + 1 >= CHECKED_PACKETS:
            break
    return first


def packet_type(packet: Packet) -> str | None:
    """The port type a recorded packet plainly came from (encoded, audio, image), or None when
    its payload does not tell (dicts are metrics, labels or transcripts alike)."""
    payload, meta = packet.payload, packet.meta
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return "encoded" if "codec" in meta else "bytes"
    ndim = getattr(payload, "ndim", 0)
    if ndim == 2 and "sample_rate" in meta and "first_sample_ns" in meta:
        return "audio"
    if ndim == 3 and "width" in meta and "height" in meta:
        return "image"
    return None
