"""The node API: a class with typed ports, typed parameters and one method per input.

    class Gain(Node):
        '''Multiply audio by a constant.'''
        audio = Input("audio")
        out = Output("audio")
        gain = Param(float, 1.0, "linear gain")

        def on_audio(self, packet):
            return packet.replace(payload=packet.payload * self.gain)

A handler may return a packet (sent on the node's only output) or call `self.emit(port, packet)`
any number of times. Sources subclass `Source` and implement `run()` as a generator.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

from .packet import Packet

ANY = "any"
# Port types used by the built-in nodes; any other name works too (equal names connect).
PORT_TYPES = {
    "image": "H×W×C uint8 frame, meta: width, height, channels, pixel_format",
    "audio": "frames×channels block, meta: sample_rate, channels, first_sample_ns",
    "encoded": "bytes of a DANCE bitstream, meta: codec, kind, raw_bytes",
    "metrics": "dict of scalars/strings",
    "sensor": "any other Aria stream (IMU, SLAM camera, ...) as arrays + meta",
    ANY: "accepts or produces every type",
}


def ports_compatible(src_type: str, dst_type: str) -> bool:
    return src_type == dst_type or ANY in (src_type, dst_type)


class _Required:
    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()


class ParamError(ValueError):
    """A parameter value that does not fit its declaration."""


class Param:
    """A typed, documented node parameter; read it as `self.<name>` inside the node."""

    def __init__(self, type: type, default: Any = REQUIRED, doc: str = "", *,
                 choices: tuple | None = None, min: float | None = None,
                 max: float | None = None):
        self.type, self.default, self.doc = type, default, doc
        self.choices, self.min, self.max = choices, min, max
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def coerce(self, value: Any) -> Any:
        """Return `value` as this parameter's type, or raise ParamError saying why not."""
        kind = self.type
        if value is None and self.default is None:
            return None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool:
            raise ParamError(f"expected {kind.__name__}, got bool {value!r}")
        if not isinstance(value, kind):
            raise ParamError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ParamError(f"{value!r} is not one of {list(self.choices)}")
        if self.min is not None and value < self.min:
            raise ParamError(f"{value!r} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ParamError(f"{value!r} is above the maximum {self.max}")
        return value

    def describe(self) -> str:
        default = "required" if self.required else f"default {self.default!r}"
        extra = f", one of {list(self.choices)}" if self.choices else ""
        return f"{self.type.__name__}, {default}{extra}"


class Input:
    """An input port of a given type; packets arrive at the node's `on_<name>` method."""

    def __init__(self, type: str = ANY, doc: str = ""):
        self.type, self.doc, self.name = type, doc, ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name


class Output:
    """An output port of a given type; send with `self.emit(name, packet)`."""

    def __init__(self, type: str = ANY, doc: str = ""):
        self.type, self.doc, self.name = type, doc, ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name


class Node:
    """Base class of every node. Subclasses declare Input/Output/Param attributes."""

    inputs: dict[str, Input] = {}
    outputs: dict[str, Output] = {}
    params: dict[str, Param] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, dict] = {"inputs": {}, "outputs": {}, "params": {}}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Input):
                    found["inputs"][name] = value
                elif isinstance(value, Output):
                    found["outputs"][name] = value
                elif isinstance(value, Param):
                    found["params"][name] = value
        cls.inputs, cls.outputs, cls.params = found["inputs"], found["outputs"], found["params"]
        for kind, members in found.items():
            for name in members:
                if name in _RESERVED:
                    raise TypeError(f"{cls.__name__}: {kind[:-1]} '{name}' would hide "
                                    f"Node.{name}; choose another name")
        for name in cls.inputs:
            if not callable(getattr(cls, f"on_{name}", None)):
                raise TypeError(f"{cls.__name__}: input '{name}' needs a method on_{name}(packet)")

    def __init__(self, name: str = "", **params: Any):
        self.name = name or type(self).__name__
        for key, value in params.items():
            if key not in self.params:
                raise ParamError(f"unknown parameter '{key}'")
            setattr(self, key, self.params[key].coerce(value))
        for key, param in self.params.items():
            if key not in params:
                if param.required:
                    raise ParamError(f"missing required parameter '{key}'")
                setattr(self, key, param.default)
        self._emit: Callable[[str, Packet], None] = self._unbound_emit
        self._stop = threading.Event()
        self.counters: dict[str, Any] = {}  # node-specific figures, merged into the report

    # -- lifecycle, overridden by subclasses -------------------------------------------------
    def setup(self) -> None:
        """Open files, load models. Runs in the node's own process before any packet."""

    def teardown(self) -> None:
        """Release resources. Runs once after the last packet, also after an error."""

    # -- used by subclasses ------------------------------------------------------------------
    def emit(self, port: str, packet: Packet) -> None:
        if port not in self.outputs:
            raise KeyError(f"node '{self.name}' has no output '{port}'")
        self._emit(port, packet)

    @property
    def stopping(self) -> bool:
        """True once the graph is asked to stop (Ctrl-C, --duration, an error elsewhere)."""
        return self._stop.is_set()

    # -- used by the runtime -----------------------------------------------------------------
    def attach(self, emit: Callable[[str, Packet], None], stop: threading.Event) -> None:
        self._emit, self._stop = emit, stop

    def handle(self, port: str, packet: Packet) -> None:
        result = getattr(self, f"on_{port}")(packet)
        if result is not None:
            if len(self.outputs) != 1:
                raise TypeError(f"node '{self.name}': a handler that returns a packet needs "
                                f"exactly one output, this node has {len(self.outputs)}")
            self._emit(next(iter(self.outputs)), result)

    def _unbound_emit(self, port: str, packet: Packet) -> None:
        raise RuntimeError(f"node '{self.name}' emitted before the runtime bound it")


_RESERVED = {"name", "counters", "run", "pace"} | {n for n in dir(Node) if not n.startswith("_")}


class Source(Node):
    """A node without inputs that produces packets from `run()`.

    `run()` yields `(port, packet)` pairs, or bare packets when there is one output. Call
    `self.pace(timestamp_ns)` before yielding to replay at `speed`× real time.
    """

    def run(self) -> Iterator[Packet | tuple[str, Packet]]:
        raise NotImplementedError

    def pace(self, timestamp_ns: int, speed: float | None = None) -> None:
        """Sleep until `timestamp_ns` is due at `speed`× real time (0 = as fast as possible)."""
        speed = getattr(self, "speed", 0.0) if speed is None else speed
        if not speed:
            return
        now = time.monotonic_ns()
        if getattr(self, "_pace_anchor", None) is None:
            self._pace_anchor = (timestamp_ns, now)
        first_ts, first_wall = self._pace_anchor
        due = first_wall + (timestamp_ns - first_ts) / speed
        delay = (due - now) / 1e9
        if delay > 0:
            self._stop.wait(delay)
