"""Soak test of a link under mixed hostile traffic (not in CI): a legitimate stream must arrive
complete and in order, every hostile message must be a counted reject, and the receiver's
memory must stay flat.

This process runs the receiving inbox (`pipeline.links.LinkReceiver`, 1 MiB packet limit).
One child process sends the legitimate stream through a `LinkSender`: 8 KB packets, alternating
paced seconds and bursts that saturate the link (so batching is exercised). Hostile child
processes meanwhile send, over loopback: damaged packets and batches, random bytes, packets on
unknown routes, messages with too many frames, bodies over the packet limit, messages far over
the largest legal message (libzmq drops those connections), and connection churn.

    python benchmarks/soak.py [--minutes 10] [--attackers 3]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import wire  # noqa: E402
from pipeline.links import LinkReceiver, LinkSender, max_message  # noqa: E402
from pipeline.packet import Packet  # noqa: E402
from pipeline.transport import route_prefix  # noqa: E402

ROUTE = "camera.out->sink.inp"
MiB = 1 << 20


def legit_packet(seq: int) -> Packet:
    return Packet("camera", seq, seq, np.full(8192, seq % 251, np.uint8), {"pixel_format": "gray8"})


def legit_main(endpoint: str, seconds: float, conn) -> None:
    """Send the stream for `seconds`: paced (500/s) and saturating (as fast as possible)
    seconds alternate; then end it and report the count."""
    ctx = zmq.Context()
    sender = LinkSender(ctx, endpoint, hwm=16, route=ROUTE)
    sender.wait_connected(30)
    seq, start = 0, time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        burst = int(now - start) % 2 == 1
        if not sender.send(wire.encode(legit_packet(seq))):
            raise SystemExit(f"legitimate packet {seq} was dropped")
        seq += 1
        if not burst:
            time.sleep(0.002)
    sender.send_to_all(wire.end_of_stream())
    conn.send((seq, sender.dropped))
    sender.close()
    ctx.term()


def hostile_messages(rng: random.Random, max_message: int):
    """An endless mix of messages that must all be rejected (or refused by libzmq)."""
    route, unknown = route_prefix(ROUTE), route_prefix("no.such->route.x")
    forged = Packet("forged", 1, 1, np.ones(8192, np.uint8))  # damage can leave it well formed
    good = b"".join(wire.pack(wire.encode(forged)))
    batch = wire.pack_batch([good, good, good])
    while True:
        kind = rng.randrange(9)
        if kind == 0:      # a damaged packet
            damaged = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                damaged[rng.randrange(64)] = rng.randrange(256)
            yield [route + bytes(damaged[:rng.randrange(len(damaged))])]
        elif kind == 1:    # a damaged batch
            damaged = bytearray(batch)
            damaged[rng.randrange(20)] = rng.randrange(256)
            yield [route + bytes(damaged[:rng.randrange(8, len(damaged))])]
        elif kind == 2:
            yield [rng.randbytes(rng.randrange(200))]
        elif kind == 3:    # well formed, on an edge that does not exist
            yield [unknown + good]
        elif kind == 4:
            yield [route + good, b"", b"extra"]
        elif kind == 5:    # a body over the 1 MiB packet limit, within the message limit
            header = wire.encode(Packet("x", 0, 0, np.zeros(MiB + 1, np.uint8)))[0]
            yield [route + bytes(header), bytes(MiB + 1)]
        elif kind == 6 and rng.random() < 0.05:  # far over the largest legal message
            yield [route + b"DW" + bytes(max_message + MiB)]
        elif kind == 7:    # an absurd declared array
            header = bytearray(wire.encode(Packet("x", 0, 0, np.zeros((2, 2), np.uint8)))[0])
            header[30:38] = (1 << 60).to_bytes(8, "little")
            yield [route + bytes(header)]
        else:              # dims wrapping to 0, metadata that is not an object
            yield [route + b"DW" + bytes(rng.randrange(28, 200))]


def hostile_main(endpoint: str, seconds: float, seed: int, max_message: int, conn) -> None:
    """Hostile traffic for `seconds` over a few connections, replaced now and then."""
    rng, ctx = random.Random(seed), zmq.Context()
    messages, sent, socks = hostile_messages(rng, max_message), 0, []
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if len(socks) < 4 or rng.random() < 0.01:    # connection churn
            sock = ctx.socket(zmq.PUSH)
            sock.sndhwm, sock.linger = 8, 0
            sock.connect(endpoint)
            socks.append(sock)
            if len(socks) > 6:
                socks.pop(0).close()
        try:
            rng.choice(socks).send_multipart(next(messages), zmq.NOBLOCK)
            sent += 1
        except zmq.Again:
            time.sleep(0.001)
        if sent % 50 == 0:
            time.sleep(0.005)   # leave the legitimate sender some CPU
    for sock in socks:
        sock.close()
    ctx.term()
    conn.send(sent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--attackers", type=int, default=3, help="hostile processes")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60

    ctx = zmq.Context()
    expected_seq, forged = [0], [0]
    bad: list[str] = []
    ended = threading.Event()

    def deliver(route: str, packet: Packet, eos: bool) -> bool:
        if eos and packet.stream == "":
            ended.set()
        elif packet.stream != "camera":
            forged[0] += 1
        elif packet.seq != expected_seq[0] or packet.payload[0] != packet.seq % 251:
            bad.append(f"got seq {packet.seq}, expected {expected_seq[0]}")
            expected_seq[0] = packet.seq + 1
        else:
            expected_seq[0] += 1
        return True

    inbox = LinkReceiver(ctx, "tcp://127.0.0.1:*", deliver, max_bytes=MiB, knows=ROUTE.__eq__)
    inbox.start()
    spawn = mp.get_context("spawn")
    pipes, procs = [], []
    for i in range(args.attackers + 1):
        parent, child = spawn.Pipe()
        target, extra = (legit_main, ()) if i == 0 else (hostile_main, (i, max_message(MiB)))
        procs.append(spawn.Process(target=target, args=(inbox.endpoint, seconds, *extra, child),
                                   daemon=True))
        pipes.append(parent)
        procs[-1].start()
    me = psutil.Process()
    print(f"soak: {args.minutes:g} min, {args.attackers} hostile processes, inbox "
          f"{inbox.endpoint}", flush=True)
    rss, started = [], time.monotonic()
    while not ended.wait(5):
        rss.append(me.memory_info().rss)
        print(f"  {time.monotonic() - started:6.0f} s: delivered {inbox.received}, rejected "
              f"{inbox.rejected}, batches {inbox.batches}, rss {rss[-1] / MiB:.0f} MiB",
              flush=True)
        if time.monotonic() - started > seconds + 120:
            print("error: the legitimate stream did not end", file=sys.stderr)
            break
    sent, dropped = pipes[0].recv() if pipes[0].poll(30) else (-1, -1)
    hostile = sum(pipe.recv() for pipe in pipes[1:] if pipe.poll(30))
    for proc in procs:
        proc.join(30)
    inbox.done.set()
    inbox.join(5)
    ctx.term()
    warm = rss[len(rss) // 10] if rss else 0   # after the first tenth: allocator warmed up
    end = rss[-1] if rss else 0
    complete = expected_seq[0] == sent and not bad and dropped == 0
    print(f"delivered/expected: {expected_seq[0]}/{sent}, in order: {not bad} "
          f"(sender drops {dropped}){'' if not bad else ' first problem: ' + bad[0]}")
    print(f"hostile messages sent: {hostile}, rejected: {inbox.rejected} (the rest were over "
          f"the message limit, refused by libzmq, or lost with their dropped connections); "
          f"last reject: {inbox.last_reject}")
    print(f"batches received: {inbox.batches}; damaged packets that were still well formed "
          f"(accepted, as any well-formed packet is): {forged[0]}")
    print(f"receiver RSS: start {warm / MiB:.0f} MiB (after the first tenth), end "
          f"{end / MiB:.0f} MiB, max {max(rss, default=0) / MiB:.0f} MiB")
    flat = end - warm < 32 * MiB
    print(f"verdict: stream {'complete' if complete else 'INCOMPLETE'}, RSS "
          f"{'flat' if flat else 'GROWING'}")
    return 0 if complete and flat else 1


if __name__ == "__main__":
    sys.exit(main())
