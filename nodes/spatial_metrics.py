"""`spatial_metrics`: live SSDR / SRDR of a decoded audio stream against its reference.

The two inputs are lined up by sample time (meta first_sample_ns, sample_rate), not by packet:
codecs may return blocks of other sizes than they were given. Each side is buffered as one
contiguous run of samples; a window is scored (evaluation.spatial) once both sides cover it.
Samples that cannot be matched — before the other side starts, across a gap, or pushed out of
the bounded buffer — are counted, never silently mixed up. Streams pair up by name.
"""
from __future__ import annotations

import numpy as np

from pipeline.node import Input, Node, Output, Param
from pipeline.packet import MU_LAW, Packet


class _Run:
    """One side's samples: a contiguous block starting at absolute sample index `start`."""

    def __init__(self) -> None:
        self.start = 0
        self.data: np.ndarray | None = None

    @property
    def end(self) -> int:
        return self.start + (0 if self.data is None else len(self.data))

    def add(self, index: int, samples: np.ndarray) -> int:
        """Append samples that begin at `index`; returns how many buffered samples a gap or
        an overlap made unusable."""
        lost = 0
        if self.data is not None and index < self.end:      # overlap: keep what is new
            overlap = min(self.end - index, len(samples))
            samples, index, lost = samples[overlap:], index + overlap, overlap
        if self.data is not None and index > self.end:      # gap: the run cannot continue
            lost += len(self.data)
            self.data = None
        if self.data is None:
            self.start, self.data = index, samples
        elif len(samples):
            self.data = np.concatenate([self.data, samples])
        return lost

    def drop_before(self, index: int) -> int:
        if self.data is None or index <= self.start:
            return 0
        cut = min(index - self.start, len(self.data))
        self.data, self.start = self.data[cut:], self.start + cut
        return cut


class _Pair:
    def __init__(self, rate: int, channels: int, origin_ns: int):
        self.rate, self.channels, self.origin_ns = rate, channels, origin_ns
        self.reference, self.decoded = _Run(), _Run()
        self.next_window: int | None = None
        self.ssdr: list[float] = []
        self.srdr: list[float] = []


class SpatialMetrics(Node):
    """SSDR and SRDR (Watcharasupat & Lerch 2024) per window, with running medians.

    `reference` is the notch-filtered linear input, `decoded` the codec's output brought back to
    the linear domain (after `expand` for companded streams)."""

    reference = Input("audio", "the notch-filtered input, linear (float at full scale or int32)")
    decoded = Input("audio", "decoded audio in the same domain and time base")
    metrics = Output("metrics", "per window: ssdr_db, srdr_db, ssdr_median_db, srdr_median_db, "
                                "window_start_ns, window")
    window_s = Param(float, 1.0, "window length, seconds", min=0.01)
    hop_s = Param(float, 0.5, "hop between windows, seconds", min=0.01)
    max_shift_s = Param(float, 0.1, "largest delay searched between channels, seconds", min=0.0)
    projection = Param(str, "spauq", "spauq: as the reference implementation; delayed: the "
                                     "paper's formula (evaluation/spatial.py)",
                       choices=("spauq", "delayed"))
    max_buffer_s = Param(float, 10.0, "most audio buffered per side while waiting for the "
                                      "other; older samples are dropped and counted", min=0.1)
    print_every = Param(int, 1, "print a line every N windows (0: never)", min=0)

    def setup(self) -> None:
        self._pairs: dict[str, _Pair] = {}
        self.counters.update(windows=0, unmatched_reference_samples=0,
                             unmatched_decoded_samples=0, dropped_samples=0)

    def on_reference(self, packet: Packet) -> None:
        self._take(packet, "reference")

    def on_decoded(self, packet: Packet) -> None:
        self._take(packet, "decoded")

    def _take(self, packet: Packet, side: str) -> None:
        from dance.preprocess import PreprocessError, full_scale
        where = f"node '{self.name}' input '{side}': stream '{packet.stream}' seq {packet.seq}"
        if packet.meta.get("domain") == MU_LAW:
            raise ValueError(f"{where} is μ-law audio; put an expand node before {side}")
        try:
            samples = full_scale(np.asarray(packet.payload))
        except PreprocessError as exc:
            raise ValueError(f"{where}: {exc}") from None
        rate = int(packet.meta.get("sample_rate", 0))
        first_ns = int(packet.meta.get("first_sample_ns", packet.timestamp_ns))
        pair = self._pairs.get(packet.stream)
        if pair is None:
            pair = self._pairs[packet.stream] = _Pair(rate, samples.shape[1], first_ns)
        if (rate, samples.shape[1]) != (pair.rate, pair.channels):
            raise ValueError(f"{where}: {samples.shape[1]} channels at {rate} Hz, the other "
                             f"input has {pair.channels} at {pair.rate} Hz")
        index = round((first_ns - pair.origin_ns) * pair.rate / 1e9)
        run = getattr(pair, side)
        self.counters[f"unmatched_{side}_samples"] += run.add(index, samples)
        limit = round(self.max_buffer_s * pair.rate)
        if len(run.data) > limit:
            self.counters["dropped_samples"] += run.drop_before(run.end - limit)
        self._score(packet.stream, pair)

    def _score(self, stream: str, pair: _Pair) -> None:
        from evaluation.spatial import spatial_metrics
        window, hop = round(self.window_s * pair.rate), round(self.hop_s * pair.rate)
        ref, dec = pair.reference, pair.decoded
        while ref.data is not None and dec.data is not None:
            start = max(ref.start, dec.start)
            if pair.next_window is not None:
                start = max(start, pair.next_window)
            # samples before the window that the other side has no counterpart for
            self.counters["unmatched_reference_samples"] += ref.drop_before(start)
            self.counters["unmatched_decoded_samples"] += dec.drop_before(start)
            pair.next_window = start
            if min(ref.end, dec.end) < start + window:
                break
            a = ref.data[start - ref.start:start - ref.start + window]
            b = dec.data[start - dec.start:start - dec.start + window]
            scores = spatial_metrics(a, b, pair.rate, window_s=window / pair.rate,
                                     hop_s=hop / pair.rate, max_shift_s=self.max_shift_s,
                                     projection=self.projection)
            self._emit_window(stream, pair, start, scores.ssdr_db, scores.srdr_db)
            pair.next_window = start + hop
            ref.drop_before(pair.next_window)       # scored (or skipped by a hop > window)
            dec.drop_before(pair.next_window)

    def _emit_window(self, stream: str, pair: _Pair, start: int, ssdr: float,
                     srdr: float) -> None:
        pair.ssdr.append(ssdr)
        pair.srdr.append(srdr)
        self.counters["windows"] += 1
        start_ns = pair.origin_ns + round(start * 1e9 / pair.rate)
        figures = {"stream": stream, "window": len(pair.ssdr), "window_start_ns": start_ns,
                   "ssdr_db": round(ssdr, 3), "srdr_db": round(srdr, 3),
                   "ssdr_median_db": round(float(np.median(pair.ssdr)), 3),
                   "srdr_median_db": round(float(np.median(pair.srdr)), 3)}
        self.counters[stream] = {k: figures[k] for k in ("window", "ssdr_median_db",
                                                         "srdr_median_db")}
        if self.print_every and len(pair.ssdr) % self.print_every == 0:
            print(f"[{self.name}] {stream} window {figures['window']}: SSDR {ssdr:.2f} dB, "
                  f"SRDR {srdr:.2f} dB (median {figures['ssdr_median_db']:.2f} / "
                  f"{figures['srdr_median_db']:.2f} dB)", flush=True)
        self.emit("metrics", Packet(stream, start_ns, len(pair.ssdr) - 1, figures))
