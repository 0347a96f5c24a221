"""Recording files: an append-only, crash-safe sequence of wire-format packets.

Layout (docs/record-format.md): a 16-byte file header, then records of
`length u32 | crc32 u32 | kind u8 | body`, where a packet record's body is the packet's wire
frames packed by `wire.to_bytes`. A clean `close()` appends an index record (offset, timestamp,
seq and stream of every packet) and a 16-byte trailer pointing at it. Readers never need the
index: they scan records from the start, so a file cut off by kill -9 or a power loss reads up to
its last whole record and reports the bytes after it.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from . import wire
from .packet import Packet

MAGIC = b"DANCEREC"
VERSION = 1
_FILE_HEADER = struct.Struct("<8sII")  # magic, version, reserved
_RECORD_HEADER = struct.Struct("<II")  # body length (kind byte included), crc32 of the body
_TRAILER = struct.Struct("<Q8s")  # offset of the index record, trailer magic
TRAILER_MAGIC = b"DRECIDX1"
KIND_PACKET, KIND_INDEX = 0, 1
MAX_RECORD_BYTES = wire.DEFAULT_MAX_BYTES + (1 << 20)
INDEX_DTYPE = np.dtype([("offset", "<u8"), ("timestamp_ns", "<i8"), ("seq", "<u8"),
                        ("stream", "<u4")])


class RecordError(ValueError):
    """A recording file that cannot be read; the message names the file and the byte offset."""


@dataclass
class RecordIndex:
    """Where each packet of a cleanly closed file starts: `entries` is an INDEX_DTYPE array whose
    `stream` field indexes `streams`."""

    streams: list[str]
    entries: np.ndarray

    def offsets(self, stream: str) -> np.ndarray:
        if stream not in self.streams:
            return np.empty(0, dtype="<u8")
        return self.entries["offset"][self.entries["stream"] == self.streams.index(stream)]


class RecordWriter:
    """Append packets to a new recording file; every record is flushed to the OS as written.

    With `fsync=True` each record is also forced to disk, so even a power loss keeps every packet
    written before it (at the cost of one disk sync per packet).
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync
        self._file = open(self.path, "wb")
        self._offset = 0
        self._streams: dict[str, int] = {}
        self._index: list[tuple[int, int, int, int]] = []
        self._append(_FILE_HEADER.pack(MAGIC, VERSION, 0))

    def write(self, packet: Packet) -> None:
        blob = wire.to_bytes(wire.encode(packet))
        stream = self._streams.setdefault(packet.stream, len(self._streams))
        self._index.append((self._offset, packet.timestamp_ns, packet.seq, stream))
        self._write_record(KIND_PACKET, blob)

    def close(self) -> None:
        """Append the index and the trailer; the file stays readable if this never happens."""
        if self._file.closed:
            return
        entries = np.array(self._index, dtype=INDEX_DTYPE)
        streams = json.dumps(list(self._streams)).encode()
        index_offset = self._offset
        self._write_record(KIND_INDEX, struct.pack("<I", len(streams)) + streams
                           + entries.tobytes())
        self._append(_TRAILER.pack(index_offset, TRAILER_MAGIC))
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def count(self) -> int:
        return len(self._index)

    def _write_record(self, kind: int, blob: bytes) -> None:
        body_len = 1 + len(blob)
        if body_len > MAX_RECORD_BYTES:
            raise RecordError(f"{self.path}: record of {body_len} bytes exceeds the limit of "
                              f"{MAX_RECORD_BYTES}")
        kind_byte = bytes((kind,))
        crc = zlib.crc32(blob, zlib.crc32(kind_byte))
        self._append(_RECORD_HEADER.pack(body_len, crc) + kind_byte, blob)

    def _append(self, *parts: bytes) -> None:
        for part in parts:
            self._file.write(part)
            self._offset += len(part)
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())


class RecordReader:
    """Iterate the packets of a recording file by scanning it from the start.

    After iteration, `trailing_bytes` is how many bytes after the last whole record were ignored
    (a write cut off by a crash), and `complete` says whether the file was closed cleanly.
    A damaged record followed by more data raises RecordError naming the file and offset.
    """

    def __init__(self, path: str | os.PathLike, max_bytes: int = wire.DEFAULT_MAX_BYTES):
        self.path = Path(path)
        self.max_bytes = max_bytes
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such recording file")
        self.size = self.path.stat().st_size
        with open(self.path, "rb") as file:
            head = file.read(_FILE_HEADER.size)
        if len(head) < _FILE_HEADER.size or head[:len(MAGIC)] != MAGIC:
            raise RecordError(f"{self.path}: not a dance recording (bad file header)")
        _, version, _ = _FILE_HEADER.unpack(head)
        if version != VERSION:
            raise RecordError(f"{self.path}: recording format version {version} is not "
                              f"supported (this build reads {VERSION})")
        self.trailing_bytes = 0
        self.complete = False
        self.count = 0

    def __iter__(self) -> Iterator[Packet]:
        for _, packet in self.scan():
            yield packet

    def scan(self, start: int = _FILE_HEADER.size) -> Iterator[tuple[int, Packet]]:
        """Yield (offset, packet) for every whole packet record from byte `start` on."""
        self.trailing_bytes, self.complete, self.count = 0, False, 0
        with open(self.path, "rb") as file:
            file.seek(start)
            offset = start
            while offset < self.size:
                record = self._read_record(file, offset)
                if record is None:
                    if self._trailer_offset(file) is not None:
                        raise RecordError(f"{self.path}: record at byte {offset} runs past the "
                                          f"end of a cleanly closed file")
                    self.trailing_bytes = self.size - offset
                    return
                kind, body, end = record
                if kind == KIND_INDEX:
                    self.complete = self._check_trailer(file, offset, end)
                    self.trailing_bytes = 0 if self.complete else self.size - end
                    return
                try:
                    packet, _ = wire.decode(wire.from_bytes(body), self.max_bytes)
                except wire.WireError as exc:
                    raise RecordError(f"{self.path}: record at byte {offset} holds no valid "
                                      f"packet: {exc}") from None
                self.count += 1
                yield offset, packet
                offset = end

    def read_at(self, offset: int) -> Packet:
        """The packet whose record starts at `offset` (an offset from `index()`)."""
        with open(self.path, "rb") as file:
            record = self._read_record(file, offset)
        if record is None or record[0] != KIND_PACKET:
            raise RecordError(f"{self.path}: no packet record at byte {offset}")
        return wire.decode(wire.from_bytes(record[1]), self.max_bytes)[0]

    def index(self) -> RecordIndex | None:
        """The index of a cleanly closed file, or None (then scan instead)."""
        with open(self.path, "rb") as file:
            index_offset = self._trailer_offset(file)
            if index_offset is None:
                return None
            try:
                record = self._read_record(file, index_offset)
            except RecordError:
                return None
        if record is None or record[0] != KIND_INDEX:
            return None
        return self._parse_index(record[1], index_offset)

    def _parse_index(self, body: memoryview, offset: int) -> RecordIndex:
        """The index record's streams and entries, each field checked (RecordError if not)."""
        problem = f"{self.path}: index record at byte {offset} is malformed"
        if len(body) < 4:
            raise RecordError(problem)
        (names_len,) = struct.unpack_from("<I", body)
        rest = len(body) - 4 - names_len
        if rest < 0 or rest % INDEX_DTYPE.itemsize:
            raise RecordError(problem)
        try:
            streams = json.loads(bytes(body[4:4 + names_len]))
        except ValueError:
            raise RecordError(f"{problem} (stream names)") from None
        if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
            raise RecordError(f"{problem} (stream names)")
        entries = np.frombuffer(body, dtype=INDEX_DTYPE, offset=4 + names_len)
        if len(entries) and int(entries["stream"].max()) >= len(streams):
            raise RecordError(f"{problem} (stream numbers)")
        return RecordIndex(streams, entries)

    def _trailer_offset(self, file) -> int | None:
        """The index offset a valid-looking trailer points at, else None."""
        if self.size < _FILE_HEADER.size + _TRAILER.size:
            return None
        file.seek(self.size - _TRAILER.size)
        index_offset, magic = _TRAILER.unpack(file.read(_TRAILER.size))
        if magic != TRAILER_MAGIC or not _FILE_HEADER.size <= index_offset < self.size:
            return None
        return index_offset

    def _read_record(self, file, offset: int) -> tuple[int, memoryview, int] | None:
        """(kind, body, end offset) of the record at `offset`; None if it is a torn tail."""
        file.seek(offset)
        header = file.read(_RECORD_HEADER.size + 1)
        if len(header) < _RECORD_HEADER.size + 1:
            return None
        body_len, crc = _RECORD_HEADER.unpack_from(header)
        end = offset + _RECORD_HEADER.size + body_len
        if body_len == 0 or body_len > MAX_RECORD_BYTES or header[-1] not in (KIND_PACKET,
                                                                             KIND_INDEX):
            self._damaged(file, offset, "bad record header")     # raises unless a torn tail
            return None
        if end > self.size:
            return None
        blob = memoryview(file.read(body_len - 1))
        if zlib.crc32(blob, zlib.crc32(header[-1:])) != crc:
            self._damaged(file, offset, "CRC mismatch", end)
            return None
        return header[-1], blob, end

    def _damaged(self, file, offset: int, why: str, end: int | None = None) -> None:
        """A bad record is a torn tail if nothing but zeros (or nothing) follows it."""
        file.seek(offset if end is None else end)
        while chunk := file.read(1 << 20):
            if chunk.count(0) != len(chunk):
                raise RecordError(f"{self.path}: corrupt record at byte {offset} ({why}) "
                                  f"followed by more data")

    def _check_trailer(self, file, index_offset: int, end: int) -> bool:
        """True for the trailer of a clean close; False for one cut short (a crash during
        close: every packet is whole, the file reads as not closed cleanly)."""
        expected = _TRAILER.pack(index_offset, TRAILER_MAGIC)
        file.seek(end)
        trailer = file.read(len(expected) + 1)
        if trailer == expected:
            return True
        if len(trailer) < len(expected) and expected.startswith(trailer):
            return False
        raise RecordError(f"{self.path}: {self.size - end} unexpected bytes after the index "
                          f"record at byte {index_offset}")


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.recordfile FILE...`: per-stream counts and the state of each file."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    for name in args.files:
        try:
            reader = RecordReader(name)
            streams: dict[str, list[int]] = {}
            for packet in reader:
                entry = streams.setdefault(packet.stream, [0, 0, packet.timestamp_ns, 0])
                entry[0] += 1
                entry[1] += packet.nbytes
                entry[3] = packet.timestamp_ns
        except (OSError, RecordError) as exc:
            print(f"error: {exc}")
            return 1
        state = "closed cleanly" if reader.complete else (
            f"not closed cleanly, {reader.trailing_bytes} trailing bytes ignored")
        print(f"{name}: {reader.count} packets, {state}")
        for stream, (count, nbytes, first, last) in streams.items():
            print(f"  {stream:<20} {count:>8} packets {nbytes:>14} bytes  "
                  f"{(last - first) / 1e9:10.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
