"""ZeroMQ links between process groups: PUSH senders, one PULL inbox per group.

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


def create_keys(directory: str | Path) -> None:
    """Write the server and client CURVE key pairs used by `curve_keys:` graphs."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("server", "client"):
        zmq.auth.create_certificates(str(directory), name)


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


class LinkSender:
    """One PUSH socket to a peer group's inbox, used only by the thread of the sending node.

    `block` waits for room as long as the peer is connected (a slow consumer slows the sender,
    nothing is lost); while no peer is connected, packets are dropped at once and counted, so a
    dead peer never stalls or bloats the sender. `drop_oldest` / `latest` never wait: ZeroMQ
    cannot evict its queue, so overflow drops the newest packet here.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, hwm: int, curve_keys: str | None = None):
        self.endpoint = endpoint
        self.sock = ctx.socket(zmq.PUSH)
        self.sock.sndhwm = max(2, hwm)
        self.sock.immediate = True  # queue only on live connections
        if curve_keys:
            apply_curve_client(self.sock, curve_keys)
        self._monitor = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        self.sock.connect(endpoint)
        self.peers = 0
        self._warned = False

    def _track_peers(self, timeout_ms: int = 0) -> None:
        while self._monitor.poll(timeout_ms):
            event = recv_monitor_message(self._monitor)["event"]
            self.peers += 1 if event == zmq.EVENT_HANDSHAKE_SUCCEEDED else -1
            self.peers = max(self.peers, 0)
            timeout_ms = 0

    def wait_connected(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.peers and time.monotonic() < deadline:
            self._track_peers(POLL_MS)
        return self.peers > 0

    def _send(self, parts: list) -> None:
        # After the first part is accepted, ZeroMQ accepts the rest of the message.
        if len(parts) == 1:
            self.sock.send(parts[0], zmq.NOBLOCK)
        else:
            self.sock.send(parts[0], zmq.NOBLOCK | zmq.SNDMORE)
            self.sock.send(parts[1], copy=False)

    def send(self, prefix: bytes, frames: list, wait: bool, stop: threading.Event) -> bool:
        """Send one packet's frames behind its route `prefix`; False means it was dropped."""
        parts = wire.pack(frames, prefix)
        try:
            self._send(parts)
            return True
        except zmq.Again:
            pass
        while wait and not stop.is_set():
            self._track_peers()
            if not self.peers:
                break
            if self.sock.poll(POLL_MS, zmq.POLLOUT):
                try:
                    self._send(parts)
                    return True
                except zmq.Again:
                    continue
        if wait and not self.peers and not self._warned:
            self._warned = True
            print(f"warning: link to {self.endpoint} has no peer (gone?); dropping and counting "
                  f"packets until it reconnects", file=sys.stderr)
        return False

    def close(self) -> None:
        """Close; what is still queued gets up to 30 s to reach a live peer."""
        self._track_peers()
        self.sock.linger = 30_000 if self.peers else 0
        self.sock.disable_monitor()
        self._monitor.close(0)
        self.sock.close()


class LinkReceiver(threading.Thread):
    """The PULL inbox of a group: validates each message and hands it to `deliver`."""

    def __init__(self, ctx: zmq.Context, endpoint: str,
                 deliver: Callable[[str, Packet, bool], bool], hwm: int = 64,
                 max_bytes: int = wire.DEFAULT_MAX_BYTES, curve: CurveServer | None = None):
        super().__init__(name=f"inbox {endpoint}", daemon=True)
        self.deliver, self.max_bytes = deliver, max_bytes
        self.sock = ctx.socket(zmq.PULL)
        self.sock.rcvhwm = hwm
        self.sock.maxmsgsize = max_bytes + 65536
        self.sock.linger = 0
        if curve:
            curve.apply(self.sock)
        self.sock.bind(endpoint)
        self.endpoint = self.sock.last_endpoint.decode()
        self.received = self.rejected = 0
        self.last_reject = ""
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.is_set():
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
            packet, eos = wire.decode([first[end:], *frames[1:]], self.max_bytes)
            if not self.deliver(route, packet, eos):
                raise wire.WireError(f"unknown route {route[:80]!r}")
        except (wire.WireError, UnicodeDecodeError) as exc:
            self.rejected += 1
            self.last_reject = str(exc)
            return
        self.received += not eos

    def stats(self) -> dict:
        return {"endpoint": self.endpoint, "received": self.received, "rejected": self.rejected,
                "last_reject": self.last_reject}
