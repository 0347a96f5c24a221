"""Joining inputs: packets of several input ports matched by timestamp (within a tolerance) or by
sequence number, delivered together to one handler, like ROS message_filters' ApproximateTime
or LabGraph's aligner.

    class Retention(Node):
        original = Input("labels")
        decoded = Input("labels")
        tolerance_ms = Param(float, 1.0, "largest timestamp difference of a pair")
        pairs = Join("original", "decoded", by="timestamp", tolerance="tolerance_ms")

        def on_pairs(self, original, decoded): ...

A packet waits in its port's pending buffer until every other port has a packet that matches
it; the closest one is taken (ties: the earliest arrival), so arrival order does not matter.
Each buffer holds at most `size` packets; beyond that the packet with the smallest key is
evicted. Evicted packets, and those still waiting at end of stream, are counted as unmatched
per port in the node's counters (`<join>: {matched, pending, unmatched: {port: n}}`), which the
run report shows.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .packet import Packet

if TYPE_CHECKING:               # a type only: node.py imports this module
    from .node import Node

BY = ("timestamp", "seq")


class Join:
    """Declares that input ports are matched and handled together by `on_<name>(*packets)`.

    `tolerance` (milliseconds, timestamps only) and `size` (pending packets per port) are
    numbers or the names of the node's Params that hold them, so a graph can set them.
    """

    def __init__(self, *ports: str, by: str = "timestamp", tolerance: float | str = 0.0,
                 size: int | str = 64, doc: str = ""):
        if len(ports) < 2 or len(set(ports)) != len(ports):
            raise TypeError(f"Join needs two or more distinct input ports, got {ports}")
        if by not in BY:
            raise TypeError(f"Join by={by!r}: must be one of {list(BY)}")
        self.ports, self.by, self.tolerance, self.size, self.doc = ports, by, tolerance, size, doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def check(self, cls: type[Node]) -> None:
        """Raise TypeError when the declaration does not fit the node class `cls`."""
        for port in self.ports:
            if port not in cls.inputs:
                raise TypeError(f"{cls.__name__}: join '{self.name}' names '{port}', which is "
                                f"not an input (inputs: {', '.join(cls.inputs)})")
        for setting in (self.tolerance, self.size):
            if isinstance(setting, str) and setting not in cls.params:
                raise TypeError(f"{cls.__name__}: join '{self.name}' reads parameter "
                                f"'{setting}', which the class does not declare")
        if not callable(getattr(cls, f"on_{self.name}", None)):
            raise TypeError(f"{cls.__name__}: join '{self.name}' needs a method "
                            f"on_{self.name}({', '.join(self.ports)})")

    def matcher(self, node: Any) -> "Matcher":
        """A matcher with this declaration's settings read from `node`'s parameters."""
        value = lambda setting: getattr(node, setting) if isinstance(setting, str) else setting  # noqa: E731
        tolerance_ms, size = value(self.tolerance), value(self.size)
        if tolerance_ms < 0 or size < 1:
            raise ValueError(f"join '{self.name}': tolerance must be >= 0 ms and size >= 1, "
                             f"got {tolerance_ms} ms and {size}")
        tolerance_ns = round(tolerance_ms * 1e6) if self.by == "timestamp" else 0
        return Matcher(self.ports, self.by, tolerance_ns, int(size))


class Matcher:
    """The pending buffers and counters of one join in one node instance."""

    def __init__(self, ports: tuple[str, ...], by: str, tolerance: int, size: int):
        self.ports, self.by, self.tolerance, self.size = ports, by, tolerance, size
        self.pending: dict[str, list[tuple[int, int, Packet]]] = {p: [] for p in ports}
        self.counters: dict[str, Any] = {"matched": 0, "pending": 0,
                                         "unmatched": {p: 0 for p in ports}}
        self._arrivals = 0

    def key(self, packet: Packet) -> int:
        return packet.timestamp_ns if self.by == "timestamp" else packet.seq

    def push(self, port: str, packet: Packet) -> tuple[Packet, ...] | None:
        """Add a packet; returns the matched packets in port order once all ports have one."""
        key = self.key(packet)
        chosen: dict[str, int | None] = {port: None}
        for other in self.ports:
            if other != port:
                best = self._closest(other, key)
                if best is None:
                    break
                chosen[other] = best
        else:
            keys = [key] + [self.pending[p][i][0] for p, i in chosen.items() if i is not None]
            if max(keys) - min(keys) <= self.tolerance:
                matched = {port: packet}
                for other, index in chosen.items():
                    if index is not None:
                        matched[other] = self.pending[other].pop(index)[2]
                self.counters["matched"] += 1
                self._count_pending()
                return tuple(matched[p] for p in self.ports)
        self._arrivals += 1
        waiting = self.pending[port]
        waiting.append((key, self._arrivals, packet))
        if len(waiting) > self.size:
            waiting.remove(min(waiting, key=lambda item: item[:2]))
            self.counters["unmatched"][port] += 1
        self._count_pending()
        return None

    def _closest(self, port: str, key: int) -> int | None:
        """Index of the pending packet of `port` nearest to `key` within the tolerance."""
        best, best_rank = None, None
        for index, (other_key, arrival, _) in enumerate(self.pending[port]):
            distance = abs(other_key - key)
            if distance <= self.tolerance and (best_rank is None or (distance, arrival) < best_rank):
                best, best_rank = index, (distance, arrival)
        return best

    def flush(self) -> None:
        """End of input: whatever still waits will never match."""
        for port, waiting in self.pending.items():
            self.counters["unmatched"][port] += len(waiting)
            waiting.clear()
        self._count_pending()

    def _count_pending(self) -> None:
        self.counters["pending"] = sum(len(w) for w in self.pending.values())
