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

Inputs declared `Input(type, batch=N)` get a list of the packets queued at that moment (1..N) per
call; inputs named in a `Join(...)` are matched by timestamp or seq and handled together by
`on_<join>(*packets)` (pipeline/join.py).
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .join import Join
from .messages import brief, type_name
from .packet import Packet

ANY = "any"
# Port types used by the built-in nodes; any other name works too (equal names connect).
PORT_TYPES = {
    "image": "H×W×C uint8 frame, meta: width, height, channels, pixel_format",
    "audio": "frames×channels block, meta: sample_rate, channels, first_sample_ns",
    "encoded": "bytes of a DANCE bitstream, meta: codec, kind, raw_bytes",
    "metrics": "dict of scalars/strings",
    "labels": "dict per classified frame: label, index, probs, max_logit",
    "transcript": "dict per window of speech: text, start_s, seconds",
    "activity": "dict per audio block: voice-activity probs and speech decisions per 32 ms frame",
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


FILE, OUTPUT, FILE_OR_NAME = "file", "output", "file_or_name"  # kinds of path parameters


class Param:
    """A typed, documented node parameter; read it as `self.<name>` inside the node.

    `path` marks a str parameter as a file path: FILE (a file to read, which `validate` checks
    exists), OUTPUT (a file to write) or FILE_OR_NAME (a file, or a name the node knows, such as
    a zoo codec: a relative value is a path when it has a `/` or a file suffix such as `.pt`,
    or names an existing file). A
    graph resolves relative paths against the graph file's folder, `--set` values against the
    current directory; "" means no file.
    """

    def __init__(self, type: type, default: Any = REQUIRED, doc: str = "", *,
                 choices: tuple | None = None, min: float | None = None,
                 max: float | None = None, path: str | None = None):
        if path not in (None, FILE, OUTPUT, FILE_OR_NAME):
            raise ValueError(f"Param path kind {path!r} is not one of {FILE}, {OUTPUT}, "
                             f"{FILE_OR_NAME}")
        self.type, self.default, self.doc = type, default, doc
        self.choices, self.min, self.max, self.path = choices, min, max, path
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def coerce(self, value: Any) -> Any:
        """Return `value` as this parameter's type, or raise ParamError saying why not."""
        kind: Any = self.type   # Any: isinstance(value, kind) would narrow value to object
        if value is None and self.default is None:
            return None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool:
            raise ParamError(f"expected {kind.__name__}, got bool {value!r}")
        if not isinstance(value, kind):
            raise ParamError(f"expected {kind.__name__}, got {type_name(value)} "
                             f"{brief(value)}")
        if self.choices is not None and value not in self.choices:
            raise ParamError(f"{brief(value)} is not one of {list(self.choices)}")
        if self.min is not None and value < self.min:
            raise ParamError(f"{brief(value)} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ParamError(f"{brief(value)} is above the maximum {self.max}")
        return value

    def resolve(self, value: Any, base: Path) -> Any:
        """A path parameter's relative value as an absolute path against folder `base`."""
        if self.path is None or not isinstance(value, str) or not value:
            return value
        path = Path(value).expanduser()
        if path.is_absolute():
            return str(path)
        resolved = os.path.abspath(base / path)
        if self.path == FILE_OR_NAME and "/" not in value and os.sep not in value \
                and not path.suffix[1:].isalpha() and not os.path.exists(resolved):
            return value  # a name, e.g. a zoo codec or a pretrained tag
        return resolved

    def path_problem(self, value: Any) -> str | None:
        """Why a resolved path value cannot be used, or None."""
        if not isinstance(value, str) or not value:
            return None
        if self.path == FILE and not os.path.isfile(value):
            return f"{'is a folder' if os.path.isdir(value) else 'no such file'}: {value}"
        if self.path == OUTPUT and os.path.isdir(value):
            return f"is a folder, not a file to write: {value}"
        return None

    def describe(self) -> str:
        default = "required" if self.required else f"default {self.default!r}"
        extra = f", one of {list(self.choices)}" if self.choices else ""
        return f"{self.type.__name__}, {default}{extra}"


class Input:
    """An input port of a given type; packets arrive at the node's `on_<name>` method.

    With `batch` (a number, or the name of an int Param), `on_<name>` receives a list: the
    packets already queued on this port when it is served, at most `batch` of them.
    """

    def __init__(self, type: str = ANY, doc: str = "", *, batch: int | str | None = None):
        self.type, self.doc, self.name, self.batch = type, doc, "", batch

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name


class Output:
    """An output port of a given type; send with `self.emit(name, packet)`."""

    def __init__(self, type: str = ANY, doc: str = ""):
        self.type, self.doc, self.name = type, doc, ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name


@dataclass
class Wiring:
    """What a node's ports connect to in a graph: per connected port, the port types at the
    other ends, e.g. `inputs={"image": {"image"}}`, `outputs={"out": {"encoded", "any"}}`."""

    inputs: dict[str, set[str]] = field(default_factory=dict)
    outputs: dict[str, set[str]] = field(default_factory=dict)


class Node:
    """Base class of every node. Subclasses declare Input/Output/Param attributes; a subclass
    drops an inherited one by setting its name to None."""

    inputs: dict[str, Input] = {}
    outputs: dict[str, Output] = {}
    params: dict[str, Param] = {}
    joins: dict[str, Join] = {}
    _join_of: dict[str, str] = {}  # input port -> the join it belongs to

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, dict] = {"inputs": {}, "outputs": {}, "params": {}, "joins": {}}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if value is None:       # a subclass drops an inherited port or param
                    for members in found.values():
                        members.pop(name, None)
                elif isinstance(value, Input):
                    found["inputs"][name] = value
                elif isinstance(value, Output):
                    found["outputs"][name] = value
                elif isinstance(value, Param):
                    found["params"][name] = value
                elif isinstance(value, Join):
                    found["joins"][name] = value
        cls.inputs, cls.outputs, cls.params = found["inputs"], found["outputs"], found["params"]
        cls.joins = found["joins"]
        for kind, members in found.items():
            for name in members:
                if name in _RESERVED:
                    raise TypeError(f"{cls.__name__}: {kind[:-1]} '{name}' would hide "
                                    f"Node.{name}; choose another name")
        cls._join_of = {}
        for join in cls.joins.values():
            join.check(cls)
            for port in join.ports:
                if port in cls._join_of:
                    raise TypeError(f"{cls.__name__}: input '{port}' is in two joins")
                if cls.inputs[port].batch is not None:
                    raise TypeError(f"{cls.__name__}: input '{port}' cannot be both batched "
                                    f"and joined")
                cls._join_of[port] = join.name
        for name, declared in cls.inputs.items():
            if isinstance(declared.batch, str) and declared.batch not in cls.params:
                raise TypeError(f"{cls.__name__}: input '{name}' takes its batch size from "
                                f"parameter '{declared.batch}', which the class does not declare")
            if name not in cls._join_of and not callable(getattr(cls, f"on_{name}", None)):
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
        self._matchers = {name: join.matcher(self) for name, join in self.joins.items()}
        for name, matcher in self._matchers.items():
            self.counters[name] = matcher.counters

    # -- lifecycle, overridden by subclasses -------------------------------------------------
    @classmethod
    def check(cls, params: dict[str, Any], wiring: Wiring) -> Iterator[tuple[str | None, str]]:
        """Problems `dance validate` finds before anything runs, as (parameter or None, one-line
        message): files that `setup()` would fail to open, names it would not know, inputs the
        parameters cannot serve. `params` are coerced, defaults filled and paths resolved.
        Keep it cheap: read headers and metadata, never load a model."""
        return iter(())

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
        join = self._join_of.get(port)
        if join is not None:
            matched = self._matchers[join].push(port, packet)
            if matched is not None:
                self._deliver(getattr(self, f"on_{join}")(*matched))
        elif self.batch_size(port):
            self.handle_batch(port, [packet])
        else:
            self._deliver(getattr(self, f"on_{port}")(packet))

    def handle_batch(self, port: str, packets: list[Packet]) -> None:
        """Deliver several queued packets to a batched input in one call."""
        self._deliver(getattr(self, f"on_{port}")(packets))

    def batch_size(self, port: str) -> int:
        """The most packets one call of a batched input takes; 0 for unbatched inputs."""
        batch = self.inputs[port].batch
        if batch is None:
            return 0
        return max(1, getattr(self, batch) if isinstance(batch, str) else batch)

    def end_of_input(self) -> None:
        """All inputs have ended: packets still waiting in a join will never match."""
        for matcher in self._matchers.values():
            matcher.flush()

    def _deliver(self, result: Packet | None) -> None:
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
