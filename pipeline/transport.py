"""ZeroMQ links between process groups: PUSH senders, one PULL inbox per group.

A link message is `[route, header, body]`: `route` names the graph edge, the rest is one
wire-format packet (pipeline/wire.py). Receivers validate everything, count rejects and keep
serving. Optional CURVE (`curve_keys:` in the graph) encrypts and authenticates off-host links.
"""
from __future__ import annotations

import socket as pysocket
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from . import wire
from .packet import Packet

POLL_MS = 100


def free_endpoint(host: str = "127.0.0.1") -> str:
    """A TCP endpoint on a port the OS says is free right now."""
    with pysocket.socket() as probe:
        probe.bind((host, 0))
        return f"tcp://{host}:{probe.getsockname()[1]}"


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

    `block` waits for room up to `timeout_s`; after that the peer counts as gone and packets are
    dropped (and counted) at once until it accepts again, so a dead peer never stalls or bloats
    the sender. `drop_oldest` / `latest` never wait: ZeroMQ cannot evict its queue, so overflow
    drops the newest packet here.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, hwm: int, curve_keys: str | None = None,
                 timeout_s: float = 5.0):
        self.endpoint, self.timeout_s, self.up = endpoint, timeout_s, True
        self.sock = ctx.socket(zmq.PUSH)
        self.sock.sndhwm = max(2, hwm)
        self.sock.linger = 2000
        self.sock.immediate = True  # queue only on completed connections
        if curve_keys:
            apply_curve_client(self.sock, curve_keys)
        self._monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.sock.connect(endpoint)

    def wait_connected(self, timeout_s: float) -> bool:
        if self._monitor is None:
            return True
        ok = self._monitor.poll(int(timeout_s * 1000)) != 0
        self.sock.disable_monitor()
        self._monitor.close(0)
        self._monitor = None
        return ok

    def send(self, route: bytes, frames: list, wait: bool, stop: threading.Event) -> bool:
        """Send one message; False means it was dropped."""
        message = [route, *frames]
        if wait and self.up:
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline and not stop.is_set():
                if self.sock.poll(POLL_MS, zmq.POLLOUT):
                    self.sock.send_multipart(message, copy=False)
                    return True
            self.up = False
            print(f"warning: link to {self.endpoint} is not accepting packets (peer gone?); "
                  f"dropping until it recovers", file=sys.stderr)
            return False
        try:
            self.sock.send_multipart(message, flags=zmq.NOBLOCK, copy=False)
            self.up = True
            return True
        except zmq.Again:
            return False

    def close(self) -> None:
        if self._monitor is not None:
            self.wait_connected(0)
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
                frames = self.sock.recv_multipart(copy=False)
                try:
                    if len(frames) != 3:
                        raise wire.WireError(f"expected 3 frames, got {len(frames)}")
                    route = frames[0].bytes.decode("utf-8", "strict")
                    packet, eos = wire.decode(frames[1:], self.max_bytes)
                    if not self.deliver(route, packet, eos):
                        raise wire.WireError(f"unknown route {route[:80]!r}")
                except (wire.WireError, UnicodeDecodeError) as exc:
                    self.rejected += 1
                    self.last_reject = str(exc)
                    continue
                self.received += not eos
        finally:
            self.sock.close()

    def stats(self) -> dict:
        return {"endpoint": self.endpoint, "received": self.received, "rejected": self.rejected,
                "last_reject": self.last_reject}
