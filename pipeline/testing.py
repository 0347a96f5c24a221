"""Drive one node the way the runtime does, without a graph: for unit tests of your nodes."""
from __future__ import annotations

import threading
from typing import Iterable

from .node import Node, Source
from .packet import Packet


def run_source(node: Source, limit: int | None = None) -> list[tuple[str, Packet]]:
    """setup, iterate `run()` (stopping it after `limit` packets), teardown; returns what it
    emitted as (port, packet) pairs."""
    node.attach(lambda port, packet: None, threading.Event())
    node.setup()
    single = next(iter(node.outputs)) if len(node.outputs) == 1 else None
    out = []
    try:
        for item in node.run():
            out.append(item if isinstance(item, tuple) else (single, item))
            if limit and len(out) >= limit:
                node._stop.set()
                break
    finally:
        node.teardown()
    return out


def feed(node: Node, port: str, packets: Iterable[Packet]) -> list[tuple[str, Packet]]:
    """setup, deliver `packets` to input `port`, teardown; returns the emitted (port, packet)
    pairs."""
    out: list[tuple[str, Packet]] = []
    node.attach(lambda p, packet: out.append((p, packet)), threading.Event())
    node.setup()
    try:
        for packet in packets:
            node.handle(port, packet)
    finally:
        node.teardown()
    return out
