"""Wire format v1: a packet as a binary header plus one raw buffer, in one or two frames.

No pickle: the header is fixed-layout binary plus JSON for metadata/dict payloads, and buffers
are plain bytes whose dtype and shape the header declares. `decode` checks every length before
touching data and raises `WireError` for anything malformed. Layout: docs/wire-format.md.
"""
from __future__ import annotations

import functools
import json
import math
import struct
from typing import Any, Callable, Sequence

import numpy as np

from .packet import Packet, Payload

MAGIC = b"DW"
VERSION = 1

KIND_ARRAY, KIND_BYTES, KIND_DICT = 0, 1, 2
FLAG_EOS = 1

# magic, version, flags, kind, ndim, dtype code, reserved, seq, timestamp_ns, stream len, meta len
_FIXED = struct.Struct("<2sBBBBBxQqHI")
DTYPES = ["|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8", "|b1"]
_NP_DTYPES = [np.dtype(name) for name in DTYPES]
_DTYPE_CODE = {dtype: code for code, dtype in enumerate(_NP_DTYPES)}
def _json_default(value):
    """numpy scalars and arrays in metadata and dict payloads travel as JSON numbers/lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"a value of type {type(value).__name__} is not JSON")


_to_json = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode
MAX_NDIM = 8
_DIMS = [struct.Struct(f"<{n}Q") for n in range(MAX_NDIM + 1)]
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
MAX_META_BYTES = 1 << 20      # metadata JSON: checked before it is read, let alone parsed
MAX_DIM = 1 << 40             # any one array axis (numpy refuses sizes near 2^63)
INLINE_MAX = 64 * 1024  # bodies up to this size share the header's frame


class WireError(ValueError):
    """A message that is not a valid wire-format v1 packet."""


def encode(packet: Packet, eos: bool = False) -> list:
    """Frames for `packet`: [header, buffer]. The buffer is the array itself (no copy)."""
    payload, dims, meta = packet.payload, (), packet.meta
    dtype_code: int | None = 0
    body: np.ndarray | bytes | bytearray | memoryview
    if isinstance(payload, np.ndarray):
        kind, dtype = KIND_ARRAY, payload.dtype
        dtype_code = _DTYPE_CODE.get(dtype)  # native little-endian: the common, fast case
        if dtype_code is None or not payload.flags.c_contiguous:
            dtype = dtype.newbyteorder("<")
            dtype_code = _DTYPE_CODE.get(dtype)
            if dtype_code is None:
                raise WireError(f"stream '{packet.stream}': dtype {payload.dtype} cannot be sent")
            payload = np.ascontiguousarray(payload.astype(dtype, copy=False))
        if payload.ndim > MAX_NDIM:
            raise WireError(f"stream '{packet.stream}': {payload.ndim} dims > {MAX_NDIM}")
        dims = payload.shape
        # flat uint8 view of the same memory: frames are 1-D byte buffers, still no copy
        body = payload.reshape(-1).view(np.uint8)
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        kind, body = KIND_BYTES, payload
    elif isinstance(payload, dict):
        kind, body = KIND_DICT, b""
        meta = {"meta": meta, "payload": payload}
    else:
        raise WireError(f"stream '{packet.stream}': payload of type "
                        f"{type(payload).__name__} cannot be sent")
    stream = packet.stream.encode()
    try:
        meta_json = _meta_json(meta) if meta else b""
    except (TypeError, ValueError) as exc:
        what = "payload or metadata" if kind == KIND_DICT else "metadata"
        raise WireError(f"stream '{packet.stream}': its {what} cannot be sent ({exc}; JSON "
                        f"types, numpy scalars and arrays only)") from None
    header = b"".join((
        _FIXED.pack(MAGIC, VERSION, FLAG_EOS if eos else 0, kind, len(dims), dtype_code,
                    packet.seq, packet.timestamp_ns, len(stream), len(meta_json)),
        _DIMS[len(dims)].pack(*dims), stream, meta_json))
    return [header, body]


def end_of_stream() -> list:
    """Frames of the end-of-stream marker: an empty bytes packet with the EOS flag."""
    return encode(Packet("", 0, 0, b""), eos=True)


def pack(frames: list, prefix: bytes = b"") -> list:
    """Frames ready to send: `prefix` + header, with bodies up to INLINE_MAX appended to the
    header (one frame: copying a small body is cheaper than a second frame), else separate."""
    header, body = frames
    if len(body) <= INLINE_MAX:
        return [b"".join((prefix, header, body))]
    return [prefix + header, body]


def decode(frames: Sequence, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Packet, bool]:
    """Parse [header, body] or [header + body]; returns (packet, eos). Raises WireError if
    malformed."""
    if len(frames) not in (1, 2):
        raise WireError(f"expected 1 or 2 frames, got {len(frames)}")
    header = _byte_view(frames[0])
    if len(header) < _FIXED.size:
        raise WireError(f"header of {len(header)} bytes is shorter than {_FIXED.size}")
    (magic, version, flags, kind, ndim, dtype_code, seq, timestamp_ns, stream_len,
     meta_len) = _FIXED.unpack_from(header)
    if magic != MAGIC:
        raise WireError(f"bad magic {bytes(magic)!r}")
    if version != VERSION:
        raise WireError(f"wire version {version} is not supported (this build speaks {VERSION})")
    if ndim > MAX_NDIM or dtype_code >= len(DTYPES) or kind > KIND_DICT:
        raise WireError("header fields out of range")
    if meta_len > MAX_META_BYTES:
        raise WireError(f"metadata of {meta_len} bytes exceeds the limit of {MAX_META_BYTES}")
    expected = _FIXED.size + 8 * ndim + stream_len + meta_len
    if len(frames) == 1 and len(header) >= expected:
        header, body = header[:expected], header[expected:]
    elif len(frames) == 2:
        body = _byte_view(frames[1])
    if len(header) != expected:
        raise WireError(f"header is {len(header)} bytes, its fields say {expected}")
    if len(body) > max_bytes:
        raise WireError(f"payload of {len(body)} bytes exceeds the limit of {max_bytes}")
    at = _FIXED.size
    dims = _DIMS[ndim].unpack_from(header, at)
    at += 8 * ndim
    if any(d > MAX_DIM for d in dims):
        raise WireError(f"array shape {tuple(dims)} has an axis over {MAX_DIM}")
    try:
        stream = str(header[at:at + stream_len], "utf-8")
        meta = _parse_meta(bytes(header[at + stream_len:])) if meta_len else {}
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"undecodable stream name or metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise WireError(f"metadata is a JSON {type(meta).__name__}, not an object")
    meta = dict(meta)       # a copy: the parsed value is cached
    payload: Payload
    if kind == KIND_ARRAY:
        dtype = _NP_DTYPES[dtype_code]
        count = math.prod(dims)  # Python ints: exact, no wrap-around
        if count * dtype.itemsize != len(body):
            raise WireError(f"shape {tuple(dims)} of {dtype} needs {count * dtype.itemsize} "
                            f"bytes, got {len(body)}")
        payload = np.frombuffer(body, dtype=dtype).reshape(dims)
    elif kind == KIND_BYTES:
        payload = bytes(body)
    else:
        if len(body) or not isinstance(meta.get("payload"), dict):
            raise WireError("dict payload malformed")
        payload, meta = meta["payload"], meta.get("meta", {})
        if not isinstance(meta, dict):
            raise WireError("metadata is not a JSON object")
    return Packet(stream, timestamp_ns, seq, payload, meta), bool(flags & FLAG_EOS)



BATCH_MAGIC = b"DB"
_BATCH = struct.Struct("<2sBxI")   # magic, version, reserved, packet count
BATCH_MAX_COUNT = 1024
BATCH_MAX_BYTES = 1 << 20          # a whole batch, checked before anything is decoded
_SEQ_TS = struct.Struct("<Qq")     # the two header fields that differ along one stream


def pack_batch(packets: Sequence[bytes], prefix: bytes = b"") -> bytes:
    """Several one-frame packets (header | body, as `pack` makes them) in one message:
    `prefix` | "DB" | version | 0 | u32 count | count x u32 size | the packets."""
    return b"".join((prefix, _BATCH.pack(BATCH_MAGIC, VERSION, len(packets)),
                     struct.pack(f"<{len(packets)}I", *map(len, packets)), *packets))


def is_batch(view: memoryview) -> bool:
    return view[:2] == BATCH_MAGIC


class Decoder:
    """`decode` for one link: a one-frame packet whose header repeats the previous one's apart
    from seq and timestamp (one stream's frames) reuses its parsed, validated fields (the same
    bytes pass the same checks); anything else is decoded in full."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self._size, self._end, self._head, self._tail = 0, 0, b"", b""
        # stream, meta, payload from the frame's view, eos: of the last fully decoded packet
        self._fields: tuple[str, dict, Callable[[memoryview], Any], bool] | None = None

    def decode(self, frames: Sequence) -> tuple[Packet, bool]:
        if self._fields is not None and len(frames) == 1:
            one = frames[0]
            if type(one) is not memoryview:
                one = _byte_view(one)
            if len(one) == self._size and one[24:self._end] == self._tail \
                    and one[:8] == self._head:
                seq, timestamp_ns = _SEQ_TS.unpack_from(one, 8)
                stream, meta, payload_of, eos = self._fields
                return Packet(stream, timestamp_ns, seq, payload_of(one), dict(meta)), eos
        packet, eos = decode(frames, self.max_bytes)
        self._fields = None
        payload = packet.payload
        if len(frames) == 1 and isinstance(payload, (np.ndarray, bytes)):
            one = _byte_view(frames[0])
            end = len(one) - (payload.nbytes if isinstance(payload, np.ndarray) else len(payload))
            self._size, self._end = len(one), end
            self._head, self._tail = bytes(one[:8]), bytes(one[24:end])
            if isinstance(payload, bytes):
                def payload_of(view):
                    return bytes(view[end:])
            else:
                dtype, shape = payload.dtype, payload.shape

                def payload_of(view):  # positional arguments: twice as fast as frombuffer
                    return np.ndarray(shape, dtype, view, end)
            self._fields = packet.stream, dict(packet.meta), payload_of, eos
        return packet, eos

    def decode_batch(self, view: memoryview) -> list[tuple[Packet, bool]]:
        """Every packet of a batch (`pack_batch`), in order; WireError if the batch or any
        packet in it is malformed (then none is delivered)."""
        if len(view) < _BATCH.size or len(view) > BATCH_MAX_BYTES:
            raise WireError(f"batch of {len(view)} bytes is outside "
                            f"{_BATCH.size}..{BATCH_MAX_BYTES}")
        magic, version, count = _BATCH.unpack_from(view)
        if magic != BATCH_MAGIC or version != VERSION:
            raise WireError(f"bad batch magic or version ({bytes(magic)!r}, {version})")
        at = _BATCH.size + 4 * count
        if not 2 <= count <= BATCH_MAX_COUNT or at > len(view):
            raise WireError(f"batch count {count} is out of range for {len(view)} bytes")
        sizes = struct.unpack_from(f"<{count}I", view, _BATCH.size)
        if sum(sizes) != len(view) - at or min(sizes) < _FIXED.size:
            raise WireError("batch packet sizes do not match the batch length")
        out = []
        for size in sizes:
            out.append(self.decode([view[at:at + size]]))
            at += size
        return out


def _meta_json(meta: dict) -> bytes:
    """Metadata as JSON bytes; flat metadata that repeats (image shapes, codec names) is
    serialised once. Types are part of the key, since 1, 1.0 and True hash alike."""
    try:
        return _meta_json_cached(tuple(meta.items()), tuple(map(type, meta.values())))
    except TypeError:  # unhashable values (lists, dicts): serialise every time
        return _to_json(meta).encode()


@functools.lru_cache(maxsize=256)
def _meta_json_cached(items: tuple, _types: tuple) -> bytes:
    return _to_json(dict(items)).encode()


@functools.lru_cache(maxsize=256)
def _parse_meta(raw: bytes):
    """Metadata JSON; streams repeat the same few, so parsed values are cached (and copied)."""
    return json.loads(str(raw, "utf-8"))


def _byte_view(frame) -> memoryview:
    """A flat byte view of a frame: bytes, a zmq.Frame, or an array from `encode`."""
    view = memoryview(getattr(frame, "buffer", frame))
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


def to_bytes(frames: Sequence) -> bytes:
    """Frames packed into one length-prefixed blob (for files: the record format)."""
    parts: list[bytes | memoryview] = [struct.pack("<H", len(frames))]
    for frame in frames:
        view = memoryview(frame).cast("B")
        parts += [struct.pack("<Q", view.nbytes), view]
    return b"".join(parts)


def from_bytes(blob: bytes | memoryview) -> list[memoryview]:
    """Inverse of `to_bytes`, with every length checked."""
    view = memoryview(blob)
    if len(view) < 2:
        raise WireError("blob shorter than its frame count")
    (count,), at, frames = struct.unpack_from("<H", view), 2, []
    for _ in range(count):
        if at + 8 > len(view):
            raise WireError("blob truncated in a frame length")
        (size,) = struct.unpack_from("<Q", view, at)
        at += 8
        if at + size > len(view):
            raise WireError("blob truncated in a frame body")
        frames.append(view[at:at + size])
        at += size
    if at != len(view):
        raise WireError(f"{len(view) - at} trailing bytes after the last frame")
    return frames
