"""`adapt` and `link_ack`: pick each frame's operating point from the measured link.

On the device, `adapt` sits before an `encode` node and writes a target into each packet's meta.
On the server, `link_ack` receives the encoded packets and sends one small JSON acknowledgement
per packet back to `adapt` over ZeroMQ (a return path outside the graph, which stays a DAG).
From the acknowledgements `adapt` measures, on its own clock only:

- round-trip latency: from the frame reaching `adapt` to its acknowledgement arriving;
- the link's bandwidth: the dispersion of the acks of packets queued behind each other (bytes
  acked over the last 400 ms of a busy period of the link), the median of the last few
  samples. When frames keep finding the link idle (8 in a row, on time, each filling 70% of
  its budget), nothing measures more: the estimate is then raised by 15%, again and again,
  until frames queue and the dispersion of their acks measures the link;
- the encoder's own time (the `encode_ms` the encode node reports).

Per frame it then picks the largest byte budget that arrives within the deadline behind the
bytes planned before it (a virtual queue drained at the estimated rate, so the frame rate the
link can carry follows); a codec with a table of
operating points (bytes, encoder ms, quality per level: the slimmable family ships one) gets
the best level whose bytes and encoder time fit, else the encoder is given the byte budget
(any variable-rate codec). Going down is immediate; going up waits `hysteresis` frames. Frames
that arrive late all the same (an encoder starved of CPU, queues the model leaves out) scale
the budget down by 0.7 each; punctual ones let it recover by 0.02 a frame. Each ack resyncs the
virtual queue: the link has just delivered that frame and owes the ones planned after it.
`fixed_level` turns the controller off (same measurements): the baseline strategies of
benchmarks/adaptive_link.py.
"""
from __future__ import annotations

import json
import math
import statistics
import threading
import time
from collections import deque

import zmq

from pipeline.node import FILE_OR_NAME, OUTPUT, Input, Node, Output, Param
from pipeline.packet import Packet

DEFAULT_ACK_ENDPOINT = "tcp://127.0.0.1:5610"
MAX_ACK_BYTES = 4096
ACK_FIELDS = {"seq": int, "bytes": int, "encoded_ns": int}
BANDWIDTH_SAMPLES = 7
SAMPLE_WINDOW_MS = 400
MIN_SPAN_MS = 150
PROBE_AFTER = 8               # frames in a row finding the link idle before the estimate rises
PROBE_GAIN = 1.15
PROBE_FILL = 0.7              # ... each filling its budget this much (else more would not help)
CEILING_S = 5.0               # probes stay under the estimate of the last late frame this long
LATE = 0.9                      # a frame this close to the deadline makes the budget back off
MIN_BACKOFF = 0.2
MAX_IN_FLIGHT = 4096            # frames remembered until acknowledged (older ones are misses)


class Adapt(Node):
    """Choose each frame's operating point from the bandwidth and latency the link's
    acknowledgements show (put before `encode`; `link_ack` on the receiving side)."""

    packets = Input("any", "frames or audio blocks on their way to an encode node")
    out = Output("any", "the same packets, meta.target = the point chosen for each")
    deadline_ms = Param(float, 250.0, "round trip each frame must make: encode, link, ack", min=1)
    ack_endpoint = Param(str, DEFAULT_ACK_ENDPOINT, "bound here; link_ack nodes connect to it")
    initial_kbps = Param(float, 50.0, "bandwidth assumed until the first acknowledgements (kB/s)",
                         min=0.1)
    headroom = Param(float, 0.8, "share of the estimated bandwidth frames may plan to use",
                     min=0.05, max=1.0)
    hysteresis = Param(int, 3, "frames a larger point must fit before the switch up", min=1)
    fixed_level = Param(int, None, "no control: every frame at this level (baselines)", min=0)
    points = Param(str, "", "checkpoint whose operating-point table (extra.points: level, "
                   "bytes, encoder_ms, psnr_db; benchmarks/slim_points.py writes it) to pick "
                   "from; empty: give the encoder a byte budget", path=FILE_OR_NAME)
    log = Param(str, "", "CSV of every frame: time, choice, bandwidth estimate, latency",
                path=OUTPUT)
    plot = Param(str, "", "PNG of chosen point, bandwidth estimate and latency over time",
                 path=OUTPUT)

    @classmethod
    def check(cls, params: dict, wiring):
        """The points checkpoint exists and holds a table."""
        if params["points"]:
            try:
                operating_points(params["points"])
            except ValueError as exc:
                yield "points", str(exc)

    def setup(self) -> None:
        self.table = operating_points(self.points) if self.points else []
        self.size_correction = 1.0               # actual / table bytes on this content (EWMA)
        self.ctx = zmq.Context()
        self.acks = self.ctx.socket(zmq.PULL)
        self.acks.maxmsgsize = MAX_ACK_BYTES
        self.acks.linger = 0
        self.acks.bind(self.ack_endpoint)
        # acks are read as they arrive (their time is the measurement), handled per frame
        self.arrived: deque[tuple[int, bytes]] = deque()
        self.listening = threading.Event()
        self.listening.set()
        self.listener = threading.Thread(target=self._listen, daemon=True, name="adapt-acks")
        self.listener.start()
        self.seq = 0
        self.in_flight: dict[int, dict] = {}     # seq -> frame record, until acknowledged
        self.frames: list[dict] = []             # every frame, for the log and the report
        self.samples: deque[float] = deque(maxlen=BANDWIDTH_SAMPLES)
        self.encode_ms: deque[float] = deque(maxlen=BANDWIDTH_SAMPLES)
        self.last_ack_ns = 0
        self.period: deque[tuple[int, int]] = deque()   # (ack time, bytes acked) this period
        self.idle_run = 0                        # acked frames in a row that found the link idle
        self.ceiling, self.ceiling_until = 0.0, 0  # the estimate when frames last came late
        self.backoff = 1.0                       # AIMD factor on the budget, after late frames
        self.link_free_ns = 0                    # when the link ends sending what was planned
        self.allowed = None                      # the budget (or table point) in force
        self.higher_for = 0
        self.started_ns = time.monotonic_ns()
        self.counters.update(frames=0, acked=0, ack_rejected=0, within_deadline=0, switches=0,
                             bandwidth_kbps=None, mean_latency_ms=None)

    def _listen(self) -> None:
        while self.listening.is_set():
            if self.acks.poll(50):
                try:
                    while True:
                        self.arrived.append((time.monotonic_ns(), self.acks.recv(zmq.NOBLOCK)))
                except zmq.Again:
                    pass

    # -- measurements ------------------------------------------------------------------------
    def bandwidth(self) -> float:
        """Bytes per second the link delivers (median of recent samples)."""
        return statistics.median(self.samples) if self.samples else self.initial_kbps * 1000

    def _handle_acks(self) -> None:
        while self.arrived:
            now, message = self.arrived.popleft()
            try:
                ack = json.loads(message)
                if not isinstance(ack, dict) or any(
                        not isinstance(ack.get(k), t) or isinstance(ack.get(k), bool)
                        for k, t in ACK_FIELDS.items()):
                    raise ValueError("fields")
                frame = self.in_flight.pop(ack["seq"])
            except (ValueError, KeyError, UnicodeDecodeError):
                self.counters["ack_rejected"] += 1
                continue
            self._acknowledged(frame, ack, now)

    def _acknowledged(self, frame: dict, ack: dict, now: int) -> None:
        frame.update(bytes=ack["bytes"], latency_ms=(now - frame["arrived_ns"]) / 1e6,
                     level=ack.get("level"))
        if isinstance(ack.get("encode_ms"), (int, float)):
            self.encode_ms.append(float(ack["encode_ms"]))
        frame["sample"] = self._sample(ack["encoded_ns"], ack["bytes"], now)
        frame["idle_found"] = ack["encoded_ns"] > self.last_ack_ns
        self.idle_run = self.idle_run + 1 if frame["idle_found"] else 0
        limited = ack["bytes"] >= PROBE_FILL * frame["planned"]   # the budget held it back
        if self.idle_run >= PROBE_AFTER and limited and \
                frame["latency_ms"] < self.deadline_ms * LATE:
            # the link stays idle: no sample can show more than the frames use, so raise the
            # estimate (all its samples) until frames queue and dispersion measures the link
            probe = self.bandwidth() * PROBE_GAIN
            if now < self.ceiling_until:
                probe = min(probe, max(self.bandwidth(), 0.95 * self.ceiling))
            self.samples = deque([probe] * max(1, len(self.samples)), maxlen=BANDWIDTH_SAMPLES)
            self.idle_run = 0
        frame["wire_ms"] = (now - ack["encoded_ns"]) / 1e6
        if self.table and isinstance(ack.get("level"), int):
            listed = next((p["bytes"] for p in self.table if p["level"] == ack["level"]), None)
            if listed:
                self.size_correction = 0.8 * self.size_correction + 0.2 * ack["bytes"] / listed
        # the link has just delivered this frame: what it still owes is the frames planned after
        # it, at the rate as now estimated (the virtual queue follows the real one)
        owed = sum(f["planned"] for f in self.in_flight.values())
        self.link_free_ns = now + int(owed / (self.headroom * self.backoff * self.bandwidth()) * 1e9)
        # what the model of the link leaves out (a busy encoder CPU, queues before it) shows as
        # late frames: back off multiplicatively, recover additively (AIMD)
        if frame["latency_ms"] > self.deadline_ms * LATE:
            self.backoff = max(MIN_BACKOFF, self.backoff * 0.7)
            # probing went past what the link carries: do not probe above this for a while
            self.ceiling, self.ceiling_until = self.bandwidth(), now + CEILING_S * 1e9
        elif frame["latency_ms"] < self.deadline_ms * 0.6:
            self.backoff = min(1.0, self.backoff + 0.02)
        self.last_ack_ns = now
        self.counters["acked"] += 1
        self.counters["within_deadline"] += frame["latency_ms"] <= self.deadline_ms

    def _sample(self, encoded_ns: int, size: int, now: int) -> float | None:
        """A bandwidth sample from the dispersion of acks in a busy period of the link: a
        packet that left after the previous ack found the link idle and starts a period (its
        own bytes are not counted: it may have passed on credit, like a token bucket's burst);
        each packet queued behind adds its bytes at its ack. The sample is the bytes acked over
        the last SAMPLE_WINDOW_MS of the period, once that spans MIN_SPAN_MS, so acks read in
        one burst by a busy receiver cannot make a sample of microseconds."""
        if encoded_ns > self.last_ack_ns or not self.period:
            self.period = deque([(now, 0)])
            return None
        total = self.period[-1][1] + size
        self.period.append((now, total))
        while len(self.period) > 2 and now - self.period[1][0] >= SAMPLE_WINDOW_MS * 1e6:
            self.period.popleft()
        since, acked = self.period[0]
        if now - since < MIN_SPAN_MS * 1e6:
            return None
        self.samples.append((total - acked) / ((now - since) / 1e9))
        return self.samples[-1]

    # -- the choice --------------------------------------------------------------------------
    def budget(self, now_ns: int) -> float:
        """Bytes this frame may take to arrive within the deadline: it leaves the encoder after
        its median time and waits for the link to finish what is planned before it (a virtual
        queue, so frames arriving faster than the link drains get smaller budgets)."""
        rate = self.headroom * self.backoff * self.bandwidth()
        encoded_ns = now_ns + int((statistics.median(self.encode_ms) if self.encode_ms else 0.0)
                                  * 1e6)
        start_ns = max(encoded_ns, self.link_free_ns)
        return max(0.0, rate * (self.deadline_ms / 1e3 - (start_ns - now_ns) / 1e9))

    def _plan(self, now_ns: int, planned: float) -> None:
        """The link is busy with this frame's bytes after what was planned before it."""
        rate = self.headroom * self.bandwidth()
        start_ns = max(now_ns, self.link_free_ns)
        self.link_free_ns = start_ns + int(planned / rate * 1e9)

    def _choose(self, budget: float) -> tuple[dict, float]:
        """(meta target, bytes planned) for a budget, with hysteresis on the way up."""
        if self.allowed is None or budget < self.allowed:
            self.allowed, self.higher_for = budget, 0
        else:
            self.higher_for += 1
            if self.higher_for >= self.hysteresis:
                self.allowed, self.higher_for = budget, 0
        return {"bytes": max(1, int(self.allowed))}, self.allowed

    def _choose_point(self, now_ns: int) -> tuple[dict, float]:
        """The table's best-quality point whose encoder time and (content-corrected) bytes
        arrive within the deadline; a better one only after `hysteresis` frames in a row."""
        rate = self.headroom * self.backoff * self.bandwidth()

        def arrives_in_time(point: dict) -> bool:
            start_ns = max(now_ns + point["encoder_ms"] * 1e6, self.link_free_ns)
            seconds = (start_ns - now_ns) / 1e9 + point["bytes"] * self.size_correction / rate
            return seconds <= self.deadline_ms / 1e3

        fitting = [p for p in self.table if arrives_in_time(p)]
        best = max(fitting, key=lambda p: p["psnr_db"]) if fitting \
            else min(self.table, key=lambda p: p["bytes"])
        current = self.allowed
        if current is None or best["psnr_db"] <= current["psnr_db"] or current not in fitting:
            self.allowed, self.higher_for = best, 0
        else:
            self.higher_for += 1
            if self.higher_for >= self.hysteresis:
                self.allowed, self.higher_for = best, 0
        point = self.allowed
        return {"level": int(point["level"])}, point["bytes"] * self.size_correction

    def on_packets(self, packet: Packet) -> Packet:
        self._handle_acks()
        now = time.monotonic_ns()
        budget = self.budget(now)
        if self.fixed_level is not None:
            target, planned = {"level": self.fixed_level}, 0.0
        else:
            previous = self.allowed
            target, planned = self._choose_point(now) if self.table else self._choose(budget)
            self.counters["switches"] += previous is not None and self.allowed != previous
            self._plan(now, planned)
        self.seq += 1
        frame = {"seq": self.seq, "arrived_ns": now, "t_s": (now - self.started_ns) / 1e9,
                 "target": target, "planned": planned, "budget": budget,
                 "bandwidth": self.bandwidth(), "bytes": None, "latency_ms": None,
                 "level": None}
        self.frames.append(frame)
        self.in_flight[self.seq] = frame
        if len(self.in_flight) > MAX_IN_FLIGHT:
            self.in_flight.pop(min(self.in_flight))
        self.counters["frames"] += 1
        return packet.replace(meta={**packet.meta, "target": target, "adapt_seq": self.seq})

    # -- end ---------------------------------------------------------------------------------
    def teardown(self) -> None:
        if not hasattr(self, "acks"):
            return
        deadline = time.monotonic() + self.deadline_ms / 1e3 * 4   # the last frames' acks
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
            self._handle_acks()
        self.listening.clear()
        self.listener.join()
        self.acks.close()
        self.ctx.term()
        latencies = [f["latency_ms"] for f in self.frames if f["latency_ms"] is not None]
        self.counters["bandwidth_kbps"] = round(self.bandwidth() / 1000, 1)
        self.counters["mean_latency_ms"] = round(sum(latencies) / len(latencies), 1) \
            if latencies else None
        self.counters["deadline_hit_rate"] = round(
            self.counters["within_deadline"] / max(1, self.counters["frames"]), 4)
        if self.log:
            write_log(self.log, self.frames)
        if self.plot:
            plot_frames(self.plot, self.frames, self.deadline_ms)


def operating_points(checkpoint: str) -> list[dict]:
    """The table `benchmarks/slim_points.py` stores in a checkpoint's extra["points"]; a
    ValueError naming the checkpoint when it has none or a malformed one."""
    from dance.zoo import CheckpointError, load_checkpoint, resolve_checkpoint

    try:
        ckpt = load_checkpoint(resolve_checkpoint(checkpoint))
    except (CheckpointError, OSError) as exc:
        raise ValueError(str(exc)) from None
    rows = (ckpt.get("extra") or {}).get("points")
    keys = {"level": int, "bytes": (int, float), "encoder_ms": (int, float),
            "psnr_db": (int, float)}
    if not isinstance(rows, list) or not rows or not all(
            isinstance(r, dict) and all(isinstance(r.get(k), t) for k, t in keys.items())
            for r in rows):
        raise ValueError(f"{checkpoint}: no operating-point table (extra.points with level, "
                         "bytes, encoder_ms, psnr_db): write one with benchmarks/slim_points.py")
    return [{k: r[k] for k in keys} for r in rows]


def write_log(path: str, frames: list[dict]) -> None:
    import csv

    columns = ["seq", "t_s", "t_ns", "target", "level", "planned", "budget", "bandwidth", "bytes",
               "latency_ms", "wire_ms", "sample", "idle_found"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for frame in frames:
            row = {**frame, "t_ns": frame["arrived_ns"],
                   "target": json.dumps(frame["target"], sort_keys=True)}
            writer.writerow(["" if row.get(c) is None else row[c] for c in columns])


def plot_frames(path: str, frames: list[dict], deadline_ms: float,
                offered: list[tuple[float, float]] | None = None) -> None:
    """Chosen point, bandwidth estimate (and the offered rate) and latency over time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [f["t_s"] for f in frames]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    axes[0].step(t, [f["level"] if f["level"] is not None else math.nan for f in frames],
                 where="post")
    axes[0].set_ylabel("level coded")
    axes[1].plot(t, [f["bandwidth"] / 1000 for f in frames], label="estimate")
    if offered:
        axes[1].step([o[0] for o in offered], [o[1] / 1000 for o in offered], where="post",
                     label="link rate", linestyle="--")
    axes[1].set_ylabel("kB/s")
    axes[1].legend(loc="lower right")
    axes[2].plot(t, [f["latency_ms"] if f["latency_ms"] is not None else math.nan
                     for f in frames], ".", markersize=3)
    axes[2].axhline(deadline_ms, color="r", linestyle=":", label="deadline")
    axes[2].set_ylabel("round trip ms")
    axes[2].set_xlabel("seconds")
    axes[2].legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class LinkAck(Node):
    """Acknowledge every encoded packet to the `adapt` node that chose its point (one JSON
    message over ZeroMQ: seq, bytes, level, encoder time, departure time)."""

    encoded = Input("encoded", "packets an adapt node marked (meta adapt_seq)")
    ack_endpoint = Param(str, DEFAULT_ACK_ENDPOINT, "the adapt node's endpoint (connected to)")

    def setup(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.linger = 1000
        self.sock.sndhwm = 1024
        self.sock.connect(self.ack_endpoint)
        self.counters.update(acked=0, unmarked=0)

    def on_encoded(self, packet: Packet) -> None:
        meta = packet.meta
        seq, sent = meta.get("adapt_seq"), meta.get("encoded_ns")
        if not isinstance(seq, int) or not isinstance(sent, int):
            self.counters["unmarked"] += 1
            return
        ack = {"seq": seq, "bytes": len(packet.payload), "encoded_ns": sent,
               "level": meta.get("level"), "encode_ms": meta.get("encode_ms")}
        try:
            self.sock.send(json.dumps(ack).encode(), zmq.NOBLOCK)
            self.counters["acked"] += 1
        except zmq.Again:
            self.counters["unmarked"] += 1

    def teardown(self) -> None:
        if hasattr(self, "sock"):
            self.sock.close()
            self.ctx.term()
