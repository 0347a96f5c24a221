"""Error-message helpers: values shown in a bounded size, and "did you mean" suggestions.

A hostile graph file can hold a value whose full repr is gigabytes (a YAML alias bomb); every
message shows values through `brief`, so an error line stays one short line whatever it names.
"""
from __future__ import annotations

import difflib
import reprlib
from typing import Any, Iterable

LIMIT = 80


class _Brief(reprlib.Repr):
    """reprlib that also shortens list and dict subclasses (the YAML loader's LineList/LineDict),
    which plain reprlib would hand to their own unbounded repr."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxdict, self.maxstring = 3, 4, 4, LIMIT // 2
        self.maxother = LIMIT // 2

    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, list) and type(x) is not list:
            return self.repr_list(x, level)
        if isinstance(x, dict) and type(x) is not dict:
            return self.repr_dict(x, level)
        return super().repr1(x, level)


_BRIEF = _Brief()


def brief(value: Any, limit: int = LIMIT) -> str:
    """repr(value), shortened to about `limit` characters, on one line."""
    text = _BRIEF.repr(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def type_name(value: Any) -> str:
    """The YAML-level type of a value: 'list' and 'dict' for the loader's subclasses too."""
    for base in (list, dict):
        if isinstance(value, base):
            return base.__name__
    return type(value).__name__


def clip(text: Any, limit: int = 200) -> str:
    """`text` on one line, cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def did_you_mean(word: Any, options: Iterable[str]) -> str:
    """'; did you mean 'x'?' when `word` is close to one of `options`, else ''."""
    if not isinstance(word, str) or len(word) > 200:
        return ""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
