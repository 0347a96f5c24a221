"""YAML loading that remembers line numbers, so graph errors can say `file:line`.

Loading is bounded for hostile files: the file's size, its nesting depth and its size with every
alias expanded (an alias bomb is a few lines that expand to billions of nodes) are limited before
any Python object is built.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from .messages import clip

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000  # YAML nodes with every alias expanded


class LineDict(dict):
    """A mapping from YAML with `.line` (its own) and `.key_line(key)` (each entry's) numbers."""

    line: int = 0
    lines: dict

    def key_line(self, key: str) -> int:
        return self.lines.get(key, self.line)


class LineList(list):
    """A sequence from YAML with `.line` and `.item_lines` (1-based)."""

    line: int = 0
    item_lines: list


class _LineLoader(yaml.SafeLoader):
    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node

    def construct_mapping(self, node, deep=False):
        mapping = LineDict(super().construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        mapping.lines = {self.construct_object(k, deep=True): k.start_mark.line + 1
                         for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
        return mapping

    def construct_sequence(self, node, deep=False):
        seq = LineList(super().construct_sequence(node, deep=True))
        seq.line = node.start_mark.line + 1
        seq.item_lines = [item.start_mark.line + 1 for item in node.value]
        return seq


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                            _LineLoader.construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG,
                            _LineLoader.construct_sequence)


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expanded_size(root) -> None:
    """Raise ComposerError when the document, aliases expanded, exceeds MAX_NODES nodes or an
    alias refers to a node that contains it; memoised, so linear in the file's own nodes."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_NODES} values once aliases are expanded "
                                f"(an alias bomb?)", node.start_mark)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise yaml.composer.ComposerError(None, None, "an alias refers to a node that "
                                                          "contains it", node.start_mark)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


class YamlError(ValueError):
    """Unparseable or oversized YAML; the message is one line, `file:line: what`."""


def read(path: str | Path, what: str = "file", max_bytes: int = MAX_FILE_BYTES) -> str:
    """The text of a YAML file: at most `max_bytes`, UTF-8 (YamlError otherwise)."""
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise YamlError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise YamlError(f"{path}: larger than the limit of {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise YamlError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                        f"offset {exc.start})") from None


def load(text: str, filename: str):
    """Parse `text`; mappings become LineDict and sequences LineList."""
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        what = clip(exc.problem or exc.context)
        raise YamlError(f"{filename}:{line}: invalid YAML: {what}") from None
    except yaml.reader.ReaderError as exc:
        line = text[:exc.position].count("\n") + 1
        raise YamlError(f"{filename}:{line}: invalid YAML: unacceptable character "
                        f"#x{exc.character:04x}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{filename}: invalid YAML: {clip(exc)}") from None

