"""Runs the nodes of one group in this process: a thread per node, bounded inboxes.

Every edge has its own bounded queue with its policy; `block` waits for room, `drop_oldest`
evicts the oldest packet, `latest` keeps only the newest. Every drop is counted. End of stream
flows along edges: a node finishes once all its inputs have ended and drained, then ends its own
outputs. Edges to other groups go through `links.GroupLinks` (sockets, batching, inboxes).
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .graph import EdgeSpec, Graph, NodeSpec, is_source
from .node import Node, Source
from .packet import Packet
from .links import GroupLinks, LinkReceiver, LinkSender


@dataclass
class NodeStats:
    group: str
    type: str
    count_in: int = 0
    count_out: int = 0
    dropped: int = 0
    senders: list = field(default_factory=list)  # LinkSenders: they count their drops
    errors: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=4096))
    started: float = field(default_factory=time.monotonic)
    finished: bool = False

    def snapshot(self) -> dict:
        lat = np.asarray(self.latencies_ms, dtype=float)
        pct = ({"p50": round(float(np.percentile(lat, 50)), 3),
                "p95": round(float(np.percentile(lat, 95)), 3)} if lat.size
               else {"p50": None, "p95": None})
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {"group": self.group, "type": self.type, "in": self.count_in,
                "out": self.count_out, "dropped": self.dropped,
                "dropped_out": sum(sender.dropped for sender in self.senders),
                "errors": self.errors, "latency_ms": pct,
                "rate_hz": round(max(self.count_in, self.count_out) / elapsed, 2),
                "finished": self.finished}


class Inbox:
    """Per-edge bounded queues of one node, served oldest-first across edges."""

    def __init__(self, stats: NodeStats):
        self.cond = threading.Condition()
        self.queues: list[deque] = []
        self.edges: list[EdgeSpec] = []
        self.open: list[bool] = []
        self.stats, self.dead, self._ticket = stats, False, 0

    def add_edge(self, edge: EdgeSpec) -> int:
        self.queues.append(deque())
        self.edges.append(edge)
        self.open.append(True)
        return len(self.queues) - 1

    def put(self, index: int, packet: Packet, hard_stop: threading.Event) -> None:
        edge, queue = self.edges[index], self.queues[index]
        with self.cond:
            if edge.policy == "block":
                while len(queue) >= edge.size and not self.dead and not hard_stop.is_set():
                    self.cond.wait(0.1)
            if self.dead or hard_stop.is_set() or (len(queue) >= edge.size
                                                   and edge.policy == "block"):
                self.stats.dropped += 1
                return
            while len(queue) >= edge.size:
                queue.popleft()
                self.stats.dropped += 1
            self._ticket += 1
            queue.append((self._ticket, time.perf_counter(), packet))
            self.cond.notify_all()

    def close(self, index: int) -> None:
        with self.cond:
            self.open[index] = False
            self.cond.notify_all()

    def kill(self) -> None:
        """The node has failed: refuse (and count) further packets so senders never block."""
        with self.cond:
            self.dead = True
            for queue in self.queues:
                self.stats.dropped += len(queue)
                queue.clear()
            self.cond.notify_all()

    def get(self, hard_stop: threading.Event) -> tuple[str, Packet, float] | None:
        """The oldest waiting packet as (port, packet, enqueue time), or None at end of stream."""
        with self.cond:
            while True:
                if hard_stop.is_set():
                    return None
                ready = [i for i, q in enumerate(self.queues) if q]
                if ready:
                    i = min(ready, key=lambda j: self.queues[j][0][0])
                    _, enqueued, packet = self.queues[i].popleft()
                    self.cond.notify_all()
                    return self.edges[i].dst_port, packet, enqueued
                if not any(self.open):
                    return None
                self.cond.wait(0.1)

    def take_queued(self, port: str, limit: int) -> list[tuple[Packet, float]]:
        """Up to `limit` packets already queued for input `port`, oldest first, without waiting
        (for batched inputs), as (packet, enqueue time)."""
        taken: list[tuple[Packet, float]] = []
        with self.cond:
            queues = [q for q, e in zip(self.queues, self.edges) if e.dst_port == port]
            while len(taken) < limit and (ready := [q for q in queues if q]):
                _, enqueued, packet = min(ready, key=lambda q: q[0][0]).popleft()
                taken.append((packet, enqueued))
            if taken:
                self.cond.notify_all()
        return taken


def failure_text(spec: NodeSpec, exc: Exception) -> str:
    """`node 'x' (type) failed: Error: what`, without the node's name again when the message
    starts with it, and without where in the code (DANCE_TRACEBACK=1 prints that)."""
    text = str(exc).strip()
    for prefix in (f"node '{spec.name}': ", f"{spec.name}: "):
        text = text.removeprefix(prefix)
    return f"node '{spec.name}' ({spec.type}) failed: {type(exc).__name__}" + \
        (f": {text}" if text else "")


class GroupRunner:
    """Builds and runs the nodes of `group`; `run()` returns once they have all finished."""

    def __init__(self, graph: Graph, group: str, endpoints: dict[str, list[str]],
                 on_status: Callable[[dict], None] | None = None,
                 connect_timeout_s: float = 60.0, replica: int = 0):
        self.graph, self.group, self.endpoints = graph, group, endpoints
        self.on_status, self.connect_timeout_s = on_status, connect_timeout_s
        self.replica = replica
        self.worker = graph.groups[group].worker(replica)  # this process's name in reports
        self.stop = threading.Event()       # ask sources to end; the rest drains
        self.hard_stop = threading.Event()  # abandon queues (second Ctrl-C, failure)
        self.error: str | None = None      # the first failure, else a link that never connected
        self.failures: dict[str, str] = {}  # node -> its first failure, in order
        self.specs = graph.group_nodes(group)
        self.stats = {s.name: NodeStats(self.worker, s.type) for s in self.specs}
        self.inboxes = {s.name: Inbox(self.stats[s.name]) for s in self.specs}
        self.links: GroupLinks | None = None
        self.receiver: LinkReceiver | None = None  # the links' inbox, if other groups send here
        self._senders: list[LinkSender] = []
        self.nodes: dict[str, Node] = {}

    # -- wiring -------------------------------------------------------------------------------
    def _routes(self, spec: NodeSpec) -> dict[str, list[Callable[[Packet, bool], None]]]:
        """For each output port of `spec`, the functions that deliver a packet (or its EOS)."""
        assert spec.cls is not None             # a validated graph has every type resolved
        routes: dict[str, list] = {port: [] for port in spec.cls.outputs}
        for edge in self.graph.edges:
            if edge.src != spec.name:
                continue
            if not self.graph.crossing(edge):
                inbox = self.inboxes[edge.dst]
                index = inbox.add_edge(edge)
                routes[edge.src_port].append(self._local_route(inbox, index))
            else:
                routes[edge.src_port].append(self._remote_route(spec, edge))
        return routes

    def _local_route(self, inbox: Inbox, index: int):
        def deliver(packet: Packet | None, eos: bool) -> None:
            if eos:
                inbox.close(index)
            else:
                assert packet is not None, "deliver: a packet or the end of the edge"
                inbox.put(index, packet, self.hard_stop)
        return deliver

    def _remote_route(self, spec: NodeSpec, edge: EdgeSpec):
        assert self.links is not None           # made by _wire, before any route
        sender = self.links.sender(edge)
        self._senders.append(sender)
        self.stats[spec.name].senders.append(sender)
        return sender.deliver

    def _wire(self) -> None:
        self.links = GroupLinks(self.graph, self.group, self.endpoints, self.replica,
                                self.hard_stop)
        for edge in self.links.incoming:
            inbox = self.inboxes[edge.dst]
            index = inbox.add_edge(edge)
            self.links.receive(edge, functools.partial(inbox.put, index, hard_stop=self.hard_stop),
                               functools.partial(inbox.close, index))
        self.receiver = self.links.receiver

    # -- running ------------------------------------------------------------------------------
    def run(self) -> int:
        """Run to completion; returns 0, or 1 when a node failed (see `self.error`)."""
        nodes = self.nodes
        for spec in self.specs:
            assert spec.cls is not None         # a validated graph has every type resolved
            try:
                nodes[spec.name] = spec.cls(name=spec.name, **spec.params)
            except Exception as exc:  # bad params were validated; this is the node's own code
                return self._fail(spec, exc)
        self._wire()
        ready = threading.Barrier(len(self.specs) + 1)
        threads = []
        for spec in self.specs:
            routes = self._routes(spec)
            thread = threading.Thread(target=self._node_main, name=spec.name, daemon=True,
                                      args=(spec, nodes[spec.name], routes, ready))
            threads.append(thread)
            thread.start()
        if self.receiver:
            self.receiver.start()
        # Sources start once the peers are connected, or after the timeout without them: a
        # missing peer costs counted drops, never a stalled sensor.
        for sender in self._senders:
            sender.wait_connected(self.connect_timeout_s, self.stop)
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            pass
        started, waiting_warned = time.monotonic(), False
        try:
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(0.5)
                if self.on_status:
                    self.on_status(self.snapshot())
                if (self.receiver and not waiting_warned and not self.receiver.peers
                        and not self.receiver.received
                        and time.monotonic() - started > self.connect_timeout_s):
                    waiting_warned = True
                    print(f"warning: group '{self.worker}': no sender has connected to "
                          f"{self.receiver.endpoint} after {self.connect_timeout_s:g} s; still "
                          f"waiting (start the groups that send to it)", file=sys.stderr)
        finally:
            never = [e for sender in self._senders for e in sender.never_connected()]
            if never and not self.error:
                self.error = (f"group '{self.worker}': no connection to {', '.join(never)} "
                              f"during the run (is that group running?); what was sent to it "
                              f"is counted as dropped_out")
            self._close()
        return 1 if self.error else 0

    def _node_main(self, spec: NodeSpec, node: Node, routes: dict, ready: threading.Barrier):
        stats = self.stats[spec.name]

        def emit(port: str, packet: Packet) -> None:
            stats.count_out += 1
            for deliver in routes[port]:
                deliver(packet, False)

        try:
            try:
                node.attach(emit, self.stop)
                node.setup()
            finally:
                try:
                    ready.wait()
                except threading.BrokenBarrierError:
                    pass
            if self.error:
                return
            if is_source(spec):
                assert isinstance(node, Source)
                self._run_source(node, stats, emit)
            else:
                self._run_handlers(spec, node, stats)
        except Exception as exc:
            stats.errors += 1
            self._fail(spec, exc)
        finally:
            if self.error:
                self.inboxes[spec.name].kill()
            try:
                node.teardown()
            except Exception as exc:
                stats.errors += 1
                self._fail(spec, exc)
            for port_routes in routes.values():
                for deliver in port_routes:
                    deliver(None, True)
            stats.finished = True

    def _run_source(self, node: Source, stats: NodeStats, emit) -> None:
        single = next(iter(node.outputs)) if len(node.outputs) == 1 else None
        for item in node.run():
            start = time.perf_counter()
            port, packet = item if isinstance(item, tuple) else (single, item)
            emit(port, packet)
            stats.latencies_ms.append((time.perf_counter() - start) * 1000)
            if self.stop.is_set():
                break

    def _run_handlers(self, spec: NodeSpec, node: Node, stats: NodeStats) -> None:
        inbox = self.inboxes[spec.name]
        # packets from other groups can queue while this group waits for its peers to connect:
        # latency counts from when the node could first take them, not that start-up wait
        ready_at = time.perf_counter()
        while (item := inbox.get(self.hard_stop)) is not None:
            port, packet, enqueued = item
            if batch := node.batch_size(port):
                items = [(packet, enqueued)] + inbox.take_queued(port, batch - 1)
                stats.count_in += len(items)
                node.handle_batch(port, [p for p, _ in items])
                done = time.perf_counter()
                stats.latencies_ms.extend((done - max(t, ready_at)) * 1000 for _, t in items)
                continue
            stats.count_in += 1
            node.handle(port, packet)
            stats.latencies_ms.append((time.perf_counter() - max(enqueued, ready_at)) * 1000)
        node.end_of_input()

    def _fail(self, spec: NodeSpec, exc: Exception) -> int:
        """Record a node's first failure (every node's: a second one may fail for its own
        reason) and stop the group. DANCE_TRACEBACK=1 also prints the traceback."""
        self.failures.setdefault(spec.name, failure_text(spec, exc))
        if self.error is None:
            self.error = self.failures[spec.name]
        if os.environ.get("DANCE_TRACEBACK"):
            traceback.print_exception(exc, file=sys.stderr)
        self.stop.set()
        self.inboxes[spec.name].kill()
        return 1

    def request_stop(self, hard: bool = False) -> None:
        self.stop.set()
        if hard:
            self.hard_stop.set()

    def snapshot(self) -> dict:
        """Figures of this process; with replicas, node `x` of replica k reports as `x[k]`."""
        suffix = self.worker[len(self.group):]
        nodes = {name + suffix: {**s.snapshot(), **getattr(self.nodes.get(name), "counters", {})}
                 for name, s in self.stats.items()}
        return {"nodes": nodes,
                "links": {self.worker: self.receiver.stats()} if self.receiver else {},
                "error": self.error, "failures": list(self.failures.values())}

    def _close(self) -> None:
        if self.links:
            self.links.close()
