"""The one way into VRS files: check what a file promises, then open it with projectaria-tools.

projectaria-tools trusts a file's offsets and sizes: a description-record offset that points
elsewhere segfaults it, an uncompressed-size field of 0xFFFFFFFF makes it allocate 4 GiB, and a
damaged record comes out as the previous record's content (or empty) after a log line. So the
file header, the description and index records and every record header are parsed here first
(layout: the vrs library's FileFormat.h, DescriptionRecord.cpp, IndexRecord.cpp) and checked
against the file size; damage there is one `VrsError`. Every zstd payload is then decompressed
once, bounded, to list the damaged records, which readers skip and count. A flipped byte that
still decompresses (VRS writes no checksums) cannot be seen by anyone.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import mmap
import os
import re
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

MAX_RECORD_BYTES = 64 << 20  # uncompressed payload of one record; Aria's largest are ~25 MB
MAX_LOG_BYTES = 1 << 20      # of the library's log kept per open

_MAGIC = (b"Visi", b"onRe", b"cord")
_FILE_HEADER = struct.Struct("<4s4sQIIqqqQQQ4sI")
_RECORD_HEADER = struct.Struct("<IIiIdHBBI")
_U32 = struct.Struct("<I")
_STREAM_ID_BYTES = 6  # DiskStreamId: int32 type id, uint16 instance id
_INDEX_ENTRY = np.dtype([("timestamp", "<f8"), ("size", "<u4"), ("record_type", "u1"),
                         ("type_id", "<i4"), ("instance", "<u2")])  # DiskRecordInfo
_INDEX_TYPE, _DESCRIPTION_TYPE = 1, 2          # RecordableTypeId::VRSIndex, VRSDescription
_CLASSIC_INDEX, _SPLIT_INDEX = 2, 3            # index record format versions
_NO_COMPRESSION, _LZ4, _ZSTD = 0, 1, 2
_DATA = 3                                      # Record::Type::DATA
_RECORD_TYPES = {1: "State", 2: "Configuration", 3: "Data"}
_LIBRARY_CHATTER = re.compile(r"^\[[\w:]+\]\[(INFO|DEBUG)\]: ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class VrsError(ValueError):
    """A VRS file that cannot be read safely; the message names the file."""


@dataclass(frozen=True)
class VrsScan:
    """What a checked file holds: the damaged records, by stream, as indices among that
    stream's data records (the order projectaria-tools' `get_*_by_index` uses) and as record
    times in microseconds (what `SensorData.get_time_ns(RECORD_TIME)` gives, over 1000)."""

    path: Path
    records: int
    damaged: dict[str, tuple[int, ...]]
    damaged_us: frozenset[tuple[str, int]]

    def is_damaged(self, stream: str, record_time_ns: int) -> bool:
        us = round(record_time_ns / 1000)
        return any((stream, us + d) in self.damaged_us for d in (-1, 0, 1))

    def summary(self) -> str:
        """'N damaged record(s) (stream: count, ...)', or '' when none."""
        if not self.damaged:
            return ""
        counts = ", ".join(f"{s}: {len(i)}" for s, i in sorted(self.damaged.items()))
        total = sum(len(i) for i in self.damaged.values())
        return f"{total} damaged record(s) ({counts})"


@dataclass(frozen=True)
class _Record:
    offset: int
    size: int
    type_id: int
    format_version: int
    timestamp: float
    instance: int
    record_type: int
    compression: int
    uncompressed: int


def scan(path: Path) -> VrsScan:
    """Check `path` as described above: return its `VrsScan`, or raise one line, a
    `FileNotFoundError` when it is missing and a `VrsError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such VRS file")
    stat = path.stat()
    return _scan(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _scan(path: Path, size: int, _mtime_ns: int) -> VrsScan:
    if size < _FILE_HEADER.size:
        raise VrsError(f"{path}: not a VRS file ({size} bytes, too short for a header)")
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _Checker(path, data).run()
    except OSError as exc:
        raise VrsError(f"{path}: cannot read it ({exc.strerror or exc})") from None


class _Checker:
    """One pass over a mapped file."""

    def __init__(self, path: Path, data: mmap.mmap):
        self.path, self.data, self.size = path, data, len(data)

    def fail(self, what: str) -> VrsError:
        return VrsError(f"{self.path}: corrupt VRS file: {what}")

    def run(self) -> VrsScan:
        (magic1, magic2, _, header_size, self.record_header_size, index_offset,
         description_offset, first_user_offset, _, _, _, magic3,
         _) = _FILE_HEADER.unpack_from(self.data)
        if (magic1, magic2, magic3) != _MAGIC:
            raise VrsError(f"{self.path}: not a VRS file (bad magic)")
        if not (_FILE_HEADER.size <= header_size <= self.size
                and _RECORD_HEADER.size <= self.record_header_size <= 4096):
            raise self.fail(f"file header claims a {header_size}-byte header and "
                            f"{self.record_header_size}-byte record headers")
        records = self._chain(header_size)
        at = {record.offset: record for record in records}
        description = at.get(description_offset)
        if description is None or description.type_id != _DESCRIPTION_TYPE:
            raise self.fail(f"description record offset {description_offset} is not the "
                            f"start of a description record")
        formats = self._description(description)
        if first_user_offset and first_user_offset not in at:
            raise self.fail(f"first user record offset {first_user_offset} is not a record")
        user = [r for r in records if r.type_id not in (_INDEX_TYPE, _DESCRIPTION_TYPE)]
        if formats is not None:
            self._formats(user, formats)
        if index_offset:
            index = at.get(index_offset)
            if index is None or index.type_id != _INDEX_TYPE:
                raise self.fail(f"index record offset {index_offset} is not the start of an "
                                f"index record")
            self._index(index, user)
        return self._damage(user)

    def _chain(self, offset: int) -> list[_Record]:
        """Every record header, each size checked against the file size and the cap."""
        records, previous = [], 0
        while offset < self.size:
            if offset + self.record_header_size > self.size:
                raise VrsError(f"{self.path}: truncated VRS file: it ends inside the record "
                               f"header at byte {offset}")
            size, previous_size, *fields = _RECORD_HEADER.unpack_from(self.data, offset)
            record = _Record(offset, size, *fields)
            if size < self.record_header_size or previous_size != previous:
                raise self.fail(f"broken record chain at byte {offset}")
            if offset + size > self.size:
                raise VrsError(f"{self.path}: truncated VRS file: the record at byte {offset} "
                               f"needs {offset + size - self.size} more bytes")
            if record.compression not in (_NO_COMPRESSION, _LZ4, _ZSTD):
                raise self.fail(f"record at byte {offset} has unknown compression type "
                                f"{record.compression}")
            if record.type_id != _INDEX_TYPE and record.uncompressed > MAX_RECORD_BYTES:
                raise self.fail(f"record at byte {offset} claims {record.uncompressed} "
                                f"uncompressed bytes (at most {MAX_RECORD_BYTES} allowed)")
            if math.isnan(record.timestamp):
                raise self.fail(f"record at byte {offset} has no timestamp (NaN)")
            records.append(record)
            offset, previous = offset + size, size
        return records

    def _payload(self, record: _Record) -> bytes:
        return self.data[record.offset + self.record_header_size:record.offset + record.size]

    def _description(self, record: _Record) -> dict[str, dict[bytes, bytes]] | None:
        """Walk the stream and file tags (v1 or v2 layout): every length inside the record,
        the layouts and JSON values; return each stream's VRS tags (None for v1 files)."""
        if record.compression != _NO_COMPRESSION:
            raise self.fail(f"description record at byte {record.offset} is compressed")
        format_version = record.format_version
        if format_version not in (1, 2):
            raise self.fail(f"description record has unknown format {format_version}")
        reader = _Reader(self._payload(record), self.fail,
                         f"description record at byte {record.offset}")
        tags: list[tuple[bytes, bytes]] = []
        streams: dict[str, dict[bytes, bytes]] = {}
        for _ in range(reader.count(_STREAM_ID_BYTES)):
            type_id, instance = struct.unpack_from("<iH", reader.payload, reader.position)
            reader.skip(_STREAM_ID_BYTES)
            if format_version == 1:
                reader.string()
            else:
                user, vrs_tags = reader.tags(), reader.tags()
                tags += user + vrs_tags
                streams[f"{type_id}-{instance}"] = dict(vrs_tags)
        if format_version == 1:
            reader.string()
        else:
            tags += reader.tags()
        for name, value in tags:
            problem = _tag_problem(name, value)
            if problem:
                raise self.fail(f"description record at byte {record.offset}: tag "
                                f"{name[:40].decode('utf-8', 'replace')!r} {problem}")
        return streams if format_version == 2 else None

    def _formats(self, user: list[_Record], streams: dict[str, dict[bytes, bytes]]) -> None:
        """Every kind of non-empty record needs its record format and layouts in the
        description: projectaria-tools reads a record without them through a null reader."""
        for stream, record_type, version in sorted({
                (f"{r.type_id}-{r.instance}", r.record_type, r.format_version) for r in user
                if r.size > self.record_header_size}):
            kind = _RECORD_TYPES.get(record_type)
            if kind is None:
                continue
            tags = streams.get(stream, {})
            record_format = tags.get(f"RF:{kind}:{version}".encode())
            if record_format is None:
                raise self.fail(f"the description has no record format for the {kind} "
                                f"records (version {version}) of stream {stream}")
            for block, part in enumerate(record_format.split(b"+")):
                if part.startswith(b"data_layout") and \
                        f"DL:{kind}:{version}:{block}".encode() not in tags:
                    raise self.fail(f"the description has no data layout {block} for the "
                                    f"{kind} records (version {version}) of stream {stream}")

    def _index(self, record: _Record, user: list[_Record]) -> None:
        """The index must list exactly the records of the chain: projectaria-tools seeks by it."""
        version = record.format_version
        where = f"index record at byte {record.offset}"
        if version not in (_CLASSIC_INDEX, _SPLIT_INDEX):
            raise self.fail(f"{where} has unknown format {version}")
        if record.compression not in (_NO_COMPRESSION, _ZSTD):
            raise self.fail(f"{where} is not zstd-compressed")
        payload = self._payload(record)
        reader = _Reader(payload, self.fail, where)
        count = None
        if version == _CLASSIC_INDEX:
            reader.skip(_STREAM_ID_BYTES * reader.count(_STREAM_ID_BYTES))
            count = reader.count(1)
        prelude = reader.position
        if record.compression == _NO_COMPRESSION:
            entries = payload[prelude:]
        else:
            expected = record.uncompressed - prelude
            if not 0 <= expected <= _INDEX_ENTRY.itemsize * (self.size // _RECORD_HEADER.size):
                raise self.fail(f"{where} claims {record.uncompressed} uncompressed bytes")
            entries = _unzstd(payload[prelude:], expected, keep=True)
            if entries is None:
                raise self.fail(f"{where} does not decompress to its {expected} bytes")
        if count is not None and len(entries) < count * _INDEX_ENTRY.itemsize:
            raise self.fail(f"{where} lists {count} records but holds fewer")
        listed = np.frombuffer(entries, _INDEX_ENTRY,
                               len(entries) // _INDEX_ENTRY.itemsize if count is None else count)
        if len(listed) > len(user) or (version == _CLASSIC_INDEX and len(listed) != len(user)):
            raise self.fail(f"{where} lists {len(listed)} records, the file holds {len(user)}")
        chain = np.array([(r.timestamp, r.size, r.record_type, r.type_id, r.instance)
                          for r in user[:len(listed)]], _INDEX_ENTRY)
        wrong = np.flatnonzero(listed != chain)
        if len(wrong):
            raise self.fail(f"{where} disagrees with the record at byte "
                            f"{user[int(wrong[0])].offset}")

    def _damage(self, user: list[_Record]) -> VrsScan:
        by_stream: dict[str, list[_Record]] = {}
        for record in user:
            if record.record_type == _DATA:
                by_stream.setdefault(f"{record.type_id}-{record.instance}", []).append(record)
        damaged: dict[str, tuple[int, ...]] = {}
        times = set()
        for stream, records in by_stream.items():
            records.sort(key=lambda r: r.timestamp)
            bad = tuple(i for i, r in enumerate(records) if not self._intact(r))
            if bad:
                damaged[stream] = bad
                times |= {(stream, round(records[i].timestamp * 1e6)) for i in bad}
        return VrsScan(self.path, len(user), damaged, frozenset(times))

    def _intact(self, record: _Record) -> bool:
        """Zstd payloads must decompress to their size; others (Aria files have no LZ4) pass."""
        if record.compression != _ZSTD:
            return True
        return _unzstd(self._payload(record), record.uncompressed) is not None


class _Reader:
    """Bounded little-endian reads from one record's payload; any overrun is a `VrsError`."""

    def __init__(self, payload: bytes, fail, where: str):
        self.payload, self.fail, self.where, self.position = payload, fail, where, 0

    def skip(self, count: int) -> None:
        if count > len(self.payload) - self.position:
            raise self.fail(f"{self.where} overruns its {len(self.payload)} bytes")
        self.position += count

    def count(self, item_bytes: int = 4) -> int:
        """A uint32 count of items of at least `item_bytes` that must fit in what is left."""
        self.skip(4)
        value = _U32.unpack_from(self.payload, self.position - 4)[0]
        if value * item_bytes > len(self.payload) - self.position:
            raise self.fail(f"{self.where} claims {value} entries that cannot fit")
        return value

    def string(self) -> bytes:
        start = self.position + 4
        self.skip(self.count(1))
        return self.payload[start:self.position]

    def tags(self) -> list[tuple[bytes, bytes]]:
        return [(self.string(), self.string()) for _ in range(self.count(8))]


# What projectaria-tools builds its record readers from: without a valid layout ("DL:...") or
# record format ("RF:...") for a stream it dereferences a missing reader and segfaults.
_PIECE_TYPE = re.compile(
    r"DataPieceString|DataPiece(Value|Array|Vector|StringMap)<(u?int(8|16|32|64)_t|float|double|"
    r"Bool|char|string|(Point|Matrix)[234]D[dfi])>")
_RECORD_FORMAT = re.compile(r"[a-z_]+(/[\w.=-]+)*(\+[a-z_]+(/[\w.=-]+)*)*")


def _tag_problem(name: bytes, value: bytes) -> str:
    """Why a description tag would mislead the library, or ''."""
    if name.startswith(b"RF:"):
        return "" if _RECORD_FORMAT.fullmatch(value.decode("latin-1")) else "is no record format"
    if not (name.startswith(b"DL:") or value.startswith(b"{")):
        return ""
    try:
        document = json.loads(value)
    except ValueError:
        return "is not valid JSON"
    if not name.startswith(b"DL:"):
        return ""
    pieces = document.get("data_layout") if isinstance(document, dict) else None
    if not isinstance(pieces, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str)
            and isinstance(p.get("type"), str) and _PIECE_TYPE.fullmatch(p["type"])
            for p in pieces):
        return "is no data layout"
    return ""


def _unzstd(payload: bytes, size: int, keep: bool = False) -> bytes | None:
    """The zstd `payload` decompressed (b"" unless `keep`) when it yields exactly `size` bytes,
    else None; never holds more than `size` bytes and a 1 MiB chunk."""
    import zstandard

    chunks, total = [], 0
    try:
        reader = zstandard.ZstdDecompressor(max_window_size=MAX_RECORD_BYTES * 2)
        for chunk in reader.read_to_iter(payload, read_size=1 << 20, write_size=1 << 20):
            total += len(chunk)
            if total > size:
                return None
            if keep:
                chunks.append(chunk)
    except zstandard.ZstdError:
        return None
    return b"".join(chunks) if total == size else None


# ------------------------------------------------------------------------ projectaria-tools

def open_provider(path: Path) -> tuple[Any, VrsScan]:
    """A projectaria-tools `VrsDataProvider` for a file that passed `scan`, and the scan.

    The library prints a dozen coloured INFO lines per open on fd 2 and has no switch for it, so
    fd 2 goes to a temporary file around the open; what it caught is passed on without the INFO
    and DEBUG lines (warnings, errors and anything else written meanwhile are kept)."""
    checked = scan(path)
    from projectaria_tools.core import data_provider

    with quiet_library():
        try:
            provider = data_provider.create_vrs_data_provider(str(path))
        except RuntimeError as exc:
            raise VrsError(f"{path}: projectaria-tools cannot read it: {exc}") from None
    if provider is None:
        raise VrsError(f"{path}: projectaria-tools cannot open it")
    return provider, checked


@contextlib.contextmanager
def quiet_library() -> Iterator[None]:
    """Drop projectaria-tools' INFO/DEBUG log lines written to fd 2 inside the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            text = _ANSI.sub("", log.read(MAX_LOG_BYTES).decode("utf-8", "replace"))
            kept = [line for line in text.splitlines()
                    if line.strip() and not _LIBRARY_CHATTER.match(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)
