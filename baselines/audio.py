"""Conventional audio codecs to compare DANCE with: MP3 (LAME) and Opus (libopus) through PyAV.

Each channel is its own mono stream at `bitrate` bits/s, so any channel count works (the Aria's
7 microphones: 7 streams). Input is frames×channels audio — int32 counts or float at full scale
(dance.preprocess) — usually the notch-filtered linear signal. The Aria microphones sit ~70 dB
below int32 full scale, where a perceptual coder's absolute hearing threshold would discard most
of the sound, so the encoder first applies `gain_db` (default +40 dB: RMS near −30 dBFS, peaks
near −15 dBFS; both codecs take float samples, so louder peaks are not clipped) and the decoder
divides it out again.

Delay: the encoder's priming samples (the first packet's pts: 1105 for LAME, 312 for Opus at
48 kHz) plus any group delay of the codec's own band-limiting (Opus below ~12 kb/s runs SILK at
8-16 kHz inside: a few samples, measured once per setting on a noise burst) are dropped by the
decoder, so decoded sample n lines up with input sample n. Encoding is streaming: a block in,
one container out holding every packet the encoders finished; `flush()` ends the stream and the
decoder then trims the end padding, returning exactly as many samples as went in.

Container, one per block (varint = unsigned LEB128, little-endian):
    "DAB" | version u8 (1) | codec u8 (1 mp3, 2 opus) | channels u8 | gain_db f32
    | varint sample_rate | varint bitrate per channel | varint delay
    | varint index of the block's first input sample | varint input samples in the block
    | varint total samples + 1 in the last container of a stream, else 0
    | per channel: varint packet count, per packet: varint size, bytes | CRC-32 u32 of all before
"""
from __future__ import annotations

import struct
import zlib
from functools import lru_cache

import numpy as np

from dance.bitstream import ByteReader, Malformed, varint
from dance.preprocess import full_scale

MAGIC = b"DAB"
VERSION = 1
CODECS = ("mp3", "opus")
# encoder, its sample format, decoder
_AV = {"mp3": ("libmp3lame", "fltp", "mp3float"), "opus": ("libopus", "flt", "libopus")}
RATES = {"mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
         "opus": (8000, 12000, 16000, 24000, 48000)}
DEFAULT_GAIN_DB = 40.0
_HEAD = struct.Struct("<3sBBBf")


class BaselineError(ValueError):
    """A container that is truncated or corrupt, or settings a codec cannot take."""


def _check_settings(codec: str, bitrate: int, sample_rate: int) -> None:
    if codec not in CODECS:
        raise BaselineError(f"audio baseline codec must be one of {CODECS}, got {codec!r}")
    if sample_rate not in RATES[codec]:
        raise BaselineError(f"{codec} cannot code {sample_rate} Hz audio "
                            f"(rates: {', '.join(map(str, RATES[codec]))})")
    if bitrate < 1000:
        raise BaselineError(f"bitrate is in bits/s per channel, got {bitrate}")


def _open_encoder(codec: str, bitrate: int, sample_rate: int):
    import av
    ctx = av.CodecContext.create(_AV[codec][0], "w")
    ctx.sample_rate, ctx.layout, ctx.format, ctx.bit_rate = sample_rate, "mono", _AV[codec][1], bitrate
    ctx.open()
    return ctx


def _open_decoder(codec: str, sample_rate: int):
    import av
    ctx = av.CodecContext.create(_AV[codec][2], "r")
    ctx.sample_rate, ctx.layout, ctx.format = sample_rate, "mono", _AV[codec][1]
    return ctx


def _frame(samples: np.ndarray, codec: str, sample_rate: int, pts: int):
    import av
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None], np.float32),
                                       format=_AV[codec][1], layout="mono")
    frame.sample_rate, frame.pts = sample_rate, pts
    return frame


def _samples_of(frame) -> np.ndarray:
    """A decoded mono frame as float32 at full scale, whatever sample format came out."""
    x = frame.to_ndarray().reshape(-1)
    if x.dtype.kind == "i":
        return (x / float(-np.iinfo(x.dtype).min)).astype(np.float32)
    return x.astype(np.float32, copy=False)


def _decode_all(ctx, packets: list[bytes | None]) -> np.ndarray:
    import av
    out = [_samples_of(f) for p in packets
           for f in ctx.decode(av.Packet(p) if p is not None else None)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@lru_cache(maxsize=None)
def codec_delay(codec: str, bitrate: int, sample_rate: int) -> int:
    """Samples between an input sample and its decoded copy: priming + band-limiting delay."""
    from scipy import signal
    _check_settings(codec, bitrate, sample_rate)
    burst = np.random.default_rng(0).normal(0.0, 0.1, sample_rate // 2).astype(np.float32)
    encoder = _open_encoder(codec, bitrate, sample_rate)
    packets = list(encoder.encode(_frame(burst, codec, sample_rate, 0)))
    packets += encoder.encode(None)
    priming = -int(packets[0].pts)
    decoded = _decode_all(_open_decoder(codec, sample_rate), [bytes(p) for p in packets])
    decoded = decoded[priming:priming + len(burst)]
    corr = signal.correlate(decoded, burst[:len(decoded)], mode="full")
    lags = signal.correlation_lags(len(decoded), len(decoded))
    near = np.abs(lags) <= 64
    return priming + int(lags[near][np.argmax(corr[near])])


class AudioBaselineEncoder:
    """Streaming MP3/Opus encoder for frames×channels blocks of one stream."""

    def __init__(self, codec: str, bitrate: int, channels: int, sample_rate: int = 48000,
                 gain_db: float = DEFAULT_GAIN_DB):
        _check_settings(codec, int(bitrate), int(sample_rate))
        if not 1 <= channels <= 255:
            raise BaselineError(f"channels must be 1..255, got {channels}")
        self.codec, self.bitrate, self.channels = codec, int(bitrate), int(channels)
        self.sample_rate, self.gain_db = int(sample_rate), float(np.float32(gain_db))
        self.delay = codec_delay(codec, self.bitrate, self.sample_rate)
        self._gain = 10.0 ** (self.gain_db / 20)
        self._encoders = [_open_encoder(codec, self.bitrate, self.sample_rate)
                          for _ in range(channels)]
        self.consumed = 0

    @property
    def params(self) -> dict:
        return {"codec": self.codec, "bitrate_per_channel": self.bitrate,
                "gain_db": self.gain_db, "delay_samples": self.delay}

    def encode(self, block: np.ndarray) -> bytes:
        """One container with the packets the encoders completed after taking `block`."""
        x = full_scale(np.asarray(block), self.channels) * self._gain
        first = self.consumed
        packets = [list(enc.encode(_frame(x[:, c], self.codec, self.sample_rate, first)))
                   for c, enc in enumerate(self._encoders)] if len(x) else [[]] * self.channels
        self.consumed += len(x)
        return self._container(packets, first, len(x), 0)

    def flush(self) -> bytes:
        """The last container of the stream: the encoders' remaining packets and its length."""
        packets = [list(enc.encode(None)) for enc in self._encoders]
        return self._container(packets, self.consumed, 0, self.consumed + 1)

    def _container(self, packets: list[list], first: int, count: int, final: int) -> bytes:
        out = bytearray(_HEAD.pack(MAGIC, VERSION, CODECS.index(self.codec) + 1, self.channels,
                                   self.gain_db))
        for value in (self.sample_rate, self.bitrate, self.delay, first, count, final):
            out += varint(value)
        for channel in packets:
            out += varint(len(channel))
            for packet in channel:
                data = bytes(packet)
                out += varint(len(data)) + data
        out += struct.pack("<I", zlib.crc32(out))
        return bytes(out)


class Container:
    """A parsed audio baseline container."""

    def __init__(self, data: bytes):
        data = bytes(data)
        if len(data) < _HEAD.size + 4 or data[:3] != MAGIC:
            raise BaselineError("not an audio baseline container (bad magic)")
        if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
            raise BaselineError("audio baseline container is corrupt (CRC mismatch)")
        magic, version, codec, self.channels, self.gain_db = _HEAD.unpack_from(data)
        if version != VERSION or not 1 <= codec <= len(CODECS):
            raise BaselineError(f"unsupported audio baseline container (version {version}, "
                                f"codec {codec})")
        self.codec = CODECS[codec - 1]
        reader = ByteReader(data, len(data) - 4, _HEAD.size)
        try:
            (self.sample_rate, self.bitrate, self.delay, self.first, self.count,
             final) = (reader.varint() for _ in range(6))
            self.packets = [[reader.take(reader.varint()) for _ in range(reader.varint())]
                            for _ in range(self.channels)]
        except Malformed:
            raise BaselineError("truncated audio baseline container") from None
        self.total = final - 1 if final else None
        if reader.pos != len(data) - 4:
            raise BaselineError("audio baseline container has trailing bytes")


class AudioBaselineDecoder:
    """Streaming decoder: containers of one stream in order -> float32 frames×channels blocks
    at full scale, lined up with the encoder's input (delay dropped, end padding trimmed)."""

    def __init__(self):
        self._decoders: list | None = None
        self._pending: list[np.ndarray] = []
        self._skip = 0
        self.emitted = 0           # samples returned so far (= the input index of the next one)
        self.block_start = 0       # input index of the first sample decode() last returned
        self.container_first = 0   # input index the last container's block started at
        self.expected_first = 0    # input index the next container should start at
        self.gaps = 0              # containers that did not follow the previous one

    def decode(self, data: bytes) -> np.ndarray:
        box = Container(data)
        if self._decoders is None:
            _check_settings(box.codec, box.bitrate, box.sample_rate)
            self._decoders = [_open_decoder(box.codec, box.sample_rate)
                              for _ in range(box.channels)]
            self._pending = [np.zeros(0, np.float32) for _ in range(box.channels)]
            self._skip, self.settings = box.delay, (box.codec, box.channels, box.sample_rate)
        elif (box.codec, box.channels, box.sample_rate) != self.settings:
            raise BaselineError(f"stream changed codec settings mid-way: {self.settings} -> "
                                f"{(box.codec, box.channels, box.sample_rate)}")
        if box.first != self.expected_first:
            self.gaps += 1
        self.expected_first = box.first + box.count
        self.container_first, self.block_start = box.first, self.emitted
        for c, (ctx, packets) in enumerate(zip(self._decoders, box.packets)):
            fresh = [_decode_all(ctx, packets)]
            if box.total is not None:   # end of stream: whatever the decoder still holds
                fresh.append(_decode_all(ctx, [None]))
            self._pending[c] = np.concatenate([self._pending[c], *fresh])
        ready = min(len(p) for p in self._pending)
        block = np.stack([p[:ready] for p in self._pending], axis=1)
        self._pending = [p[ready:] for p in self._pending]
        drop = min(self._skip, len(block))
        block, self._skip = block[drop:], self._skip - drop
        if box.total is not None:
            block = block[:max(0, box.total - self.emitted)]
        self.emitted += len(block)
        return (block / np.float32(10.0 ** (box.gain_db / 20))).astype(np.float32)
