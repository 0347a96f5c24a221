"""The .dnc container: a codec's entropy-coded strings plus what is needed to decode them.

Version 2 (written), little-endian, varint = unsigned LEB128; docs/bitstream.md:
    "DNC" | version u8 = 2 | kind u8 | dtype u8 | name_len u8 | codec name (utf-8)
    | codec hash (8 bytes: sha256 prefix of the checkpoint) | family_len u8 | family (utf-8)
    | varint level | varint ndim, ndim × varint original shape | varint sample rate (0 if none)
    | varint count, count × (varint ndim, ndim × varint shape, varint length, bytes)  strings
    | CRC-32 u32 of all before
Version 1 (read only): one string, no family (it is "dance") and no level (0); its payload is
CompressAI rANS, decoded by `dance.legacy_rans`.

Version 3, the *stream block* (written for the blocks of an audio stream, where a 4096-sample
block at 600:1 has ~190 bytes and version 2's header would take a quarter of them): what a codec
knows (name, family, channels, sample rate, string shapes) is not repeated; the stream names its
codec once, in the packets' `codec` meta, and each block carries a 2-byte tag of the codec hash
to check it against:
    "DB" | version u8 = 3 | dtype u8 | codec tag (2 bytes: hash prefix) | varint level
    | varint frames | varint count, count × (varint length, bytes) | CRC-16 (low half of CRC-32)

Every declared size is checked against the data and a maximum before anything is allocated.
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

MAGIC = b"DNC"
VERSION = 2
READABLE_VERSIONS = (1, 2)
HASH_BYTES = 8
BLOCK_MAGIC = b"DB"
BLOCK_VERSION = 3
TAG_BYTES = 2
KINDS = ("generic", "image", "audio")
DTYPES = ("uint8", "int16", "int32", "int64", "float32", "float64")
# what each kind of signal may be decoded to (as dance.preprocess reads them); "generic": any
KIND_DTYPES = {"image": ("uint8",), "audio": ("int32", "int64", "float32", "float64")}
MAX_SAMPLE_RATE = 1 << 20   # Hz: above any audio rate, within what WAV and FLAC can declare
MAX_NDIM = 8
MAX_STRINGS = 16
# the most elements a declared shape may hold (original signal or one latent): 2^27 is a
# 6,000² RGB image or 5 min of 7-channel 48 kHz audio; a larger claim is refused unread
MAX_ELEMENTS = 1 << 27


class BitstreamError(ValueError):
    """A stream that is truncated, corrupt, of another version, or made by another codec."""


@dataclass(frozen=True)
class Container:
    kind: str
    dtype: str
    codec_name: str
    codec_hash: bytes
    shape: tuple[int, ...]
    strings: tuple[bytes, ...]
    string_shapes: tuple[tuple[int, ...], ...]
    sample_rate: int = 0
    family: str = "dance"
    level: int = 0
    version: int = VERSION

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of the first (main) latent."""
        return self.string_shapes[0]

    def pack(self) -> bytes:
        if self.version != VERSION:
            raise ValueError(f"only version {VERSION} containers are written")
        name, family = self.codec_name.encode(), self.family.encode()
        if len(name) > 255 or len(family) > 255:
            raise ValueError("codec and family names must be at most 255 bytes")
        if len(self.codec_hash) != HASH_BYTES:
            raise ValueError(f"codec hash must be {HASH_BYTES} bytes")
        if len(self.strings) != len(self.string_shapes) or not 0 < len(self.strings) <= MAX_STRINGS:
            raise ValueError(f"a container holds 1 to {MAX_STRINGS} strings, each with a shape")
        out = bytearray(MAGIC)
        out += struct.pack("<BBBB", VERSION, KINDS.index(self.kind), DTYPES.index(self.dtype),
                           len(name))
        out += name + self.codec_hash + bytes([len(family)]) + family
        out += varint(self.level) + _shape(self.shape) + varint(self.sample_rate)
        out += varint(len(self.strings))
        for string, shape in zip(self.strings, self.string_shapes):
            out += _shape(shape) + varint(len(string)) + string
        out += struct.pack("<I", zlib.crc32(out))
        return bytes(out)


@dataclass(frozen=True)
class Block:
    """One block of a stream (version 3): the strings and what differs from block to block."""

    dtype: str
    codec_tag: bytes
    level: int
    frames: int
    strings: tuple[bytes, ...]

    def pack(self) -> bytes:
        if len(self.codec_tag) != TAG_BYTES:
            raise ValueError(f"codec tag must be {TAG_BYTES} bytes")
        if not 0 < len(self.strings) <= MAX_STRINGS:
            raise ValueError(f"a block holds 1 to {MAX_STRINGS} strings")
        out = bytearray(BLOCK_MAGIC)
        out += bytes([BLOCK_VERSION, DTYPES.index(self.dtype)]) + self.codec_tag
        out += varint(self.level) + varint(self.frames) + varint(len(self.strings))
        for string in self.strings:
            out += varint(len(string)) + string
        out += struct.pack("<H", zlib.crc32(out) & 0xFFFF)
        return bytes(out)


def is_block(data: bytes) -> bool:
    """Whether `data` claims to be a stream block (version 3) rather than a container."""
    return bytes(data[:3]) == BLOCK_MAGIC + bytes([BLOCK_VERSION])


def unpack_block(data: bytes) -> Block:
    """Parse and verify a stream block; raise BitstreamError saying what is wrong."""
    data = bytes(data)
    if not is_block(data):
        raise BitstreamError("not a DANCE stream block (bad magic)")
    reader = ByteReader(data, len(data), pos=3)
    try:
        dtype = reader.take(1)[0]
        if dtype >= len(DTYPES) or DTYPES[dtype] not in KIND_DTYPES["audio"]:
            raise Malformed(f"dtype code {dtype} (audio is {', '.join(KIND_DTYPES['audio'])})")
        tag = reader.take(TAG_BYTES)
        level = reader.varint(limit=1 << 16, what="level")
        frames = reader.varint(limit=MAX_ELEMENTS, what="frames")
        count = reader.varint(limit=MAX_STRINGS, what="string count")
        if count == 0 or frames == 0:
            raise Malformed("no strings" if count == 0 else "no frames")
        strings = tuple(reader.take(reader.varint()) for _ in range(count))
        crc_at = reader.pos
        stored = int.from_bytes(reader.take(2), "little")
    except Malformed as exc:
        if len(data) >= 5 and zlib.crc32(data[:-2]) & 0xFFFF == int.from_bytes(data[-2:], "little"):
            raise BitstreamError(f"malformed block header: {exc}") from None
        raise BitstreamError(f"truncated or corrupt stream block ({len(data)} bytes)") from None
    if zlib.crc32(data[:crc_at]) & 0xFFFF != stored:
        raise BitstreamError("corrupt stream block (CRC mismatch)")
    if reader.pos != len(data):
        raise BitstreamError(f"{len(data) - reader.pos} unexpected bytes after the stream block")
    return Block(DTYPES[dtype], tag, level, frames, strings)


def _shape(shape: tuple[int, ...]) -> bytes:
    return varint(len(shape)) + b"".join(varint(s) for s in shape)


def unpack(data: bytes) -> Container:
    """Parse and verify a container; raise BitstreamError saying what is wrong."""
    data = bytes(data)
    if len(data) < 4 or data[:3] != MAGIC:
        raise BitstreamError("not a DANCE bitstream (bad magic)")
    version = data[3]
    if version not in READABLE_VERSIONS:
        raise BitstreamError(f"bitstream version {version} is not supported (this reads "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
    # fields first (every size bounded), then the CRC where they end, so that a damaged stream,
    # a crafted header with a valid CRC and trailing garbage each get their own message
    reader = ByteReader(data, len(data), pos=4)
    try:
        container = (_parse_v1 if version == 1 else _parse_v2)(reader)
        crc_at = reader.pos
        stored = int.from_bytes(reader.take(4), "little")
    except Malformed as exc:
        if len(data) >= 8 and zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "little"):
            raise BitstreamError(f"malformed header: {exc}") from None
        raise BitstreamError(f"truncated or corrupt bitstream ({len(data)} bytes)") from None
    if zlib.crc32(data[:crc_at]) != stored:
        raise BitstreamError("corrupt bitstream (CRC mismatch)")
    if reader.pos != len(data):
        raise BitstreamError(f"{len(data) - reader.pos} unexpected bytes after the bitstream")
    return container


def _head(r: "ByteReader") -> tuple[str, str, str, bytes]:
    kind, dtype, name_len = struct.unpack("<BBB", r.take(3))
    if kind >= len(KINDS):
        raise Malformed(f"kind code {kind}")
    if dtype >= len(DTYPES):
        raise Malformed(f"dtype code {dtype}")
    allowed = KIND_DTYPES.get(KINDS[kind], DTYPES)
    if DTYPES[dtype] not in allowed:
        raise Malformed(f"dtype {DTYPES[dtype]} for {KINDS[kind]} (expected "
                        f"{', '.join(allowed)})")
    name = _text(r.take(name_len), "codec name")
    return KINDS[kind], DTYPES[dtype], name, r.take(HASH_BYTES)


def _parse_v1(r: "ByteReader") -> Container:
    kind, dtype, name, codec_hash = _head(r)
    shape, latent_shape = r.original_shape(), r.shape("latent shape")
    sample_rate = r.varint(limit=MAX_SAMPLE_RATE, what="sample rate")
    payload = r.take(r.varint())
    return Container(kind, dtype, name, codec_hash, shape, (payload,), (latent_shape,),
                     sample_rate, "dance", 0, 1)


def _parse_v2(r: "ByteReader") -> Container:
    kind, dtype, name, codec_hash = _head(r)
    family = _text(r.take(r.take(1)[0]), "family")
    level = r.varint(limit=1 << 16, what="level")
    shape = r.original_shape()
    sample_rate = r.varint(limit=MAX_SAMPLE_RATE, what="sample rate")
    count = r.varint(limit=MAX_STRINGS, what="string count")
    if count == 0:
        raise Malformed("no strings")
    strings, shapes = [], []
    for i in range(count):
        shapes.append(r.shape(f"shape of string {i}"))
        strings.append(r.take(r.varint()))
    return Container(kind, dtype, name, codec_hash, shape, tuple(strings), tuple(shapes),
                     sample_rate, family, level, 2)


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise Malformed(f"{what} is not UTF-8") from None


class Malformed(Exception):
    """A header field that runs past the data or holds an impossible value."""




class ByteReader:
    """Reads fields of a container in order; raises Malformed past `end`."""

    def __init__(self, data: bytes, end: int, pos: int = 0):
        self.data, self.end, self.pos = data, end, pos

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise Malformed(f"a field of {n} bytes runs past the end")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self, limit: int | None = None, what: str = "varint") -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 63:
                raise Malformed(f"{what} longer than 64 bits")
        if limit is not None and value > limit:
            raise Malformed(f"{what} {value} is over its maximum {limit}")
        return value

    def shape(self, what: str) -> tuple[int, ...]:
        ndim = self.varint(limit=MAX_NDIM, what=f"{what} rank")
        shape = tuple(self.varint(limit=MAX_ELEMENTS, what=what) for _ in range(ndim))
        if math.prod(shape) > MAX_ELEMENTS:
            raise Malformed(f"{what} {shape} holds more than {MAX_ELEMENTS} elements")
        return shape

    def original_shape(self) -> tuple[int, ...]:
        """The signal's shape: at least 1-D, no empty axis (nothing to decode otherwise)."""
        shape = self.shape("original shape")
        if not shape or 0 in shape:
            raise Malformed(f"original shape {shape} holds no samples")
        return shape


def varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
