"""Links over real loopback ZeroMQ: batching under saturation keeps order, content and end of
stream; hostile peers (oversized messages, many connections, a stalled consumer) cost bounded
memory and counted rejects."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import zmq

from pipeline import wire
from pipeline.links import RCVHWM, LinkReceiver, LinkSender, max_message
from pipeline.packet import Packet
from pipeline.transport import route_prefix

ROUTE = "src.out->dst.inp"
MiB = 1 << 20


class Collector:
    """A receiver's deliver function that records what arrives; `gate` stalls it (a slow
    consumer) until set."""

    def __init__(self, slow_first: int = 0):
        self.got: list[tuple[Packet, bool]] = []
        self.ended = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.slow_first = slow_first

    def __call__(self, route: str, packet: Packet, eos: bool) -> bool:
        self.gate.wait()
        if len(self.got) < self.slow_first:
            time.sleep(0.002)
        self.got.append((packet, eos))
        if eos:
            self.ended.set()
        return True


def _packet(i: int) -> Packet:
    """Small packets with content and metadata that depend on `i`; every 97th one too big to
    batch, every 13th with its own metadata."""
    size = wire.INLINE_MAX + 10 if i % 97 == 0 else 64 + i % 50
    meta = {"i": i} if i % 13 == 0 else {"kind": "ramp"}
    return Packet("ramp", 1000 + i, i, (np.arange(size, dtype=np.int32) * i), meta)


def _wait(predicate, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_batching_under_saturation_keeps_order_content_and_end_of_stream():
    ctx = zmq.Context()
    collect = Collector(slow_first=300)  # a slow start saturates the link
    inbox = LinkReceiver(ctx, "tcp://127.0.0.1:*", collect, max_bytes=MiB,
                         knows=ROUTE.__eq__)
    inbox.start()
    sender = LinkSender(ctx, inbox.endpoint, hwm=4, route=ROUTE)
    try:
        assert sender.wait_connected(10)
        count = 3000
        for i in range(count):
            assert sender.send(wire.encode(_packet(i)))
        sender.send_to_all(wire.end_of_stream())
        _wait(collect.ended.is_set)
        packets = [p for p, eos in collect.got if not eos]
        assert [eos for _, eos in collect.got] == [False] * count + [True]
        assert [p.seq for p in packets] == list(range(count))
        for i, packet in enumerate(packets):
            expected = _packet(i)
            assert packet.timestamp_ns == expected.timestamp_ns and packet.meta == expected.meta
            np.testing.assert_array_equal(packet.payload, expected.payload)
        assert inbox.batches > 0 and inbox.rejected == 0 and sender.dropped == 0
    finally:
        sender.close()
        inbox.done.set()
        inbox.join(5)
        ctx.term()


def test_an_idle_link_sends_each_packet_at_once():
    ctx = zmq.Context()
    collect = Collector()
    inbox = LinkReceiver(ctx, "tcp://127.0.0.1:*", collect, knows=ROUTE.__eq__)
    inbox.start()
    sender = LinkSender(ctx, inbox.endpoint, hwm=4, route=ROUTE)
    try:
        assert sender.wait_connected(10)
        for i in range(20):
            sender.send(wire.encode(_packet(i + 1)))
            _wait(lambda: len(collect.got) == i + 1)  # arrives without a next packet behind it
        assert [p.seq for p, _ in collect.got] == list(range(1, 21)) and inbox.batches == 0
    finally:
        sender.close()
        inbox.done.set()
        inbox.join(5)
        ctx.term()


def test_malformed_batches_are_one_reject_each_and_deliver_nothing():
    ctx = zmq.Context()
    collect = Collector()
    inbox = LinkReceiver(ctx, "tcp://127.0.0.1:*", collect, max_bytes=MiB,
                         knows=ROUTE.__eq__)
    inbox.start()
    push = ctx.socket(zmq.PUSH)
    push.connect(inbox.endpoint)
    prefix = route_prefix(ROUTE)
    good = [b"".join(wire.encode(_packet(i))) for i in range(1, 4)]
    batch = wire.pack_batch(good)
    hostile = [
        batch[:-1],                                     # truncated: sizes do not add up
        batch[:8] + b"\xff\xff\xff\xff" + batch[12:],   # first size absurd
        batch[:4] + (2**32 - 1).to_bytes(4, "little") + batch[8:],  # count of 4 billion
        batch[:4] + (1).to_bytes(4, "little") + batch[8:],          # a batch of one
        wire.pack_batch(good[:2] + [good[2][:-4]]),     # last packet short of its body
        wire.pack_batch(good[:2] + [b"XX" + good[2][2:]]),           # last packet bad magic
        b"DB\x02\x00" + batch[4:],                      # unknown batch version
    ]
    try:
        for message in hostile:
            push.send(prefix + message)
        push.send(prefix + batch)
        _wait(lambda: len(collect.got) == 3)
        assert [p.seq for p, _ in collect.got] == [1, 2, 3]  # only the good batch, whole
        _wait(lambda: inbox.rejected == len(hostile))
        assert inbox.rejected == len(hostile) and inbox.received == 3 and inbox.is_alive()
    finally:
        push.close(0)
        inbox.done.set()
        inbox.join(5)
        ctx.term()


ATTACKER = """
import sys, time, zmq
endpoint, connections, route = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
prefix = len(route).to_bytes(2, "little") + route
ctx = zmq.Context()
socks = [ctx.socket(zmq.PUSH) for _ in range(connections)]
for sock in socks:
    sock.sndhwm = 4
    sock.connect(endpoint)
time.sleep(0.5)
huge = prefix + b"DW" + bytes(16 * 2**20)        # far over the largest legal message
over = prefix + bytes.fromhex(sys.argv[4]) + bytes(int(sys.argv[5]))  # legal size, body too big
for message in (over, over, huge, huge):
    for sock in socks:
        sock.send(message)
for sock in socks:
    sock.close(linger=5000)
ctx.term()
"""


def _attack(endpoint: str, connections: int, header: bytes, body: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", ATTACKER, endpoint, str(connections), ROUTE,
                             header.hex(), str(body)])


def test_many_connections_with_oversized_messages_cost_bounded_memory():
    """8 connections push 2 x 1.5 MiB and then 2 x 16 MiB messages each (288 MiB): the first
    are counted rejects (over the link's 1 MiB), libzmq refuses the huge ones before allocating
    them (and drops the connection); the legitimate stream is delivered whole and the
    receiver's memory stays flat."""
    ctx = zmq.Context()
    collect = Collector()
    inbox = LinkReceiver(ctx, "tcp://127.0.0.1:*", collect, max_bytes=MiB,
                         knows=ROUTE.__eq__)
    inbox.start()
    assert max_message(MiB) < 16 * MiB
    body = 3 * MiB // 2
    header = wire.encode(Packet("x", 0, 0, np.zeros(body, np.uint8)))[0]
    rss = psutil.Process().memory_info().rss
    attacker = _attack(inbox.endpoint, 8, bytes(header), body)
    sender = LinkSender(ctx, inbox.endpoint, hwm=4, route=ROUTE)
    try:
        assert sender.wait_connected(10)
        for i in range(1, 201):
            sender.send(wire.encode(_packet(i)))
            time.sleep(0.005)
        sender.send_to_all(wire.end_of_stream())
        _wait(collect.ended.is_set)
        assert attacker.wait(60) == 0
        _wait(lambda: inbox.rejected >= 16)
        grown = psutil.Process().memory_info().rss - rss
        assert [p.seq for p, eos in collect.got if not eos] == list(range(1, 201))
        assert inbox.rejected == 16 and "exceeds the limit" in inbox.last_reject
        assert grown < 64 * MiB, f"receiver grew by {grown / MiB:.0f} MiB"
    finally:
        if attacker.poll() is None:
            attacker.kill()
        sender.close()
        inbox.done.set()
        inbox.join(5)
        ctx.term()


def test_a_stalled_consumer_buffers_few_messages_per_connection():
    """While `deliver` waits (a slow `block` consumer), 6 connections pushing 1 MiB packets
    buffer at most RCVHWM messages each in ZeroMQ, not the edge's queue size."""
    ctx = zmq.Context()
    collect = Collector()
    collect.gate.clear()
    inbox = LinkReceiver(ctx, "tcp://127.0.0.1:*", collect, max_bytes=2 * MiB,
                         knows=ROUTE.__eq__)
    inbox.start()
    packet = wire.encode(Packet("big", 0, 0, np.ones(MiB, np.uint8)))
    rss = psutil.Process().memory_info().rss
    senders = []
    try:
        for _ in range(6):
            sender = LinkSender(ctx, inbox.endpoint, hwm=64, route=ROUTE, block=False)
            assert sender.wait_connected(10)
            senders.append(sender)
        for _ in range(40):
            for sender in senders:
                sender.send(packet)
        time.sleep(1.0)
        grown = psutil.Process().memory_info().rss - rss
        bound = 6 * (RCVHWM + 2) * MiB + 16 * MiB
        assert grown < bound, f"grew by {grown / MiB:.0f} MiB, bound {bound / MiB:.0f} MiB"
        collect.gate.set()
        accepted = sum(40 - sender.dropped for sender in senders)
        _wait(lambda: inbox.received == accepted)
        assert inbox.received == accepted and inbox.rejected == 0  # nothing accepted is lost
    finally:
        collect.gate.set()
        for sender in senders:
            sender.close()
        inbox.done.set()
        inbox.join(5)
        ctx.term()
