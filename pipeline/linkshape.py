"""Real link emulation for tests and benchmarks: a private network namespace (`unshare -n`,
root) whose loopback is rate-shaped by `tc qdisc ... tbf`, its rate following a bandwidth trace.

netem is not available on these kernels; a token bucket is. Everything a benchmark starts inside
the namespace (graph processes, ZeroMQ links on 127.0.0.1) shares the shaped loopback, in both
directions, like the two ends of one radio link. The loopback MTU is set to 1500 so that packets
are Ethernet-sized, and the bucket holds one packet: tbf drops any packet larger than its
bucket, and a larger bucket would let bursts pass above the rate, which a radio link does not.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Sequence

NAMESPACE_FLAG = "DANCE_SHAPED_NETNS"   # set in the environment of a process inside one
MTU = 1500
BURST_BYTES = MTU + 100             # one packet: no bursts above the rate (a radio has none)
QUEUE_LATENCY_MS = 400                  # packets wait at most this long in the bucket's queue


class ShapingError(RuntimeError):
    """tc or unshare failed; the message is one line with the command's own complaint."""


@dataclass(frozen=True)
class Segment:
    seconds: float
    bytes_per_s: float


def parse_trace(text: str) -> list[Segment]:
    """"200:10,80:10,200:10" -> kB/s for seconds, one segment after the other."""
    segments = []
    for part in text.split(","):
        try:
            rate, seconds = (float(v) for v in part.split(":"))
        except ValueError:
            raise ValueError(f"trace {text!r}: expected KBPS:SECONDS,... (e.g. 200:10,80:10)") \
                from None
        if rate <= 0 or seconds <= 0:
            raise ValueError(f"trace {text!r}: rates and durations must be positive")
        segments.append(Segment(seconds, rate * 1000))
    return segments


def unavailable() -> str | None:
    """Why shaping cannot run here (None: it can): a skip reason for tests."""
    if os.geteuid() != 0:
        return "link emulation needs root (unshare -n and tc qdisc on the namespace's loopback)"
    missing = [tool for tool in ("unshare", "tc", "ip") if shutil.which(tool) is None]
    if missing:
        return f"link emulation needs {', '.join(missing)} (iproute2, util-linux)"
    probe = subprocess.run(["unshare", "-n", "tc", "qdisc", "add", "dev", "lo", "root", "tbf",
                            "rate", "1mbit", "burst", "16kb", "latency", "50ms"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"tc tbf is not available here: {probe.stderr.strip() or probe.returncode}"
    return None


def inside() -> bool:
    return os.environ.get(NAMESPACE_FLAG) == "1"


def run_inside(argv: Sequence[str], timeout: float | None = None,
               **kwargs) -> subprocess.CompletedProcess:
    """Run `argv` in a fresh network namespace with its loopback up (MTU 1500, not shaped yet:
    the child calls set_rate or follow)."""
    env = {**os.environ, NAMESPACE_FLAG: "1", **kwargs.pop("env", {})}
    script = f"ip link set lo mtu {MTU} up && exec \"$@\""
    return subprocess.run(["unshare", "-n", "sh", "-c", script, "sh", *argv], env=env,
                          timeout=timeout, **kwargs)


def set_rate(bytes_per_s: float) -> None:
    """Shape the loopback to `bytes_per_s` (replaces the previous rate at once)."""
    if not inside():
        raise ShapingError("set_rate shapes the loopback of a namespace made by run_inside; "
                           "refusing to shape this machine's own loopback")
    command = ["tc", "qdisc", "replace", "dev", "lo", "root", "tbf",
               "rate", f"{int(bytes_per_s * 8)}bit", "burst", str(BURST_BYTES),
               "latency", f"{QUEUE_LATENCY_MS}ms"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ShapingError(f"{' '.join(command)}: {done.stderr.strip()}")


class TraceFollower(threading.Thread):
    """Sets each segment's rate at its start; `rate_at(t)` tells what the link offered when."""

    def __init__(self, segments: Sequence[Segment]):
        super().__init__(daemon=True, name="link-trace")
        self.segments = list(segments)
        self.started_at = 0.0
        self.stopped = threading.Event()
        self.error: Exception | None = None

    @property
    def duration(self) -> float:
        return sum(s.seconds for s in self.segments)

    def start(self) -> None:
        set_rate(self.segments[0].bytes_per_s)   # the first rate is in place before start returns
        self.started_at = time.monotonic()
        super().start()

    def run(self) -> None:
        try:
            edge = self.started_at
            for previous, segment in zip(self.segments, self.segments[1:]):
                edge += previous.seconds
                if self.stopped.wait(max(0.0, edge - time.monotonic())):
                    return
                set_rate(segment.bytes_per_s)
        except ShapingError as exc:
            self.error = exc

    def rate_at(self, elapsed: float) -> float:
        edge = 0.0
        for segment in self.segments:
            edge += segment.seconds
            if elapsed < edge:
                return segment.bytes_per_s
        return self.segments[-1].bytes_per_s

    def segment_at(self, elapsed: float) -> int:
        edge = 0.0
        for number, segment in enumerate(self.segments):
            edge += segment.seconds
            if elapsed < edge:
                return number
        return len(self.segments) - 1

    def stop(self) -> None:
        self.stopped.set()


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.linkshape TRACE -- COMMAND...`: run COMMAND on a shaped loopback."""
    args = sys.argv[1:] if argv is None else argv
    if "--" not in args or args.index("--") != 1:
        print("usage: python -m pipeline.linkshape KBPS:SECONDS,... -- COMMAND [ARGS...]",
              file=sys.stderr)
        return 2
    reason = unavailable()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    if not inside():
        return run_inside([sys.executable, "-m", "pipeline.linkshape", *args]).returncode
    try:
        follower = TraceFollower(parse_trace(args[0]))
        follower.start()
    except (ValueError, ShapingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return subprocess.run(args[2:]).returncode
    finally:
        follower.stop()


if __name__ == "__main__":
    sys.exit(main())
