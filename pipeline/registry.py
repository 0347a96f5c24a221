"""Node types: built-in names (nodes/__init__.py), names that installed packages declare in the
`dance.nodes` entry-point group, or `package.module:Class`.

A package adds node types with, in its pyproject.toml,

    [project.entry-points."dance.nodes"]
    sound_direction = "my_package.sound_direction:SoundDirection"

Built-in names win over plugin names; a clash is reported, never silently resolved.
"""
from __future__ import annotations

import functools
import importlib
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from nodes import BUILTIN

from .messages import brief, did_you_mean
from .node import Node

ENTRY_POINT_GROUP = "dance.nodes"


class UnknownNodeType(ValueError):
    pass


@dataclass(frozen=True)
class Plugin:
    """A node type declared by an installed package."""

    name: str
    target: str        # module:Class, as the entry point says
    package: str       # "distribution version"
    entry_point: EntryPoint

    @property
    def where(self) -> str:
        return (f"package '{self.package}' (entry point '{self.name} = {self.target}' "
                f"in group {ENTRY_POINT_GROUP})")


@functools.lru_cache(maxsize=1)
def plugins() -> tuple[dict[str, Plugin], dict[str, str]]:
    """The plugin node types of the installed packages, and the problems with their names (a
    name that a built-in type already has, a name declared by two packages), by type name."""
    found: dict[str, Plugin] = {}
    problems: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown package"
        plugin = Plugin(ep.name, ep.value, dist, ep)
        if ep.name in BUILTIN:
            problems[ep.name] = (f"node type '{ep.name}' of {plugin.where} has the name of a "
                                 f"built-in type, which wins; rename the entry point, or write "
                                 f"`type: {ep.value}` in graphs")
        elif ep.name in found and found[ep.name].target != ep.value:
            problems[ep.name] = (f"node type '{ep.name}' is declared twice: by "
                                 f"{found[ep.name].where} and by {plugin.where}; write "
                                 f"`type: module:Class` to choose one")
        elif ep.name not in problems:
            found[ep.name] = plugin
    for name in problems:
        found.pop(name, None)
    return found, problems


@functools.lru_cache(maxsize=None)
def warn_about(type_name: str) -> None:
    """Print the problem with plugins named `type_name` to stderr, once per process."""
    problem = plugins()[1].get(type_name)
    if problem:
        print(f"warning: {problem}", file=sys.stderr)


def resolve(type_name: str) -> type[Node]:
    """The node class behind a YAML `type:`; imports its module on first use."""
    if type_name in BUILTIN:
        warn_about(type_name)
        return _load_target(type_name, BUILTIN[type_name])
    if ":" in type_name:
        return _load_target(type_name, type_name)
    found = plugins()[0]
    plugin = found.get(type_name)
    if plugin is None:
        problem = plugins()[1].get(type_name)
        if problem:
            raise UnknownNodeType(problem)
        listed = f"; plugin types: {', '.join(sorted(found))}" if found else ""
        raise UnknownNodeType(f"unknown node type {brief(type_name)} (built-in types: "
                              f"{', '.join(sorted(BUILTIN))}{listed}; or use "
                              f"package.module:Class){did_you_mean(type_name, [*BUILTIN, *found])}")
    try:
        cls = plugin.entry_point.load()
    except Exception as exc:  # whatever the package's import raises, name the package
        raise UnknownNodeType(f"node type '{type_name}' of {plugin.where} cannot be loaded: "
                              f"{type(exc).__name__}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise UnknownNodeType(f"node type '{type_name}' of {plugin.where} is not a Node "
                              f"class (got {cls!r})")
    return cls


def _load_target(type_name: str, target: str) -> type[Node]:
    module_name, _, class_name = target.partition(":")
    if len(target) > 200:
        raise UnknownNodeType(f"node type {brief(type_name)}: not a module:Class name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownNodeType(f"node type '{type_name}': cannot import {module_name}: {exc}") \
            from None
    except Exception as exc:  # a module that fails while importing, e.g. a SyntaxError
        raise UnknownNodeType(f"node type '{type_name}': importing {module_name} failed: "
                              f"{type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise UnknownNodeType(f"node type '{type_name}': {target} is not a Node class")
    return cls
