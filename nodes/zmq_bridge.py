"""Publish streams to outside programs, and subscribe to theirs, over ZeroMQ PUB/SUB.

A message is the stream name (a frame of its own, so subscribers can filter by topic), then one
wire-format packet as `wire.pack` frames it (docs/wire-format.md). PUB/SUB never blocks the publisher:
ZeroMQ drops for subscribers that fall more than `hwm` messages behind.
"""
from __future__ import annotations

import zmq

from pipeline import wire
from pipeline.node import FILE_OR_NAME, Input, Node, Output, Param, Source
from pipeline.packet import Packet
from pipeline.transport import CurveServer, apply_curve_client

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5600"
EOS_TOPIC = b"\x00"  # end of stream; no stream name starts with NUL


def _secure(ctx: zmq.Context, sock: zmq.Socket, bind: bool, curve_keys: str):
    """Apply CURVE: the binding side is the server. Returns the authenticator to stop later."""
    if not curve_keys:
        return None
    if bind:
        server = CurveServer(ctx, curve_keys)
        server.apply(sock)
        return server
    apply_curve_client(sock, curve_keys)
    return None


class ZmqPub(Node):
    """Publishes every packet it receives on a ZeroMQ PUB socket, topic = stream name."""

    packets = Input("any", "packets to publish")
    endpoint = Param(str, DEFAULT_ENDPOINT, "ZeroMQ endpoint")
    bind = Param(bool, True, "bind the endpoint (else connect to a bound subscriber)")
    hwm = Param(int, 64, "messages queued per subscriber before ZeroMQ drops", min=1)
    curve_keys = Param(str, "", "directory from `dance keys` to encrypt (empty = plain)",
                       path=FILE_OR_NAME)
    wait_s = Param(float, 10.0, "connect mode: wait this long for the subscriber", min=0)

    def setup(self):
        self.ctx = zmq.Context()
        # XPUB: subscriptions reach us as messages, so we can wait for the first one instead of
        # losing the first packets to ZeroMQ's slow-joiner effect
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.sndhwm = self.hwm
        self.sock.linger = 1000
        self.auth = _secure(self.ctx, self.sock, self.bind, self.curve_keys)
        if self.bind:
            self.sock.bind(self.endpoint)
        else:
            self.sock.connect(self.endpoint)
            if self.sock.poll(self.wait_s * 1000):
                self.sock.recv()

    def on_packets(self, packet: Packet):
        while self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self.sock.recv()  # (un)subscriptions: nothing to do but keep the queue empty
        self.sock.send_multipart([packet.stream.encode(), *wire.pack(wire.encode(packet))],
                                 copy=False)

    def teardown(self):
        if hasattr(self, "sock"):
            self.sock.send_multipart([EOS_TOPIC, *wire.end_of_stream()])
            self.sock.close()
            if self.auth:
                self.auth.stop()
            self.ctx.term()


class ZmqSub(Source):
    """Receives wire-format packets from a ZeroMQ publisher (outside programs, other graphs).

    Malformed, truncated, oversized or wrong-version messages are skipped and counted in the
    report as `rejected`; the stream goes on.
    """

    out = Output("any", "received packets")
    endpoint = Param(str, DEFAULT_ENDPOINT, "ZeroMQ endpoint")
    bind = Param(bool, False, "bind the endpoint (else connect to a bound publisher)")
    topics = Param(list, [], "stream names to receive (empty = all)")
    count = Param(int, 0, "stop after this many packets (0 = until end of stream or Ctrl-C)")
    stop_on_eos = Param(bool, True, "end when the publisher sends end of stream")
    max_bytes = Param(int, wire.DEFAULT_MAX_BYTES, "largest payload accepted", min=1)
    hwm = Param(int, 1000, "messages ZeroMQ queues before dropping", min=1)
    curve_keys = Param(str, "", "directory from `dance keys` to decrypt (empty = plain)",
                       path=FILE_OR_NAME)

    def setup(self):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.rcvhwm = self.hwm
        self.sock.maxmsgsize = self.max_bytes + 65536
        self.sock.linger = 0
        self.auth = _secure(self.ctx, self.sock, self.bind, self.curve_keys)
        for topic in self.topics or [""]:
            self.sock.setsockopt(zmq.SUBSCRIBE, str(topic).encode())
        if self.topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, EOS_TOPIC)
        (self.sock.bind if self.bind else self.sock.connect)(self.endpoint)
        self.counters.update(received=0, rejected=0)

    def run(self):
        while not self.stopping and (not self.count or self.counters["received"] < self.count):
            if not self.sock.poll(100):
                continue
            frames = self.sock.recv_multipart(copy=False)
            try:
                if len(frames) < 2:
                    raise wire.WireError(f"expected a topic and a packet, got {len(frames)} frame")
                packet, eos = wire.decode(frames[1:], self.max_bytes)
            except Exception as exc:  # noqa: BLE001 - WireError, or a parser bug: never fatal
                self.counters["rejected"] += 1
                self.counters["last_reject"] = str(exc) if isinstance(exc, wire.WireError) \
                    else f"{type(exc).__name__}: {exc}"[:300]
                continue
            if eos:
                if self.stop_on_eos:
                    return
                continue
            self.counters["received"] += 1
            yield packet

    def teardown(self):
        if hasattr(self, "sock"):
            self.sock.close()
            if self.auth:
                self.auth.stop()
            self.ctx.term()
