"""The links of one group process: ZeroMQ sockets, send and receive loops, batching.

A PUSH sender per outgoing edge (one socket per replica of the receiving group; packets go
round-robin to the replicas with room), one PULL inbox per group process. A link message is the
edge's route (`transport.route_prefix`) followed by one packet (`wire.pack`) or, while the link
is saturated, a batch of small packets (`wire.pack_batch`): an idle link sends each packet at
once, so batching costs no latency. Receivers validate everything, count rejects and keep
serving. The runtime (pipeline/runtime.py) only schedules nodes; `GroupLinks` is all it uses.
"""
from __future__ import annotations

import struct
import sys
import threading
import time
from typing import Callable

import zmq

from . import wire
from .packet import Packet
from .transport import POLL_MS, CurveServer, apply_curve_client, count_peers, route_prefix

BATCH_COUNT = 64            # small packets a saturated sender gathers into one message
BATCH_BYTES = 256 * 1024    # ... and their bytes (a bigger packet waits alone)
# a packet that follows the previous send by less than this is held for the flusher, which
# sends what gathered meanwhile as one batch: a fast stream batches before ZeroMQ's queue
# fills (per-message costs dominate small packets), a paced one (>= 10 kHz apart) never waits
BATCH_WINDOW_NS = 100_000
RCVHWM = 4                  # messages ZeroMQ buffers per connection while the inbox is busy
_ROUTE_MAX = 2 + 0xFFFF
_HEADER_MAX = 30 + 8 * wire.MAX_NDIM + 0xFFFF + wire.MAX_META_BYTES


def max_message(max_bytes: int) -> int:
    """The largest legal link message for packets of up to `max_bytes`: libzmq refuses longer
    frames as their size arrives, before allocating them, and drops that connection."""
    return _ROUTE_MAX + max(_HEADER_MAX + max_bytes, wire.BATCH_MAX_BYTES)


class _Pipe:
    """One PUSH socket connected to one inbox, and its connection state (socket monitor)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, hwm: int, curve_keys: str | None):
        self.endpoint = endpoint
        self.sock = ctx.socket(zmq.PUSH)
        self.sock.sndhwm = max(2, hwm)
        self.sock.immediate = True  # queue only on live connections
        if curve_keys:
            apply_curve_client(self.sock, curve_keys)
        self.monitor = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        self.sock.connect(endpoint)
        self.peers = 0
        self.ever_connected = False
        self.announced = False  # we said it has no peer; say so when it connects

    def track(self, timeout_ms: int = 0) -> None:
        self.peers, connected = count_peers(self.monitor, self.peers, timeout_ms)
        self.ever_connected |= connected

    def send(self, parts: list) -> None:
        """Send without waiting (raises zmq.Again); once the first part is accepted, ZeroMQ
        accepts the rest of the message."""
        if len(parts) == 1:
            self.sock.send(parts[0], zmq.NOBLOCK)
        else:
            self.sock.send(parts[0], zmq.NOBLOCK | zmq.SNDMORE)
            self.sock.send(parts[1], copy=False)

    def close(self) -> None:
        """Close; what is still queued gets up to 30 s to reach a live peer."""
        self.track()
        self.sock.linger = 30_000 if self.peers else 0
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close()


class LinkSender:
    """The sender of one edge, called from the thread of its source node.

    A packet goes out at once when a replica has room. When none has (the link is saturated),
    it is held, with the packets after it, up to BATCH_COUNT / BATCH_BYTES, and a flusher
    thread sends what is held as one batch as soon as there is room: fewer, larger messages
    while saturated, no added latency otherwise. Both threads use the sockets only under
    `_lock` (ZeroMQ allows that with a memory barrier; a lock is one).

    `block` waits for room in the held batch as long as some replica is connected (a slow
    consumer slows the sender, nothing is lost); while none is connected, packets are dropped
    at once and counted, so a dead or missing peer never stalls or bloats the sender. ZeroMQ
    keeps reconnecting, and delivery resumes when the peer is back. Otherwise (`drop_oldest`,
    `latest`) it never waits: ZeroMQ cannot evict its queue, so overflow drops the newest
    packet here. `dropped` counts every drop.
    """

    def __init__(self, ctx: zmq.Context, endpoints: str | list[str], hwm: int, route: str,
                 block: bool = True, stop: threading.Event | None = None,
                 curve_keys: str | None = None, peer: str = ""):
        endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self.pipes = [_Pipe(ctx, endpoint, hwm, curve_keys) for endpoint in endpoints]
        self.endpoint = ", ".join(endpoints)
        self.label = f"link to {peer} at {self.endpoint}" if peer else f"link to {self.endpoint}"
        self.prefix, self.block = route_prefix(route), block
        self.stop = stop or threading.Event()
        self._next = 0
        self._poller = zmq.Poller()
        for pipe in self.pipes:
            self._poller.register(pipe.sock, zmq.POLLOUT)
        self.dropped = 0
        self.dropped_unconnected = 0  # packets dropped since the link last had a peer
        self._lock = threading.Lock()       # the sockets
        self._cond = threading.Condition()  # the held packets and the counters
        self._held: list = []   # bytes: a small packet without route; list: frames to send
        self._held_bytes = 0
        self._last_send_ns = 0
        self._flushing = self._closing = False
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                         name=f"flush {self.label}")
        self._flusher.start()

    @property
    def peers(self) -> int:
        return sum(pipe.peers for pipe in self.pipes)

    def deliver(self, packet: Packet | None, eos: bool) -> None:
        """The runtime's route function: a packet, or the end of the edge for every replica."""
        if eos:
            self.send_to_all(wire.end_of_stream())
        else:
            assert packet is not None, "deliver: a packet or the end of the edge"
            self.send(wire.encode(packet))

    # -- sending (the node's thread) ----------------------------------------------------------
    def send(self, frames: list) -> bool:
        """Send or hold one packet's [header, body]; False means it was dropped (and counted)."""
        with self._cond:
            now = time.perf_counter_ns()
            recent, self._last_send_ns = now - self._last_send_ns < BATCH_WINDOW_NS, now
            if not self._held and not recent and self._lock.acquire(blocking=False):
                try:
                    if self._send_round_robin(wire.pack(frames, self.prefix)):
                        if self.dropped_unconnected or any(p.announced for p in self.pipes):
                            self._track_peers()  # a peer is back: say so
                        return True
                    self._track_peers()
                    if not self.peers:
                        self._drop(1)
                        return False
                finally:
                    self._lock.release()
            header, body = frames
            small = len(body) <= wire.INLINE_MAX
            item = b"".join((header, body)) if small else wire.pack(frames, self.prefix)
            size = len(header) + len(body)
            while self._held and (len(self._held) >= BATCH_COUNT
                                  or self._held_bytes + size > BATCH_BYTES):
                if not self.block or self.stop.is_set():
                    self._drop(1, connected=True)
                    return False
                self._cond.wait(POLL_MS / 1000)
            self._held.append(item)
            self._held_bytes += size
            if len(self._held) == 1:
                self._cond.notify_all()  # the flusher waits for a first packet
            return True

    def send_to_all(self, frames: list) -> None:
        """Send to every connected replica once what is held has gone, waiting for room (end of
        stream reaches them all, after the packets before it)."""
        with self._cond:
            while (self._held or self._flushing) and not self.stop.is_set():
                self._cond.wait(POLL_MS / 1000)
        parts = wire.pack(frames, self.prefix)
        with self._lock:
            self._track_peers()
            for pipe in self.pipes:
                while pipe.peers and not self.stop.is_set():
                    try:
                        pipe.send(parts)
                        break
                    except zmq.Again:
                        pipe.sock.poll(POLL_MS, zmq.POLLOUT)
                        pipe.track()

    def _drop(self, count: int, connected: bool = False) -> None:
        """Count `count` dropped packets; unless the link is `connected` (full), warn once that
        it has no peer."""
        with self._cond:
            self.dropped += count
            if connected:
                return
            self.dropped_unconnected += count
        if not any(pipe.announced for pipe in self.pipes):
            for pipe in self.pipes:
                pipe.announced = True
            print(f"warning: {self.label} has no peer (gone?); dropping and counting "
                  f"packets until it reconnects", file=sys.stderr)

    # -- the flusher thread -------------------------------------------------------------------
    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                while not self._held and not self._closing:
                    self._cond.wait()
                if not self._held:
                    return
            with self._lock:
                self._wait_room()  # the node goes on adding to the batch meanwhile
                with self._cond:
                    held, self._held, self._held_bytes = self._held, [], 0
                    self._flushing = True
                    self._cond.notify_all()
                for parts, count in self._messages(held):
                    if not self._send_waiting(parts):
                        self._drop(count, connected=bool(self.peers))
                with self._cond:
                    self._flushing = False
                    self._cond.notify_all()

    def _messages(self, held: list) -> list[tuple[list, int]]:
        """Held packets as messages, in order: runs of small ones as batches."""
        out, run = [], []
        for item in held + [None]:
            if isinstance(item, bytes):
                run.append(item)
                continue
            if len(run) > 1:
                out.append(([wire.pack_batch(run, self.prefix)], len(run)))
            elif run:
                out.append(([self.prefix + run[0]], 1))
            run = []
            if item is not None:
                out.append((item, 1))
        return out

    def _wait_room(self) -> None:
        """Wait until a replica has room, none is connected, or the stop (`_lock` held)."""
        self._track_peers()
        while self.peers and not self.stop.is_set() and not self._poller.poll(POLL_MS):
            self._track_peers()

    def _send_waiting(self, parts: list) -> bool:
        """Send, waiting for room while a replica is connected (call with `_lock` held)."""
        while not self._send_round_robin(parts):
            self._track_peers()
            if not self.peers or self.stop.is_set():
                return False
            self._poller.poll(POLL_MS)
        return True

    # -- sockets (with `_lock` held) ----------------------------------------------------------
    def _send_round_robin(self, parts: list) -> bool:
        count = len(self.pipes)
        for i in range(count):
            index = (self._next + i) % count
            try:
                self.pipes[index].send(parts)
            except zmq.Again:
                continue
            self._next = (index + 1) % count
            return True
        return False

    def _track_peers(self, timeout_ms: int = 0) -> None:
        for pipe in self.pipes:
            had = pipe.peers
            pipe.track(timeout_ms)
            if pipe.peers and pipe.announced:
                pipe.announced = False
                with self._cond:
                    dropped, self.dropped_unconnected = self.dropped_unconnected, 0
                which = f": {pipe.endpoint}" if len(self.pipes) > 1 else ""
                print(f"note: {self.label}{which} is connected" +
                      (f"; {dropped} packets were dropped while it had no peer" if dropped
                       else ""), file=sys.stderr)
            elif had and not pipe.peers and self.peers:
                pipe.announced = True
                print(f"warning: {self.label}: lost the peer at {pipe.endpoint}; the other "
                      f"replicas take its packets until it reconnects", file=sys.stderr)

    # -- connection state ---------------------------------------------------------------------
    def wait_connected(self, timeout_s: float, stop: threading.Event | None = None) -> bool:
        """Wait until every replica is connected, at most `timeout_s` (or until `stop`); True if
        they are. If not, warn once: the caller goes on, and packets nobody can take are
        counted drops."""
        deadline = time.monotonic() + timeout_s
        while self.missing() and time.monotonic() < deadline and not (stop and stop.is_set()):
            with self._lock:
                self._track_peers(POLL_MS // len(self.pipes))
        missing = self.missing()
        for pipe in self.pipes:
            pipe.announced = not pipe.peers
        if missing and not (stop and stop.is_set()):
            which = f" at {', '.join(missing)}" if len(self.pipes) > 1 else ""
            print(f"warning: {self.label}: no peer{which} after {timeout_s:g} s (is that group "
                  f"running?); going on, its packets are dropped and counted until it connects",
                  file=sys.stderr)
        return not missing

    def missing(self) -> list[str]:
        """Endpoints without a connected peer."""
        return [pipe.endpoint for pipe in self.pipes if not pipe.peers]

    def never_connected(self) -> list[str]:
        return [pipe.endpoint for pipe in self.pipes if not pipe.ever_connected]

    def close(self) -> None:
        """Stop the flusher (what it holds is sent first, or dropped on a hard stop) and close
        the sockets."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._flusher.join()
        with self._lock:
            for pipe in self.pipes:
                pipe.close()


class LinkReceiver(threading.Thread):
    """The PULL inbox of a group: validates each message and hands its packets to `deliver`.

    Memory is bounded per link: libzmq refuses a frame longer than the largest legal message
    (`max_message(max_bytes)`) before allocating it, and while `deliver` waits (a `block` edge
    with a slow consumer) ZeroMQ buffers at most RCVHWM messages per connection; a batch keeps
    a saturated link fast with so few."""

    def __init__(self, ctx: zmq.Context, endpoint: str,
                 deliver: Callable[[str, Packet, bool], bool], hwm: int = RCVHWM,
                 max_bytes: int = wire.DEFAULT_MAX_BYTES, curve: CurveServer | None = None,
                 knows: Callable[[str], bool] | None = None):
        super().__init__(name=f"inbox {endpoint}", daemon=True)
        self.deliver, self.max_bytes = deliver, max_bytes
        self.decoder = wire.Decoder(max_bytes)
        self.knows = knows      # route check before the message is parsed (None: deliver says)
        self.sock = ctx.socket(zmq.PULL)
        self.sock.rcvhwm = hwm
        self.sock.maxmsgsize = max_message(max_bytes)
        self.sock.linger = 0
        if curve:
            curve.apply(self.sock)
        self._monitor = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        self.sock.bind(endpoint)
        self.endpoint = self.sock.last_endpoint.decode()
        self.received = self.rejected = 0
        self.batches = 0  # messages that carried a batch
        self.peers = 0  # senders connected right now
        self.last_reject = ""
        self.done = threading.Event()

    def _track_peers(self) -> None:
        self.peers, _ = count_peers(self._monitor, self.peers)

    def run(self) -> None:
        try:
            while not self.done.is_set():
                self._track_peers()
                if not self.sock.poll(POLL_MS):
                    continue
                while True:  # drain what is queued before polling again
                    try:
                        first = self.sock.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    frames = [first]
                    while self.sock.rcvmore:
                        frames.append(self.sock.recv(copy=False))
                    self._accept(frames)
        finally:
            self.sock.disable_monitor()
            self._monitor.close(0)
            self.sock.close()

    def _accept(self, frames: list) -> None:
        """Deliver a message's packets, or count it as one reject: a batch is delivered whole
        or not at all."""
        try:
            if len(frames) > 2:
                raise wire.WireError(f"expected 1 or 2 frames, got {len(frames)}")
            first = memoryview(frames[0])
            if len(first) < 2:
                raise wire.WireError("message shorter than its route length")
            end = 2 + struct.unpack_from("<H", first)[0]
            route = str(first[2:end], "utf-8")
            if self.knows is not None and not self.knows(route):
                raise wire.WireError(f"unknown route {route[:80]!r}")
            rest = first[end:]
            if len(frames) == 1 and wire.is_batch(rest):
                packets = self.decoder.decode_batch(rest)
                self.batches += 1
            else:
                packets = [self.decoder.decode([rest, *frames[1:]])]
            for packet, eos in packets:
                if not self.deliver(route, packet, eos):
                    raise wire.WireError(f"unknown route {route[:80]!r}")
                self.received += not eos
        except (wire.WireError, UnicodeDecodeError) as exc:
            self.rejected += 1
            self.last_reject = str(exc)
        except Exception as exc:  # noqa: BLE001 - a parser bug must not end the inbox
            self.rejected += 1
            self.last_reject = f"{type(exc).__name__}: {exc}"[:300]

    def stats(self) -> dict:
        return {"endpoint": self.endpoint, "received": self.received, "rejected": self.rejected,
                "last_reject": self.last_reject, "peers": self.peers, "batches": self.batches}


class GroupLinks:
    """The links of one group process (replica `replica` of `group`) on one ZeroMQ context:
    the inbox for the edges coming from other groups, a sender per edge going to them."""

    def __init__(self, graph, group: str, endpoints: dict[str, list[str]], replica: int,
                 stop: threading.Event):
        self.graph, self.endpoints, self.stop = graph, endpoints, stop
        self.incoming = [e for e in graph.edges
                         if graph.crossing(e) and graph.nodes[e.dst].group == group]
        outgoing = any(graph.crossing(e) and graph.nodes[e.src].group == group
                       for e in graph.edges)
        self.ctx = zmq.Context() if self.incoming or outgoing else None
        self.curve: CurveServer | None = None
        self.receiver: LinkReceiver | None = None
        self.senders: list[LinkSender] = []
        self._routes: dict[str, list] = {}  # edge -> [put, close, EOS still due]
        if self.incoming:
            assert self.ctx is not None
            if graph.curve_keys:
                self.curve = CurveServer(self.ctx, graph.curve_keys)
            bind = (graph.groups[group].binds() or endpoints[group])[replica]
            self.receiver = LinkReceiver(self.ctx, bind, self._accept, curve=self.curve,
                                         knows=self._routes.__contains__)

    def receive(self, edge, put: Callable[[Packet], None], close: Callable[[], None]) -> None:
        """Route the packets of incoming `edge` to `put`, and its end (once every replica of
        the sending group has ended it) to `close`."""
        replicas = self.graph.groups[self.graph.nodes[edge.src].group].replicas
        self._routes[edge.key] = [put, close, replicas]

    def sender(self, edge) -> LinkSender:
        """A new sender for outgoing `edge`, with the edge's queue size and policy."""
        dst_group = self.graph.nodes[edge.dst].group
        assert self.ctx is not None, "sender() is only called for this group's outgoing edges"
        sender = LinkSender(self.ctx, self.endpoints[dst_group], hwm=edge.size, route=edge.key,
                            block=edge.policy == "block", stop=self.stop,
                            curve_keys=self.graph.curve_keys, peer=f"group '{dst_group}'")
        self.senders.append(sender)
        return sender

    def _accept(self, route: str, packet: Packet, eos: bool) -> bool:
        target = self._routes.get(route)
        if target is None:
            return False
        if not eos:
            target[0](packet)
            return True
        target[2] -= 1
        if target[2] <= 0:
            target[1]()
        return True

    def close(self) -> None:
        if self.receiver:
            self.receiver.done.set()
            if self.receiver.is_alive():
                self.receiver.join(2)
        for sender in self.senders:
            sender.close()
        if self.curve:
            self.curve.stop()
        if self.ctx:
            self.ctx.term()
