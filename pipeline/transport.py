"""ZeroMQ basics shared by links and bridges: free endpoints, route prefixes, connection
counting from socket monitors, and CURVE keys (`curve_keys:` in a graph encrypts and
authenticates off-host links). The links themselves are in pipeline/links.py.
"""
from __future__ import annotations

import socket as pysocket
import struct
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

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
    public, secret = zmq.auth.load_certificate(str(path))
    if secret is None:      # zmq raises ValueError itself for a file with no public key
        raise ValueError(f"curve_keys: {path} holds no secret key")
    return public, secret


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
