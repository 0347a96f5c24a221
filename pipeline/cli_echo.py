"""`dance echo GRAPH NODE.PORT`: run a graph and print one line per packet that NODE emits on
PORT, then the stream's rates (like `ros2 topic echo` and `ros2 topic hz`).

The graph runs in this process, every local group on its own `GroupRunner` thread joined by the
same ZeroMQ links `dance run` uses. A tap node is added to NODE's group and fed by an extra
`drop_oldest` edge from NODE.PORT, so a slow terminal drops (and counts) tapped packets instead
of holding the graph back.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

import numpy as np

from . import graph as graphs
from .graph import EdgeSpec, NodeSpec
from .launcher import DRAIN_TIMEOUT_S, error_lines, resolve_endpoints
from .node import ANY, Input, Node
from .packet import Packet
from .runtime import GroupRunner

TAP = "_echo"
TAP_QUEUE = 256


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("echo", help="run a graph and print the packets of one output port",
                       description="Run GRAPH (its local groups, in this process) and print "
                       "one line per packet NODE emits on PORT: stream, seq, timestamp, payload "
                       "kind and shape; then the packet rate by arrival and by timestamp.")
    p.add_argument("graph", help="graph YAML file")
    p.add_argument("port", metavar="NODE.PORT", help="output port to watch, e.g. glasses.audio")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override a node parameter (YAML value), repeatable")
    p.add_argument("-n", "--count", type=int, metavar="N", help="stop the graph after N packets")
    p.add_argument("--duration", type=float, metavar="S", help="stop sources after S seconds")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per packet (as the jsonl node writes), no summary")
    p.set_defaults(func=cmd_echo)


class Watch:
    """What the tap saw: prints each packet, keeps arrival times and timestamps for the rates."""

    def __init__(self, as_json: bool, count: int | None, on_enough):
        self.as_json, self.count, self.on_enough = as_json, count, on_enough
        self.lock = threading.Lock()
        self.arrivals: list[float] = []
        self.timestamps: list[int] = []
        self.bytes = 0

    def packet(self, packet: Packet) -> None:
        with self.lock:
            if self.count is not None and len(self.arrivals) >= self.count:
                return
            self.arrivals.append(time.monotonic())
            self.timestamps.append(packet.timestamp_ns)
            self.bytes += packet.nbytes
            print(_json_line(packet) if self.as_json else describe(packet), flush=True)
            if self.count is not None and len(self.arrivals) == self.count:
                self.on_enough()

    def summary(self, port: str, dropped: int) -> str:
        n = len(self.arrivals)
        if n < 2:
            return f"{port}: {n} packet(s), too few for a rate" + _drops(dropped)
        wall = self.arrivals[-1] - self.arrivals[0]
        gaps = np.diff(self.arrivals) * 1000
        span = (max(self.timestamps) - min(self.timestamps)) / 1e9
        by_time = f"{(n - 1) / span:.2f} Hz" if span > 0 else "- Hz"
        by_wall = f"{(n - 1) / wall:.2f} Hz" if wall > 0 else "- Hz"
        return (f"{port}: {n} packets, {self.bytes:,} bytes; rate {by_wall} by arrival "
                f"(gap min {gaps.min():.2f} / mean {gaps.mean():.2f} / max {gaps.max():.2f} ms, "
                f"std {gaps.std():.2f}), {by_time} by timestamp over {span:.3f} s"
                + _drops(dropped))


def _drops(dropped: int) -> str:
    return f"; {dropped} dropped by the tap (the terminal fell behind)" if dropped else ""


def describe(packet: Packet) -> str:
    """One line: stream, seq, timestamp, payload kind, shape or keys, bytes."""
    payload = packet.payload
    if isinstance(payload, np.ndarray):
        kind = f"{payload.dtype} {'×'.join(map(str, payload.shape))}"
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        kind = f"bytes {len(payload):,}"
    else:
        text = json.dumps(payload, default=str, allow_nan=True)
        kind = f"dict {text if len(text) <= 80 else text[:77] + '...'}"
    return f"{packet.stream} seq {packet.seq} t {packet.timestamp_ns / 1e9:.6f} s  {kind}"


def _json_line(packet: Packet) -> str:
    from nodes.jsonl import payload_summary, strict_json
    return json.dumps(strict_json({"stream": packet.stream, "timestamp_ns": packet.timestamp_ns,
                                   "seq": packet.seq, "meta": packet.meta,
                                   "payload": payload_summary(packet.payload)}), default=str)


class EchoTap(Node):
    """Hands every packet to the `Watch` of `dance echo` (set on a subclass per run)."""

    packets = Input(ANY, "the watched port's packets")
    watch: Watch

    def on_packets(self, packet: Packet) -> None:
        self.watch.packet(packet)


def add_tap(graph: graphs.Graph, target: str, watch: Watch) -> str:
    """Add the tap node and its edge to `graph`; returns the tapped node's group. Raises
    graphs.GraphError (one line) for a port that is not an output of the graph's nodes."""
    node, _, port = target.partition(".")
    spec = graph.nodes.get(node)
    if spec is None or not port:
        raise graphs.GraphError([f"error: {graph.path}: no node '{node}' (nodes: "
                                 f"{', '.join(graph.nodes)}); give NODE.PORT"])
    assert spec.cls is not None             # a loaded graph has every type resolved
    if port not in spec.cls.outputs:
        raise graphs.GraphError([f"error: {graph.path}: node '{node}' ({spec.type}) has no output "
                                 f"'{port}' (outputs: {', '.join(spec.cls.outputs) or 'none'})"])
    if graph.groups[spec.group].host != "local":
        raise graphs.GraphError([f"error: {graph.path}: node '{node}' runs on host "
                                 f"'{graph.groups[spec.group].host}'; echo runs local groups"])
    tap = type("EchoTap", (EchoTap,), {"watch": watch})
    graph.nodes[TAP] = NodeSpec(TAP, f"{__name__}:EchoTap", spec.group, {}, 0, cls=tap)
    graph.edges.append(EdgeSpec(node, port, TAP, "packets", policy="drop_oldest",
                                size=TAP_QUEUE))
    return spec.group


def _later(seconds: float, function, *args) -> None:
    timer = threading.Timer(seconds, function, args)
    timer.daemon = True
    timer.start()


def cmd_echo(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        print(f"error: --count {args.count}: expected a positive number", file=sys.stderr)
        return 2
    runners: list[GroupRunner] = []

    def stop(hard: bool = False) -> None:
        for runner in runners:
            runner.request_stop(hard)
        if not hard:     # abandon what has not drained after a grace period
            _later(DRAIN_TIMEOUT_S, stop, True)

    watch = Watch(args.json, args.count, stop)
    try:
        graph = graphs.load(args.graph, args.set)
        add_tap(graph, args.port, watch)
    except graphs.GraphError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    endpoints = resolve_endpoints(graph)
    for name, group in graph.groups.items():
        if group.host == "local":
            runners += [GroupRunner(graph, name, endpoints, replica=k)
                        for k in range(group.replicas)]
        else:
            print(f"note: group '{name}' runs on host '{group.host}': start it there with "
                  f"`dance run {graph.path} --group {name}`", file=sys.stderr)
    presses = []

    def on_signal(signum, frame) -> None:
        presses.append(signum)
        stop(hard=len(presses) > 1)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    if args.duration:
        _later(args.duration, stop)
    codes = [0] * len(runners)

    def run(i: int) -> None:
        codes[i] = runners[i].run()
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(runners))]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(0.2)
    dropped = sum(r.stats[TAP].dropped for r in runners if TAP in r.stats)
    if not args.json:
        print(watch.summary(args.port, dropped))
    errors = error_lines([r.snapshot() for r in runners])
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors or any(codes) else 0
