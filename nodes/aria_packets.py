"""The packets of the Aria sources, shared by `aria_vrs` (replay) and `aria_live` (streaming), so
that a graph cannot tell a recording from the glasses.

Both build packets from projectaria-tools record types (`ImageDataRecord`, `AudioData`,
`AudioDataRecord`): a VRS file and the client SDK's streaming observer hand out the same ones.
Stream ids and formats are in dance/aria.py. Timestamps are `capture_timestamp_ns` on the
device clock. Frames keep the sensor orientation (the Aria cameras are mounted sideways;
`np.rot90(frame, -1)` shows them upright): neither source rotates, so a model sees the same
pixels live and in replay.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.packet import Packet, audio_packet, image_packet

INT32 = np.iinfo(np.int32)


def frame_packet(name: str, sid: str, seq: int, pixels: np.ndarray, record: Any) -> Packet:
    """A camera frame (H×W×3 RGB or H×W grey) with its `ImageDataRecord` facts."""
    return image_packet(name, int(record.capture_timestamp_ns), seq, pixels,
                        "rgb24" if pixels.ndim == 3 else "gray8", device_stream=sid,
                        frame_number=int(record.frame_number),
                        exposure_s=float(record.exposure_duration), gain=float(record.gain))


def audio_block_packet(name: str, sid: str, seq: int, audio: Any, record: Any,
                       sample_rate: int, where: str) -> Packet:
    """A frames×channels int32 block from an `AudioData` (values interleaved by sample, int32
    delivered as int64) and its `AudioDataRecord` (one capture timestamp per sample); `where`
    names the file or node in errors."""
    stamps = record.capture_timestamps_ns
    values = np.asarray(audio.data, dtype=np.int64)
    if not len(stamps) or values.size % len(stamps):
        raise ValueError(f"{where}: audio record of stream {sid} has {values.size} "
                         f"values for {len(stamps)} timestamps")
    if values.size and (values.min() < INT32.min or values.max() > INT32.max):
        raise ValueError(f"{where}: audio values of stream {sid} exceed int32")
    samples = values.reshape(len(stamps), -1).astype(np.int32)
    return audio_packet(name, int(stamps[0]), seq, samples, sample_rate, device_stream=sid,
                        muted=bool(record.audio_muted))
