"""ZeroMQ links between process groups: PUSH senders, one PULL inbox per group (per replica of a
replicated group; a sender then round-robins over the replicas' inboxes).

A link message is one wire-format packet (pipeline/wire.py, `wire.pack`: one frame, or two for
bodies over 64 KiB) whose first frame starts with the route: a u16 length and the name of the
graph edge. Receivers validate everything, count rejects and keep
serving. Optional CURVE (`curve_keys:` in the graph) encrypts and authenticates off-host links.
"""
from __future__ import annotations

import socket as pysocket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from . import wire
from .packet import Packet

POLL_MS = 100


def count_peers(monitor: zmq.Socket, peers: int, timeout_ms: int = 0) -> tuple[int, bool]:
    """`peers` updated by the connect/disconnect events queued on a socket monitor (waiting up
    to `timeout_ms` for the first), and whether any peer connected meanwhile."""
    connected = False
    while monitor.poll(timeout_ms):
        event = recv_monitor_message(monitor)["event"]
        connected |= event == zmq.EVENT_HANDSHAKE_SUCCEEDED
        peers = max(peers + (1 if event == zmq.EVENT_HANDSHAKE_SUCCEEDED else -1), 0)
        timeout_ms = 0
    return peers, connected


def free_endpoint(host: str = "127.0.0.1") -> str:
    """A TCP endpoint on a port the OS says is free right now."""
    with pysocket.socket() as probe:
        probe.bind((host, 0))
        return f"tcp://{host}:{probe.getsockname()[1]}"


def route_prefix(edge_key: str) -> bytes:
    """The bytes that start every link message of one edge."""
    route = edge_key.encode()
    if len(route) > 0xFFFF:
        raise ValueError(f"edge name of {len(route)} bytes is too long")
    return struct.pack("<H", len(route)) + route


KEY_FILES = ("server.key", "server.key_secret", "client.key", "client.key_secret")


def create_keys(directory: str | Path, force: bool = False) -> None:
    """Write the server and client CURVE key pairs used by `curve_keys:` graphs; the secret
    files readable by their owner only (0600). Existing keys are kept unless `force`: a
    graph's peers hold copies of them."""
    import os
    directory = Path(directory)
    existing = [name for name in KEY_FILES if (directory / name).exists()]
    if existing and not force:
        raise FileExistsError(f"{directory} already holds CURVE keys ({', '.join(existing)}); "
                              f"peers use copies of them: pass --force to replace them")
    directory.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)                 # the secret files never exist world-readable
    try:
        for name in ("server", "client"):
            zmq.auth.create_certificates(str(directory), name)
    finally:
        os.umask(old)
    for name in ("server", "client"):
        (directory / f"{name}.key_secret").chmod(0o600)
        (directory / f"{name}.key").chmod(0o644)


def _load_pair(keys_dir: str, name: str) -> tuple[bytes, bytes]:
    path = Path(keys_dir) / f"{name}.key_secret"
    if not path.exists():
        raise FileNotFoundError(f"curve_keys: {path} is missing (create keys with "
                                f"`dance keys {keys_dir}`)")
    return zmq.auth.load_certificate(str(path))


class CurveServer:
    """Turns on CURVE for a bound socket and admits only the clients in `keys_dir`."""

    def __init__(self, ctx: zmq.Context, keys_dir: str):
        self.auth = ThreadAuthenticator(ctx)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(keys_dir))
        self.public, self.secret = _load_pair(keys_dir, "server")

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey, sock.curve_publickey, sock.curve_server = self.secret, \
            self.public, True

    def stop(self) -> None:
        self.auth.stop()


def apply_curve_client(sock: zmq.Socket, keys_dir: str) -> None:
    public, secret = _load_pair(keys_dir, "client")
    server_public, _ = zmq.auth.load_certificate(str(Path(keys_dir) / "server.key"))
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, \
        server_public


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
    """PUSH sockets to the inbox of a peer group — one per replica of that group — used only by
    the thread of the sending node. Packets go round-robin to the replicas that are connected
    and have room, so each packet reaches exactly one of them.

    `block` waits for room as long as some replica is connected (a slow consumer slows the
    sender, nothing is lost); while none is connected, packets are dropped at once and counted,
    so a dead or missing peer never stalls or bloats the sender. ZeroMQ keeps reconnecting, and
    delivery resumes when the peer is back. `drop_oldest` / `latest` never wait: ZeroMQ cannot
    evict its queue, so overflow drops the newest packet here.
    """

    def __init__(self, ctx: zmq.Context, endpoints: str | list[str], hwm: int,
                 curve_keys: str | None = None, peer: str = ""):
        endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self.pipes = [_Pipe(ctx, endpoint, hwm, curve_keys) for endpoint in endpoints]
        self.endpoint = ", ".join(endpoints)
        self.label = f"link to {peer} at {self.endpoint}" if peer else f"link to {self.endpoint}"
        self._next = 0
        self._poller = zmq.Poller()
        for pipe in self.pipes:
            self._poller.register(pipe.sock, zmq.POLLOUT)
        self.dropped_unconnected = 0  # packets dropped since the link last had a peer

    @property
    def peers(self) -> int:
        return sum(pipe.peers for pipe in self.pipes)

    def _track_peers(self, timeout_ms: int = 0) -> None:
        for pipe in self.pipes:
            had = pipe.peers
            pipe.track(timeout_ms)
            if pipe.peers and pipe.announced:
                pipe.announced = False
                dropped = self.dropped_unconnected
                self.dropped_unconnected = 0
                which = f": {pipe.endpoint}" if len(self.pipes) > 1 else ""
                print(f"note: {self.label}{which} is connected" +
                      (f"; {dropped} packets were dropped while it had no peer" if dropped
                       else ""), file=sys.stderr)
            elif had and not pipe.peers and self.peers:
                pipe.announced = True
                print(f"warning: {self.label}: lost the peer at {pipe.endpoint}; the other "
                      f"replicas take its packets until it reconnects", file=sys.stderr)

    def wait_connected(self, timeout_s: float, stop: threading.Event | None = None) -> bool:
        """Wait until every replica is connected, at most `timeout_s` (or until `stop`); True if
        they are. If not, warn once: the caller goes on, and packets nobody can take are
        counted drops."""
        deadline = time.monotonic() + timeout_s
        while self.missing() and time.monotonic() < deadline and not (stop and stop.is_set()):
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

    def send(self, prefix: bytes, frames: list, wait: bool, stop: threading.Event) -> bool:
        """Send one packet's frames behind its route `prefix`; False means it was dropped."""
        parts = wire.pack(frames, prefix)
        if self._send_round_robin(parts):
            if self.dropped_unconnected or any(pipe.announced for pipe in self.pipes):
                self._track_peers()  # a peer is back: say so
            return True
        while wait and not stop.is_set():
            self._track_peers()
            if not self.peers:
                break
            if self._poller.poll(POLL_MS) and self._send_round_robin(parts):
                return True
        self._track_peers()
        if not self.peers:
            self.dropped_unconnected += 1
            if not any(pipe.announced for pipe in self.pipes):
                for pipe in self.pipes:
                    pipe.announced = True
                print(f"warning: {self.label} has no peer (gone?); dropping and counting "
                      f"packets until it reconnects", file=sys.stderr)
        return False

    def send_to_all(self, prefix: bytes, frames: list, stop: threading.Event) -> None:
        """Send to every connected replica, waiting for room (end of stream reaches them all)."""
        parts = wire.pack(frames, prefix)
        self._track_peers()
        for pipe in self.pipes:
            while pipe.peers and not stop.is_set():
                try:
                    pipe.send(parts)
                    break
                except zmq.Again:
                    pipe.sock.poll(POLL_MS, zmq.POLLOUT)
                    pipe.track()

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.close()


class LinkReceiver(threading.Thread):
    """The PULL inbox of a group: validates each message and hands it to `deliver`."""

    def __init__(self, ctx: zmq.Context, endpoint: str,
                 deliver: Callable[[str, Packet, bool], bool], hwm: int = 64,
                 max_bytes: int = wire.DEFAULT_MAX_BYTES, curve: CurveServer | None = None,
                 knows: Callable[[str], bool] | None = None):
        super().__init__(name=f"inbox {endpoint}", daemon=True)
        self.deliver, self.max_bytes = deliver, max_bytes
        self.knows = knows      # route check before the message is parsed (None: deliver says)
        self.sock = ctx.socket(zmq.PULL)
        self.sock.rcvhwm = hwm
        self.sock.maxmsgsize = max_bytes + 65536
        self.sock.linger = 0
        if curve:
            curve.apply(self.sock)
        self._monitor = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        self.sock.bind(endpoint)
        self.endpoint = self.sock.last_endpoint.decode()
        self.received = self.rejected = 0
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
            packet, eos = wire.decode([first[end:], *frames[1:]], self.max_bytes)
            if not self.deliver(route, packet, eos):
                raise wire.WireError(f"unknown route {route[:80]!r}")
        except (wire.WireError, UnicodeDecodeError) as exc:
            self.rejected += 1
            self.last_reject = str(exc)
            return
        except Exception as exc:  # noqa: BLE001 - a parser bug must not end the inbox
            self.rejected += 1
            self.last_reject = f"{type(exc).__name__}: {exc}"[:300]
            return
        self.received += not eos

    def stats(self) -> dict:
        return {"endpoint": self.endpoint, "received": self.received, "rejected": self.rejected,
                "last_reject": self.last_reject, "peers": self.peers}
