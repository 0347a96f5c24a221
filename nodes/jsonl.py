"""`jsonl`: one JSON object per packet, for metrics and events read line by line."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.node import OUTPUT, Input, Node, Param
from pipeline.packet import Packet


def payload_summary(payload: Any) -> Any:
    """Dict payloads as they are; arrays and bytes as their dtype/shape/size only."""
    if isinstance(payload, np.ndarray):
        return {"dtype": str(payload.dtype), "shape": list(payload.shape),
                "nbytes": int(payload.nbytes)}
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return {"dtype": "bytes", "nbytes": len(payload)}
    return payload


def strict_json(value: Any) -> Any:
    """`value` with numpy scalars as Python numbers and NaN/±inf as null (strict JSON)."""
    if isinstance(value, dict):
        return {str(key): strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlSink(Node):
    """One JSON line per packet: stream, timestamp_ns, seq, meta and payload (summarised).

    Each line is flushed at once, so a crash loses nothing already received."""

    packets = Input("any", "packets of any stream")
    path = Param(str, doc="output file (created, or overwritten if it exists)", path=OUTPUT)

    def setup(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8")

    def on_packets(self, packet: Packet) -> None:
        line = json.dumps(strict_json({
            "stream": packet.stream, "timestamp_ns": packet.timestamp_ns, "seq": packet.seq,
            "meta": packet.meta, "payload": payload_summary(packet.payload)}), default=str)
        self._file.write(line + "\n")
        self._file.flush()

    def teardown(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()
