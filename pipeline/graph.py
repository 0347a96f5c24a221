"""Graph files: load the YAML contract, apply `--set` overrides, and report every mistake.

Each error reads `file:line: node 'name': what is wrong`; `validate` collects all of them so a
user fixes a graph in one pass. The format is documented in docs/graphs.md.
"""
from __future__ import annotations

import builtins
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import yamlfile
from .messages import brief, clip, did_you_mean
from .node import Node, ParamError, Source, Wiring, ports_compatible
from .registry import UnknownNodeType, resolve
from .transport import KEY_FILES

POLICIES = ("block", "drop_oldest", "latest")
DEFAULT_GROUP = "main"
MAX_EDGE_SIZE = 65_536  # packets queued on one edge (also its ZeroMQ high-water mark)
MAX_NAME = 100
MAX_REPLICAS = 1024
TOP_LEVEL = ("name", "groups", "nodes", "edges", "defaults", "curve_keys")
_EDGE = re.compile(r"^\s*([A-Za-z_][\w-]*)\.(\w+)\s*->\s*([A-Za-z_][\w-]*)\.(\w+)\s*$")
_NAME = re.compile(r"^[A-Za-z_][\w-]*$")


@dataclass
class GroupSpec:
    """A set of nodes that run in one process — or in `replicas` processes that share the
    packets sent to the group. `endpoint` is where senders reach its inbox (one per replica),
    `bind` where the inbox listens if that differs (default: the endpoint itself)."""

    name: str
    endpoint: str | list[str] | None = None
    host: str = "local"
    line: int = 0
    replicas: int = 1
    bind: str | list[str] | None = None

    def endpoints(self) -> list[str] | None:
        """One endpoint per replica, or None when the graph leaves it to `dance run`."""
        return _per_replica(self.endpoint, self.replicas)

    def binds(self) -> list[str] | None:
        return _per_replica(self.bind, self.replicas)

    def worker(self, replica: int) -> str:
        """The name of one process of this group in reports: `group`, or `group[k]`."""
        return self.name if self.replicas == 1 else f"{self.name}[{replica}]"


_TCP = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[^:/\s]+):(\d+|\*)$")
LOOPBACK = re.compile(r"^tcp://(127\.[\d.]+|localhost|\[::1\]):")
# every interface: a place to listen (`bind:`, the explicit opt-in), never one to connect to
WILDCARD = re.compile(r"^tcp://(0\.0\.0\.0|\*|\[::\]|\[::0\]):")


def _per_replica(value: str | list[str] | None, replicas: int) -> list[str] | None:
    """A list as given; one string for several replicas counts the TCP port up."""
    if value is None or isinstance(value, list):
        return value
    if replicas == 1:
        return [value]
    base, _, port = value.rpartition(":")
    return [f"{base}:{int(port) + k}" for k in range(replicas)]


@dataclass
class NodeSpec:
    name: str
    type: str
    group: str
    params: dict[str, Any]
    line: int
    cls: builtins.type[Node] | None = None     # builtins: the field `type` hides the name
    param_lines: dict[str, int] = field(default_factory=dict)
    key_lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


@dataclass
class EdgeSpec:
    src: str
    src_port: str
    dst: str
    dst_port: str
    policy: str = "block"
    size: int = 16
    line: int = 0

    @property
    def key(self) -> str:
        return f"{self.src}.{self.src_port}->{self.dst}.{self.dst_port}"


@dataclass
class Graph:
    name: str
    path: str
    nodes: dict[str, NodeSpec]
    edges: list[EdgeSpec]
    groups: dict[str, GroupSpec]
    curve_keys: str | None = None

    def group_nodes(self, group: str) -> list[NodeSpec]:
        return [n for n in self.nodes.values() if n.group == group]

    def crossing(self, edge: EdgeSpec) -> bool:
        """True when an edge joins two groups, so it travels over ZeroMQ."""
        return self.nodes[edge.src].group != self.nodes[edge.dst].group


class GraphError(ValueError):
    """One or more mistakes in a graph file; `errors` holds one line each."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


class _Errors(list):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def add(self, line: int, message: str, node: str | None = None) -> None:
        where = f"node '{node}': " if node else ""
        self.append(f"{self.path}:{line}: {where}{message}")


def load(path: str | Path, overrides: Sequence[str] = ()) -> Graph:
    """Parse and validate a graph file; raises GraphError listing every mistake.

    Relative file paths in the file (path parameters, `curve_keys:`) are made absolute against
    the file's folder, those given with `--set` against the current directory."""
    path = str(path)
    try:
        doc = yamlfile.load(yamlfile.read(path, "graph file"), path)
    except yamlfile.YamlError as exc:
        raise GraphError([str(exc)]) from None
    errors = _Errors(path)
    graph = _parse(doc, path, errors)
    if graph is not None:
        _apply_overrides(graph, overrides, errors)
        _validate(graph, errors)
    if errors:
        raise GraphError(errors)
    assert graph is not None            # _parse returns None only after adding an error
    return graph


def _folder(path: str) -> Path:
    return Path(os.path.abspath(path)).parent


def _parse(doc: Any, path: str, errors: _Errors) -> Graph | None:
    if not isinstance(doc, yamlfile.LineDict):
        errors.add(1, "a graph file is a mapping with 'nodes:' and 'edges:'")
        return None
    for key in doc:
        if key not in TOP_LEVEL:
            errors.add(doc.key_line(key), f"unknown top-level key {brief(key)}"
                                          f"{did_you_mean(key, TOP_LEVEL)}")
    defaults = _parse_defaults(doc, errors)
    groups = _parse_groups(doc.get("groups") or yamlfile.LineDict(), errors)
    nodes: dict[str, NodeSpec] = {}
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        errors.add(doc.key_line("nodes"), "'nodes:' must be a non-empty list")
        raw_nodes = []
    for item, line in zip(raw_nodes, getattr(raw_nodes, "item_lines", [])):
        spec = _parse_node(item, line, errors)
        if spec is None:
            continue
        if spec.name in nodes:
            errors.add(line, f"duplicate node name (first defined at line "
                             f"{nodes[spec.name].line})", spec.name)
            continue
        nodes[spec.name] = spec
    edges = []
    raw_edges = doc.get("edges") or []
    if not isinstance(raw_edges, list):
        errors.add(doc.key_line("edges"), "'edges:' must be a list")
        raw_edges = []
    for item, line in zip(raw_edges, getattr(raw_edges, "item_lines", [])):
        edge = _parse_edge(item, line, defaults, errors)
        if edge is not None:
            edges.append(edge)
    if not groups:
        groups = {DEFAULT_GROUP: GroupSpec(DEFAULT_GROUP)}
    name = doc.get("name") or Path(path).stem
    if not isinstance(name, str) or len(name) > MAX_NAME:
        errors.add(doc.key_line("name"), f"'name:' must be a string of at most {MAX_NAME} "
                                         f"characters, got {brief(name)}")
        name = Path(path).stem
    return Graph(name, path, nodes, edges, groups, _curve_keys(doc, path, errors))


def _parse_defaults(doc: yamlfile.LineDict, errors: _Errors) -> dict:
    """Edge settings for edges that do not give their own: a mapping of policy and size."""
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        errors.add(doc.key_line("defaults"), f"'defaults:' must be a mapping of edge settings "
                                             f"(policy, size), got {brief(defaults)}")
        return {}
    unknown = set(defaults) - {"policy", "size"}
    if unknown:
        errors.add(doc.key_line("defaults"), f"defaults: unknown keys {_keys(unknown)} "
                                             f"(allowed: policy, size)")
    return defaults


def _curve_keys(doc: yamlfile.LineDict, path: str, errors: _Errors) -> str | None:
    """The CURVE key folder, resolved against the graph file's folder and checked for the key
    files `dance keys` writes."""
    value = doc.get("curve_keys")
    if value is None:
        return None
    line = doc.key_line("curve_keys")
    if not isinstance(value, str) or not value:
        errors.add(line, f"'curve_keys:' must be the folder written by `dance keys`, got "
                         f"{brief(value)}")
        return None
    folder = Path(os.path.abspath(_folder(path) / Path(value).expanduser()))
    if not folder.is_dir():
        errors.add(line, f"curve_keys: no such folder: {folder} (create keys with "
                         f"`dance keys {clip(value, 80)}`)")
    else:
        missing = [name for name in KEY_FILES if not (folder / name).is_file()]
        if missing:
            errors.add(line, f"curve_keys: {folder} lacks {', '.join(missing)} (create keys "
                             f"with `dance keys`)")
    return str(folder)


def _keys(keys) -> str:
    """Unknown keys, sorted and shown in bounded size."""
    return brief(sorted(str(k) for k in keys))


def _parse_groups(raw: Any, errors: _Errors) -> dict[str, GroupSpec]:
    if not isinstance(raw, yamlfile.LineDict):
        errors.add(getattr(raw, "line", 0), "'groups:' must map group names to settings")
        return {}
    groups = {}
    for name, settings in raw.items():
        line = raw.key_line(name)
        if not isinstance(name, str) or not _NAME.match(name) or len(name) > MAX_NAME:
            errors.add(line, f"group name {brief(name)} must be letters, digits, _ or - (at "
                             f"most {MAX_NAME})")
            continue
        settings = settings or {}
        if not isinstance(settings, dict):
            errors.add(line, f"group '{name}': settings must be a mapping (endpoint, host, "
                             f"bind, replicas)")
            settings = {}
        unknown = set(settings) - {"endpoint", "host", "bind", "replicas"}
        if unknown:
            errors.add(line, f"group '{name}': unknown keys {_keys(unknown)} "
                             f"(allowed: endpoint, host, bind, replicas)")
        endpoint, bind = settings.get("endpoint"), settings.get("bind")
        replicas = settings.get("replicas", len(endpoint) if isinstance(endpoint, list) else 1)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1 \
                or replicas > MAX_REPLICAS:
            errors.add(line, f"group '{name}': replicas must be a positive integer, got "
                             f"{brief(replicas)} (at most {MAX_REPLICAS})")
            replicas = 1
        for key, value in (("endpoint", endpoint), ("bind", bind)):
            problem = _address_problem(value, replicas, key == "bind")
            if problem:
                errors.add(line, f"group '{name}': {key} {brief(value)}: {problem}")
                settings = {**settings, key: None}
        host = settings.get("host", "local")
        if not isinstance(host, str) or not host or len(host) > 253:
            errors.add(line, f"group '{name}': host must be a host name, got {brief(host)}")
            host = "local"
        groups[name] = GroupSpec(name, settings.get("endpoint"), host, line, replicas,
                                 settings.get("bind"))
    return groups


def _address_problem(value: Any, replicas: int, bind: bool) -> str | None:
    """Why `value` cannot be an endpoint (or, with `bind`, a bind address) of a group, or
    None. Only a bind address may be a wildcard such as tcp://0.0.0.0:PORT: listening on every
    interface is asked for explicitly, and nobody can connect to a wildcard."""
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) != replicas:
        return f"lists {len(value)} addresses for {replicas} replicas"
    for item in values:
        if not isinstance(item, str) or not (item.startswith("ipc://") or _TCP.match(item)):
            return "expected tcp://ADDRESS:PORT (or ipc://PATH)"
        if not bind and WILDCARD.match(item):
            return ("senders cannot connect to a wildcard address; give this host's address "
                    "as the endpoint, and `bind: tcp://0.0.0.0:PORT` to listen on every "
                    "interface (docs/distributed.md)")
    if replicas > 1 and isinstance(value, str):
        if not _TCP.match(value) or value.endswith(":*"):
            return "one address for several replicas must be tcp://ADDRESS:PORT (replica k " \
                   "gets PORT+k), or give a list with one address per replica"
    return None


def _parse_node(item: Any, line: int, errors: _Errors) -> NodeSpec | None:
    if not isinstance(item, yamlfile.LineDict):
        errors.add(line, "each node is a mapping with name, type, params, group")
        return None
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > MAX_NAME:
        errors.add(line, f"node needs a 'name:' made of letters, digits, _ or - (at most "
                         f"{MAX_NAME}; got {brief(name)})")
        return None
    for key in item:
        if key not in ("name", "type", "params", "group"):
            errors.add(item.key_line(key), f"unknown key {brief(key)} (allowed: name, type, "
                                           f"params, group)", name)
    node_type = item.get("type")
    if node_type is None:
        errors.add(line, "missing 'type:'", name)
        return None
    if not isinstance(node_type, str):
        errors.add(item.key_line("type"), f"'type:' must be a node type name, got "
                                          f"{brief(node_type)}", name)
        return None
    params = item.get("params") or {}
    if not isinstance(params, dict):
        errors.add(item.key_line("params"), "'params:' must be a mapping", name)
        params = {}
    param_lines = {k: params.key_line(k) for k in params} if hasattr(params, "key_line") else {}
    group = item.get("group", DEFAULT_GROUP)
    if not isinstance(group, str):
        errors.add(item.key_line("group"), f"'group:' must be a group name, got {brief(group)}",
                   name)
        group = DEFAULT_GROUP
    return NodeSpec(name, node_type, group, dict(params), line, param_lines=param_lines,
                    key_lines=dict(item.lines))


def _parse_edge(item: Any, line: int, defaults: dict, errors: _Errors) -> EdgeSpec | None:
    options = {}
    if isinstance(item, dict):
        options = {k: v for k, v in item.items() if k != "link"}
        unknown = set(options) - {"policy", "size"}
        if unknown:
            errors.add(line, f"edge: unknown keys {sorted(unknown)} (allowed: link, policy, size)")
        item = item.get("link")
    match = _EDGE.match(item) if isinstance(item, str) else None
    if not match:
        errors.add(line, f"edge must read 'node.port -> node.port', got {brief(item)}")
        return None
    policy = options.get("policy", defaults.get("policy", "block"))
    size = options.get("size", defaults.get("size", 16))
    if not isinstance(policy, str) or policy not in POLICIES:
        errors.add(line, f"edge policy {brief(policy)} is not one of {list(POLICIES)}")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_EDGE_SIZE:
        errors.add(line, f"edge size must be an integer from 1 to {MAX_EDGE_SIZE}, got "
                         f"{brief(size)}")
        size = 1
    if policy == "latest":
        size = 1
    src, src_port, dst, dst_port = match.groups()
    return EdgeSpec(src, src_port, dst, dst_port, policy=policy, size=size, line=line)


def _apply_overrides(graph: Graph, overrides: Sequence[str], errors: _Errors) -> None:
    for text in overrides:
        target, sep, value = text.partition("=")
        node_name, dot, param = target.partition(".")
        shown = clip(text, 80)
        if not sep or not dot:
            errors.append(f"--set {shown}: expected node.param=value")
        elif node_name not in graph.nodes:
            errors.append(f"--set {shown}: no node named {brief(node_name)}"
                          f"{did_you_mean(node_name, graph.nodes)}")
        else:
            try:
                parsed = yamlfile.load(value, "--set")
            except yamlfile.YamlError:
                parsed = value
            graph.nodes[node_name].params[param] = parsed
            graph.nodes[node_name].param_lines[param] = 0


def _validate(graph: Graph, errors: _Errors) -> None:
    checkable = []
    for spec in graph.nodes.values():
        if spec.group not in graph.groups:
            errors.add(spec.line_of("group"), f"group {brief(spec.group)} is not declared under "
                                              f"'groups:' (declared: {', '.join(graph.groups)})"
                                              f"{did_you_mean(spec.group, graph.groups)}",
                       spec.name)
        try:
            spec.cls = resolve(spec.type)
        except UnknownNodeType as exc:
            errors.add(spec.line_of("type"), str(exc), spec.name)
            continue
        if _check_params(spec, _folder(graph.path), errors):
            checkable.append(spec)
    for edge in graph.edges:
        _check_edge(graph, edge, errors)
    _check_cycles(graph, errors)
    _check_groups(graph, errors)
    for spec in checkable:
        _check_node(graph, spec, errors)


def _check_params(spec: NodeSpec, folder: Path, errors: _Errors) -> bool:
    """Check each parameter against its declaration and make path parameters absolute; True
    when all of them are usable."""
    assert spec.cls is not None             # _validate resolved the type
    declared, before = spec.cls.params, len(errors)
    for key, value in spec.params.items():
        line = spec.param_lines.get(key, spec.line)
        origin = "" if line else " (from --set)"
        if key not in declared:
            errors.add(line or spec.line, f"unknown parameter {brief(key)}{origin} for type "
                       f"{spec.type} (parameters: {', '.join(declared) or 'none'})"
                       f"{did_you_mean(key, declared)}", spec.name)
            continue
        param = declared[key]
        try:
            param.coerce(value)
        except ParamError as exc:
            errors.add(line or spec.line, f"parameter '{key}'{origin}: {exc}", spec.name)
            continue
        spec.params[key] = param.resolve(value, folder if line else Path.cwd())
        problem = param.path_problem(spec.params[key])
        if problem:
            errors.add(line or spec.line, f"parameter '{key}'{origin}: {problem}", spec.name)
    for key, param in declared.items():
        if param.required and key not in spec.params:
            errors.add(spec.line, f"missing required parameter '{key}' ({param.doc})", spec.name)
    return len(errors) == before


def _check_node(graph: Graph, spec: NodeSpec, errors: _Errors) -> None:
    """Run the node type's own `check` on its parameters and wiring; any exception it raises
    is reported as one line too (a plugin's check must not crash validate)."""
    assert spec.cls is not None             # _validate resolved the type
    params = {key: spec.params[key] if key in spec.params else param.default
              for key, param in spec.cls.params.items()}
    wiring = Wiring()
    for edge in graph.edges:
        src, dst = graph.nodes.get(edge.src), graph.nodes.get(edge.dst)
        if src is None or dst is None or src.cls is None or dst.cls is None \
                or edge.src_port not in src.cls.outputs or edge.dst_port not in dst.cls.inputs:
            continue
        if dst is spec:
            wiring.inputs.setdefault(edge.dst_port, set()).add(
                src.cls.outputs[edge.src_port].type)
        if src is spec:
            wiring.outputs.setdefault(edge.src_port, set()).add(
                dst.cls.inputs[edge.dst_port].type)
    try:
        problems = list(spec.cls.check(params, wiring))
    except Exception as exc:  # noqa: BLE001 - whatever a node's check raises is one line
        problems = [(None, f"check of type {spec.type} failed: {type(exc).__name__}: "
                           f"{clip(exc)}")]
    for key, message in problems:
        line = spec.param_lines.get(key, spec.line) if key else spec.line
        if key:
            origin = "" if line else " (from --set)"
            message = f"parameter '{key}'{origin}: {message}"
        errors.add(line or spec.line, clip(message, 1000), spec.name)


def _check_edge(graph: Graph, edge: EdgeSpec, errors: _Errors) -> None:
    ends: list[str] = []
    for node_name, port, direction in ((edge.src, edge.src_port, "outputs"),
                                       (edge.dst, edge.dst_port, "inputs")):
        spec = graph.nodes.get(node_name)
        if spec is None:
            errors.add(edge.line, f"edge {edge.key}: no node named '{node_name}'")
            return
        if spec.cls is None:
            return
        ports = getattr(spec.cls, direction)
        if port not in ports:
            kind = "output" if direction == "outputs" else "input"
            errors.add(edge.line, f"edge {edge.key}: unknown {kind} port '{port}' of type "
                                  f"{spec.type} ({kind}s: {', '.join(ports) or 'none'})"
                                  f"{did_you_mean(port, ports)}", node_name)
            return
        ends.append(ports[port].type)
    if not ports_compatible(*ends):
        errors.add(edge.line, f"edge {edge.key}: type mismatch, {edge.src}.{edge.src_port} "
                              f"sends '{ends[0]}' but {edge.dst}.{edge.dst_port} takes "
                              f"'{ends[1]}'", edge.dst)


def _check_cycles(graph: Graph, errors: _Errors) -> None:
    """Graphs are DAGs: a cycle would deadlock bounded `block` queues at end of stream."""
    after: dict[str, list[EdgeSpec]] = {name: [] for name in graph.nodes}
    for edge in graph.edges:
        if edge.src in after and edge.dst in after:
            after[edge.src].append(edge)
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for edge in after[name]:
            if state.get(edge.dst) == 1:
                cycle = path[path.index(edge.dst):] + [edge.dst]
                errors.add(edge.line, f"cycle: {' -> '.join(cycle)}", edge.dst)
            elif edge.dst not in state:
                visit(edge.dst, path + [edge.dst])
        state[name] = 2

    for name in graph.nodes:
        if name not in state:
            visit(name, [name])


def _check_groups(graph: Graph, errors: _Errors) -> None:
    """Replicas share what their group receives, so they cannot hold sources; a group that
    receives from another host needs an endpoint that host can reach."""
    for spec in graph.nodes.values():
        group = graph.groups.get(spec.group)
        if group and group.replicas > 1 and is_source(spec):
            errors.add(spec.line, f"source in group '{group.name}', which has "
                                  f"{group.replicas} replicas: each replica would produce its "
                                  f"own copy of the stream; put sources in a group of their own",
                       spec.name)
    reported = set()
    for edge in graph.edges:
        src, dst = graph.nodes.get(edge.src), graph.nodes.get(edge.dst)
        if src is None or dst is None or src.group not in graph.groups \
                or dst.group not in graph.groups:
            continue
        sender, receiver = graph.groups[src.group], graph.groups[dst.group]
        if sender.host == receiver.host or receiver.name in reported:
            continue
        reported.add(receiver.name)
        endpoints = receiver.endpoints() or []
        if not endpoints:
            errors.add(receiver.line, f"group '{receiver.name}' (host '{receiver.host}') "
                                      f"receives from group '{sender.name}' on host "
                                      f"'{sender.host}' and needs an 'endpoint:' that host can "
                                      f"reach, e.g. tcp://192.168.1.20:6000")
        elif any(LOOPBACK.match(e) for e in endpoints):
            errors.add(receiver.line, f"group '{receiver.name}' (host '{receiver.host}') "
                                      f"receives from group '{sender.name}' on host "
                                      f"'{sender.host}', which cannot reach the loopback "
                                      f"endpoint {endpoints[0]}; use an address of host "
                                      f"'{receiver.host}' (and `bind:` if it listens elsewhere)")


def is_source(spec: NodeSpec) -> bool:
    return spec.cls is not None and issubclass(spec.cls, Source)
