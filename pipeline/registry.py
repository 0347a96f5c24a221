"""Node types: built-in names (see nodes/__init__.py) or `package.module:Class`."""
from __future__ import annotations

import importlib

from nodes import BUILTIN

from .node import Node


class UnknownNodeType(ValueError):
    pass


def resolve(type_name: str) -> type[Node]:
    """The node class behind a YAML `type:`; imports its module on first use."""
    target = BUILTIN.get(type_name, type_name)
    if ":" not in target:
        raise UnknownNodeType(f"unknown node type '{type_name}' (built-in types: "
                              f"{', '.join(sorted(BUILTIN))}; or use package.module:Class)")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownNodeType(f"node type '{type_name}': cannot import {module_name}: {exc}") \
            from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise UnknownNodeType(f"node type '{type_name}': {target} is not a Node class")
    return cls
