"""Drive one node the way the runtime does, without a graph: for unit tests of your nodes.

    with NodeHarness(SceneStats(name="scene")) as harness:
        harness.send("image", frame0)
        harness.send("image", frame1)
    harness.outputs["metrics"]        # what the node emitted on that port, in order

Every emitted packet is checked against the output port it was sent on (`check_packet`): the
payload fits the port's type, and the packet survives the wire format, as it must to reach a
node in another process.
"""
from __future__ import annotations

import threading
from typing import Iterable

import numpy as np

from . import wire
from .node import ANY, Node, Source
from .packet import Packet


class PortContractError(AssertionError):
    """A node emitted a packet that does not fit the output port it was sent on."""


def _image_problem(packet: Packet) -> str | None:
    pixels = packet.payload
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8
            and pixels.ndim in (2, 3)):
        return "an image payload is an H×W or H×W×C uint8 array"
    expected = {"height": pixels.shape[0], "width": pixels.shape[1],
                "channels": pixels.shape[2] if pixels.ndim == 3 else 1}
    wrong = {k: packet.meta.get(k) for k, v in expected.items() if packet.meta.get(k) != v}
    return f"image meta {wrong} does not match the shape {pixels.shape}" if wrong else None


def _audio_problem(packet: Packet) -> str | None:
    samples = packet.payload
    if not (isinstance(samples, np.ndarray) and samples.ndim == 2):
        return "an audio payload is a frames×channels array"
    if not packet.meta.get("sample_rate"):
        return "audio meta needs 'sample_rate'"
    if packet.meta.get("channels") != samples.shape[1]:
        return f"audio meta channels={packet.meta.get('channels')} for {samples.shape[1]} columns"
    return None


_CONTRACTS = {
    "image": _image_problem,
    "audio": _audio_problem,
    "encoded": lambda p: None if isinstance(p.payload, (bytes, bytearray, memoryview))
    else "an encoded payload is bytes",
    "metrics": lambda p: None if isinstance(p.payload, dict) else "a metrics payload is a dict",
}


def check_packet(node: Node, port: str, packet: Packet) -> None:
    """Raise PortContractError unless `packet` fits `node`'s output `port` and can be sent to
    another process."""
    where = f"node '{node.name}' output '{port}'"
    if not isinstance(packet, Packet):
        raise PortContractError(f"{where}: emitted {type(packet).__name__}, not a Packet")
    declared = node.outputs[port].type
    contract = _CONTRACTS.get(declared) if declared != ANY else None
    problem = contract(packet) if contract else None
    if problem:
        raise PortContractError(f"{where} (type {declared}): stream '{packet.stream}' "
                                f"seq {packet.seq}: {problem}")
    try:
        wire.decode(wire.encode(packet))
    except (wire.WireError, TypeError, ValueError) as exc:
        raise PortContractError(f"{where}: stream '{packet.stream}' seq {packet.seq} cannot "
                                f"cross to another process: {exc}") from None


class NodeHarness:
    """Runs one node as the runtime does — attach, setup, packets one at a time, teardown —
    and keeps everything it emits, in order (`emitted`) and per output port (`outputs`)."""

    def __init__(self, node: Node, check: bool = True):
        self.node, self.check = node, check
        self.emitted: list[tuple[str, Packet]] = []
        self.outputs: dict[str, list[Packet]] = {port: [] for port in node.outputs}
        self.stop = threading.Event()

    def __enter__(self) -> "NodeHarness":
        self.node.attach(self._collect, self.stop)
        self.node.setup()
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        try:
            if exc_type is None and not isinstance(self.node, Source):
                self.node.end_of_input()  # as at end of stream: joins flush what is unmatched
        finally:
            self.node.teardown()

    def _collect(self, port: str | None, packet: Packet) -> None:
        if port is None or port not in self.node.outputs:   # None: a bare packet, many outputs
            raise KeyError(f"node '{self.node.name}' has no output '{port}'")
        if self.check:
            check_packet(self.node, port, packet)
        self.emitted.append((port, packet))
        self.outputs[port].append(packet)

    def send(self, port: str, packet: Packet) -> list[tuple[str, Packet]]:
        """Deliver one packet to input `port`; returns what the node emitted in response."""
        if port not in self.node.inputs:
            raise KeyError(f"node '{self.node.name}' has no input '{port}' "
                           f"(inputs: {', '.join(self.node.inputs) or 'none'})")
        start = len(self.emitted)
        self.node.handle(port, packet)
        return self.emitted[start:]

    def run(self, limit: int | None = None) -> list[tuple[str, Packet]]:
        """Iterate a source's `run()`, stopping it after `limit` packets; returns them."""
        if not isinstance(self.node, Source):
            raise TypeError(f"node '{self.node.name}' is not a Source")
        single = next(iter(self.node.outputs)) if len(self.node.outputs) == 1 else None
        start = len(self.emitted)
        for item in self.node.run():
            self._collect(*(item if isinstance(item, tuple) else (single, item)))
            if limit and len(self.emitted) - start >= limit:
                self.stop.set()
                break
        return self.emitted[start:]


def run_source(node: Source, limit: int | None = None,
               check: bool = True) -> list[tuple[str, Packet]]:
    """setup, iterate `run()` (stopping it after `limit` packets), teardown; returns what it
    emitted as (port, packet) pairs."""
    with NodeHarness(node, check) as harness:
        return harness.run(limit)


def feed(node: Node, port: str, packets: Iterable[Packet],
         check: bool = True) -> list[tuple[str, Packet]]:
    """setup, deliver `packets` to input `port`, teardown; returns the emitted (port, packet)
    pairs."""
    with NodeHarness(node, check) as harness:
        for packet in packets:
            harness.send(port, packet)
        return harness.emitted
