"""Packets: the one unit of data that flows along graph edges and over the wire."""
from __future__ import annotations

import math

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

Payload = Union[np.ndarray, bytes, dict]

# meta["domain"] of audio blocks companded by the `compand` node (float32 in [-1, 1]); codecs
# take them as model input and hand them back companded, for `expand`.
MU_LAW = "mu-law"

# Payload dicts and metadata travel as JSON, so they stay small and flat.
Scalar = Union[int, float, str, bool, None]


@dataclass
class Packet:
    """A timestamped payload on a named stream.

    `timestamp_ns` is the capture time on the device clock (for audio: the first sample of the
    block); `seq` counts packets of this stream from 0. `meta` holds small JSON-able facts such as
    `sample_rate`, `channels`, `pixel_format`.
    """

    stream: str
    timestamp_ns: int
    seq: int
    payload: Payload
    meta: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> "Packet":
        """A copy with some fields changed (meta is copied, payload is shared)."""
        changes.setdefault("meta", dict(self.meta))
        return dataclasses.replace(self, **changes)

    @property
    def nbytes(self) -> int:
        if isinstance(self.payload, np.ndarray):
            return int(self.payload.nbytes)
        if isinstance(self.payload, (bytes, bytearray, memoryview)):
            return len(self.payload)
        return 0


def meta_number(packet: "Packet", key: str, default=None, *, positive: bool = False):
    """A numeric meta field as the wire delivered it, or `default` when it is missing or is not
    a finite number (a string, a bool, a list: metadata types from the wire are not trusted)."""
    value = packet.meta.get(key, default)
    if value is default:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or (positive and value <= 0):
        return default
    return value


def image_packet(stream: str, timestamp_ns: int, seq: int, pixels: np.ndarray,
                 pixel_format: str = "rgb24", **meta: Any) -> Packet:
    """An image frame: `pixels` is H×W×C (or H×W) uint8."""
    meta.update(height=int(pixels.shape[0]), width=int(pixels.shape[1]),
                channels=int(pixels.shape[2]) if pixels.ndim == 3 else 1,
                pixel_format=pixel_format)
    return Packet(stream, timestamp_ns, seq, pixels, meta)


def audio_packet(stream: str, first_sample_ns: int, seq: int, samples: np.ndarray,
                 sample_rate: int, **meta: Any) -> Packet:
    """An audio block: `samples` is frames×channels; the timestamp is that of the first sample."""
    if samples.ndim != 2:
        raise ValueError(f"audio block must be frames×channels, got shape {samples.shape}")
    meta.update(sample_rate=int(sample_rate), channels=int(samples.shape[1]),
                first_sample_ns=int(first_sample_ns))
    return Packet(stream, first_sample_ns, seq, samples, meta)
