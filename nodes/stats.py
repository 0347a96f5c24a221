"""`stats`: per-stream counts and sanity checks, printed as a table when the graph ends."""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from pipeline.node import Input, Node, Param
from pipeline.packet import Packet, meta_number


class StreamStats:
    """Running figures of one stream."""

    def __init__(self) -> None:
        self.packets = self.bytes = self.backwards = self.seq_gaps = 0
        self.raw_bytes = 0  # encoded streams: bytes before compression (meta raw_bytes)
        self.first_ns = self.last_ns = self.last_seq = None
        self.shape: Any = None
        self.dtype = ""
        self.samples = self.channels = self.sample_rate = 0
        self.audio_gaps = 0
        self.bad_meta = 0   # packets whose numeric metadata was not a number (ignored)
        self._next_sample_ns: int | None = None

    def add(self, packet: Packet) -> None:
        ts, payload = packet.timestamp_ns, packet.payload
        self.packets += 1
        self.bytes += packet.nbytes
        if "raw_bytes" in packet.meta:
            raw = meta_number(packet, "raw_bytes")
            if raw is None or raw < 0:
                self.bad_meta += 1
            else:
                self.raw_bytes += int(raw)
        if self.last_ns is not None and ts < self.last_ns:
            self.backwards += 1
        if self.last_seq is not None and packet.seq > self.last_seq + 1:
            self.seq_gaps += packet.seq - self.last_seq - 1
        self.first_ns = ts if self.first_ns is None else self.first_ns
        self.last_ns, self.last_seq = ts, packet.seq
        shape = tuple(payload.shape) if isinstance(payload, np.ndarray) else None
        self.shape = shape if self.packets == 1 or shape == self.shape else "varies"
        self.dtype = (str(payload.dtype) if isinstance(payload, np.ndarray)
                      else type(payload).__name__)
        rate = meta_number(packet, "sample_rate", positive=True)
        self.bad_meta += "sample_rate" in packet.meta and rate is None
        if rate and isinstance(payload, np.ndarray) and payload.ndim == 2:
            self._add_audio(meta_number(packet, "first_sample_ns", ts), payload.shape, int(rate))

    def _add_audio(self, first_sample_ns: int, shape: tuple, rate: int) -> None:
        """Count samples, and blocks that do not start one sample period after the last one."""
        frames, self.channels, self.sample_rate = shape[0], shape[1], rate
        if (self._next_sample_ns is not None
                and abs(first_sample_ns - self._next_sample_ns) > 1e9 / rate):
            self.audio_gaps += 1
        self._next_sample_ns = first_sample_ns + round(frames * 1e9 / rate)
        self.samples += frames

    def as_dict(self) -> dict[str, Any]:
        span_s = (self.last_ns - self.first_ns) / 1e9 if self.packets else 0.0
        figures = {
            "packets": self.packets, "bytes": self.bytes,
            "shape": list(self.shape) if isinstance(self.shape, tuple) else self.shape,
            "dtype": self.dtype, "first_ns": self.first_ns, "last_ns": self.last_ns,
            "span_s": span_s, "rate_hz": (self.packets - 1) / span_s if span_s > 0 else None,
            "monotonic": self.backwards == 0, "backwards": self.backwards,
            "seq_gaps": self.seq_gaps}
        if self.bad_meta:
            figures["bad_meta"] = self.bad_meta
        if self.raw_bytes:
            figures.update(raw_bytes=self.raw_bytes,
                           compression_ratio=round(self.raw_bytes / max(self.bytes, 1), 1))
        if self.sample_rate:
            figures.update(samples=self.samples, channels=self.channels,
                           sample_rate=self.sample_rate, audio_gaps=self.audio_gaps)
        return figures


class StatsSink(Node):
    """Per-stream packets, bytes, samples and timestamp checks, printed as a table at the end.

    Checks that timestamps are monotonic, sequence numbers have no gaps and audio blocks are
    contiguous; the figures stay available as the `summary` dict."""

    packets = Input("any", "packets of any stream")
    print_every = Param(int, 0, "also print a line every N packets; 0 = only the summary", min=0)

    def setup(self) -> None:
        self._streams: dict[str, StreamStats] = {}
        self._count = 0
        self._started = time.monotonic()
        self.summary: dict[str, dict[str, Any]] = {}

    def on_packets(self, packet: Packet) -> None:
        self._streams.setdefault(packet.stream, StreamStats()).add(packet)
        self._count += 1
        if self.print_every and self._count % self.print_every == 0:
            parts = ", ".join(f"{name} {stats.packets}" for name, stats in self._streams.items())
            print(f"[{self.name}] {self._count} packets ({parts})", flush=True)

    def teardown(self) -> None:
        if not hasattr(self, "_streams"):  # the graph stopped before this node was set up
            return
        self.summary = {name: stats.as_dict() for name, stats in self._streams.items()}
        self.counters["streams"] = self.summary  # lands in the run report under this node
        print(format_table(self.name, self.summary, time.monotonic() - self._started),
              flush=True)


def format_table(name: str, summary: dict[str, dict[str, Any]], wall_s: float) -> str:
    header = (f"{'stream':<18} {'packets':>8} {'bytes':>10} {'shape':<14} {'dtype':<7} "
              f"{'span s':>8} {'rate Hz':>8} {'mono':<4} {'seq gaps':>8} {'samples×ch':>12}"
              f"{'ratio':>8}")
    lines = [f"[{name}] {len(summary)} streams after {wall_s:.2f} s wall time", header]
    for stream, figures in summary.items():
        shape = figures["shape"]
        shape = "×".join(map(str, shape)) if isinstance(shape, list) else str(shape or "-")
        rate = figures["rate_hz"]
        audio = (f"{figures['samples']}×{figures['channels']}" if "samples" in figures else "-")
        lines.append(
            f"{stream:<18} {figures['packets']:>8} {_size(figures['bytes']):>10} {shape:<14} "
            f"{figures['dtype']:<7} {figures['span_s']:>8.3f} "
            f"{(f'{rate:.2f}' if rate else '-'):>8} {'yes' if figures['monotonic'] else 'NO':<4} "
            f"{figures['seq_gaps']:>8} {audio:>12}"
            f"{(f'{ratio:.0f}:1' if (ratio := figures.get('compression_ratio')) else '-'):>8}")
    if not summary:
        lines.append("(no packets)")
    return "\n".join(lines)


def _size(nbytes: float) -> str:
    if nbytes < 1024:
        return f"{nbytes:.0f} B"
    for unit in ("KB", "MB", "GB"):
        nbytes /= 1024
        if nbytes < 1024 or unit == "GB":
            break
    return f"{nbytes:.1f} {unit}"
