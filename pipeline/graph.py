"""Graph files: load the YAML contract, apply `--set` overrides, and report every mistake.

Each error reads `file:line: node 'name': what is wrong`; `validate` collects all of them so a
user fixes a graph in one pass. The format is documented in docs/graphs.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import yamlfile
from .node import Node, ParamError, Source, ports_compatible
from .registry import UnknownNodeType, resolve

POLICIES = ("block", "drop_oldest", "latest")
DEFAULT_GROUP = "main"
_EDGE = re.compile(r"^\s*([A-Za-z_][\w-]*)\.(\w+)\s*->\s*([A-Za-z_][\w-]*)\.(\w+)\s*$")
_NAME = re.compile(r"^[A-Za-z_][\w-]*$")


@dataclass
class GroupSpec:
    """A set of nodes that run in one process; `endpoint` is where its inbox binds."""

    name: str
    endpoint: str | None = None
    host: str = "local"
    line: int = 0


@dataclass
class NodeSpec:
    name: str
    type: str
    group: str
    params: dict[str, Any]
    line: int
    cls: type[Node] | None = None
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


def load(path: str | Path, overrides: list[str] = ()) -> Graph:
    """Parse and validate a graph file; raises GraphError listing every mistake."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise GraphError([f"{path}: cannot read graph file: {exc.strerror}"]) from None
    try:
        doc = yamlfile.load(text, path)
    except yamlfile.YamlError as exc:
        raise GraphError([str(exc)]) from None
    errors = _Errors(path)
    graph = _parse(doc, path, errors)
    if graph is not None:
        _apply_overrides(graph, overrides, errors)
        _validate(graph, errors)
    if errors:
        raise GraphError(errors)
    return graph


def _parse(doc: Any, path: str, errors: _Errors) -> Graph | None:
    if not isinstance(doc, yamlfile.LineDict):
        errors.add(1, "a graph file is a mapping with 'nodes:' and 'edges:'")
        return None
    for key in doc:
        if key not in ("name", "groups", "nodes", "edges", "defaults", "curve_keys"):
            errors.add(doc.key_line(key), f"unknown top-level key '{key}'")
    defaults = doc.get("defaults") or {}
    groups = _parse_groups(doc.get("groups") or {}, errors)
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
    return Graph(str(name), path, nodes, edges, groups, doc.get("curve_keys"))


def _parse_groups(raw: Any, errors: _Errors) -> dict[str, GroupSpec]:
    if not isinstance(raw, dict):
        errors.add(getattr(raw, "line", 0), "'groups:' must map group names to settings")
        return {}
    groups = {}
    for name, settings in raw.items():
        line = raw.key_line(name)
        settings = settings or {}
        unknown = set(settings) - {"endpoint", "host"}
        if unknown:
            errors.add(line, f"group '{name}': unknown keys {sorted(unknown)} "
                             f"(allowed: endpoint, host)")
        groups[str(name)] = GroupSpec(str(name), settings.get("endpoint"),
                                      str(settings.get("host", "local")), line)
    return groups


def _parse_node(item: Any, line: int, errors: _Errors) -> NodeSpec | None:
    if not isinstance(item, dict):
        errors.add(line, "each node is a mapping with name, type, params, group")
        return None
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        errors.add(line, f"node needs a 'name:' made of letters, digits, _ or - (got {name!r})")
        return None
    for key in item:
        if key not in ("name", "type", "params", "group"):
            errors.add(item.key_line(key), f"unknown key '{key}' (allowed: name, type, params, "
                                           f"group)", name)
    node_type = item.get("type")
    if not isinstance(node_type, str):
        errors.add(line, "missing 'type:'", name)
        return None
    params = item.get("params") or {}
    if not isinstance(params, dict):
        errors.add(item.key_line("params"), "'params:' must be a mapping", name)
        params = {}
    param_lines = {k: params.key_line(k) for k in params} if hasattr(params, "key_line") else {}
    group = str(item.get("group", DEFAULT_GROUP))
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
        errors.add(line, f"edge must read 'node.port -> node.port', got {item!r}")
        return None
    policy = options.get("policy", defaults.get("policy", "block"))
    size = options.get("size", defaults.get("size", 16))
    if policy not in POLICIES:
        errors.add(line, f"edge policy {policy!r} is not one of {list(POLICIES)}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        errors.add(line, f"edge size must be a positive integer, got {size!r}")
        size = 1
    if policy == "latest":
        size = 1
    return EdgeSpec(*match.groups(), policy=policy, size=size, line=line)


def _apply_overrides(graph: Graph, overrides: list[str], errors: _Errors) -> None:
    for text in overrides:
        target, sep, value = text.partition("=")
        node_name, dot, param = target.partition(".")
        if not sep or not dot:
            errors.append(f"--set {text}: expected node.param=value")
        elif node_name not in graph.nodes:
            errors.append(f"--set {text}: no node named '{node_name}'")
        else:
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                parsed = value
            graph.nodes[node_name].params[param] = parsed
            graph.nodes[node_name].param_lines[param] = 0


def _validate(graph: Graph, errors: _Errors) -> None:
    for spec in graph.nodes.values():
        if spec.group not in graph.groups:
            errors.add(spec.line_of("group"), f"group '{spec.group}' is not declared under "
                                              f"'groups:' (declared: {', '.join(graph.groups)})",
                       spec.name)
        try:
            spec.cls = resolve(spec.type)
        except UnknownNodeType as exc:
            errors.add(spec.line_of("type"), str(exc), spec.name)
            continue
        _check_params(spec, errors)
    for edge in graph.edges:
        _check_edge(graph, edge, errors)
    _check_cycles(graph, errors)


def _check_params(spec: NodeSpec, errors: _Errors) -> None:
    declared = spec.cls.params
    for key, value in spec.params.items():
        line = spec.param_lines.get(key, spec.line)
        origin = "" if line else " (from --set)"
        if key not in declared:
            errors.add(line or spec.line, f"unknown parameter '{key}'{origin} for type "
                       f"{spec.type} (parameters: {', '.join(declared) or 'none'})", spec.name)
            continue
        try:
            declared[key].coerce(value)
        except ParamError as exc:
            errors.add(line or spec.line, f"parameter '{key}'{origin}: {exc}", spec.name)
    for key, param in declared.items():
        if param.required and key not in spec.params:
            errors.add(spec.line, f"missing required parameter '{key}' ({param.doc})", spec.name)


def _check_edge(graph: Graph, edge: EdgeSpec, errors: _Errors) -> None:
    ends = []
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
                                  f"{spec.type} ({kind}s: {', '.join(ports) or 'none'})",
                       node_name)
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


def is_source(spec: NodeSpec) -> bool:
    return spec.cls is not None and issubclass(spec.cls, Source)
