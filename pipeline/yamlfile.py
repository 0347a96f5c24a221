"""YAML loading that remembers line numbers, so graph errors can say `file:line`."""
from __future__ import annotations

import yaml


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


class YamlError(ValueError):
    """Unparseable YAML; the message is `file:line: what`."""


def load(text: str, filename: str):
    """Parse `text`; mappings become LineDict and sequences LineList."""
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise YamlError(f"{filename}:{line}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{filename}: invalid YAML: {exc}") from None
