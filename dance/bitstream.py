"""The .dnc container: one entropy-coded latent plus what is needed to decode and restore it.

Byte layout (version 1, little-endian, varint = unsigned LEB128), documented in docs/bitstream.md:
    "DNC" | version u8 | kind u8 | dtype u8 | name_len u8 | codec name (utf-8)
    | codec hash (8 bytes: sha256 prefix of the checkpoint)
    | varint ndim, ndim × varint  original shape
    | varint ndim, ndim × varint  latent shape (C, *spatial)
    | varint sample rate (0 if none) | varint payload length | payload | CRC-32 u32 of all before
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"DNC"
VERSION = 1
HASH_BYTES = 8
KINDS = ("generic", "image", "audio")
DTYPES = ("uint8", "int16", "int32", "int64", "float32", "float64")


class BitstreamError(ValueError):
    """A stream that is truncated, corrupt, of another version, or made by another codec."""


@dataclass(frozen=True)
class Container:
    kind: str
    dtype: str
    codec_name: str
    codec_hash: bytes
    shape: tuple[int, ...]
    latent_shape: tuple[int, ...]
    payload: bytes
    sample_rate: int = 0

    def pack(self) -> bytes:
        name = self.codec_name.encode()
        if len(name) > 255:
            raise ValueError("codec name longer than 255 bytes")
        if len(self.codec_hash) != HASH_BYTES:
            raise ValueError(f"codec hash must be {HASH_BYTES} bytes")
        out = bytearray(MAGIC)
        out += struct.pack("<BBBB", VERSION, KINDS.index(self.kind), DTYPES.index(self.dtype),
                           len(name))
        out += name + self.codec_hash
        for shape in (self.shape, self.latent_shape):
            out += varint(len(shape)) + b"".join(varint(s) for s in shape)
        out += varint(self.sample_rate) + varint(len(self.payload)) + self.payload
        out += struct.pack("<I", zlib.crc32(out))
        return bytes(out)


def unpack(data: bytes) -> Container:
    """Parse and verify a container; raise BitstreamError saying what is wrong."""
    data = bytes(data)
    if len(data) < 4 or data[:3] != MAGIC:
        raise BitstreamError("not a DANCE bitstream (bad magic)")
    if data[3] != VERSION:
        raise BitstreamError(f"bitstream version {data[3]} is not supported (this is {VERSION})")
    reader = ByteReader(data, len(data))
    try:
        container = _parse(reader)
        crc_at = reader.pos
        reader.take(4)
    except Truncated:
        if zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "little"):
            raise BitstreamError("malformed header") from None
        raise BitstreamError(f"truncated or corrupt bitstream ({len(data)} bytes)") from None
    if zlib.crc32(data[:crc_at]) != int.from_bytes(data[crc_at:crc_at + 4], "little"):
        raise BitstreamError("corrupt bitstream (CRC mismatch)")
    if reader.pos != len(data):
        raise BitstreamError(f"{len(data) - reader.pos} unexpected bytes after the bitstream")
    return container


def _parse(r: "ByteReader") -> Container:
    _, version, kind, dtype, name_len = struct.unpack("<3sBBBB", r.take(7))
    name = r.take(name_len)
    codec_hash = r.take(HASH_BYTES)
    shape = tuple(r.varint() for _ in range(r.varint(limit=8)))
    latent_shape = tuple(r.varint() for _ in range(r.varint(limit=8)))
    sample_rate = r.varint()
    payload = r.take(r.varint())
    if kind >= len(KINDS) or dtype >= len(DTYPES):
        raise Truncated  # an impossible code: treated like any other damaged header byte
    try:
        codec_name = name.decode()
    except UnicodeDecodeError:
        raise Truncated from None
    return Container(KINDS[kind], DTYPES[dtype], codec_name, codec_hash, shape, latent_shape,
                     payload, sample_rate)


class Truncated(Exception):
    """A read past the end of the data (or an impossible varint)."""


class ByteReader:
    """Reads fields of a container in order; raises Truncated past `end`."""

    def __init__(self, data: bytes, end: int, pos: int = 0):
        self.data, self.end, self.pos = data, end, pos

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise Truncated
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self, limit: int | None = None) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 63:
                raise Truncated
        if limit is not None and value > limit:
            raise Truncated
        return value


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
