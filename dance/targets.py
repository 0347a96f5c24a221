"""Encoding to a target: a level, a compression ratio, a byte budget or a bit rate.

Sizes grow with the level (steps shrink), so the level is found by bisection over the model's
levels on the real container size — entropy coding only: the network ran once, and a family
may reuse level-independent work (the hyperprior's z string) across the tries.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


class TargetError(ValueError):
    """A target no level can meet (a byte budget below the smallest container)."""


@dataclass(frozen=True)
class Target:
    """Exactly one of: level (operating point), ratio (raw bytes / container bytes), bytes
    (never exceeded), kbps (kilobits per second of signal: audio)."""

    level: int | None = None
    ratio: float | None = None
    bytes: int | None = None
    kbps: float | None = None

    def __post_init__(self):
        given = [k for k in ("level", "ratio", "bytes", "kbps") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one target, not {' and '.join(given)}")
        for key in ("ratio", "bytes", "kbps"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ValueError(f"target {key} must be positive, got {value}")
        if self.level is not None and (not isinstance(self.level, int) or self.level < 0):
            raise ValueError(f"target level must be a non-negative integer, got {self.level!r}")

    @classmethod
    def parse(cls, spec: dict) -> "Target":
        """From a mapping such as {"ratio": 800} (node params, control messages); None and
        absent keys are ignored."""
        unknown = set(spec) - {"level", "ratio", "bytes", "kbps"}
        if unknown:
            raise ValueError(f"unknown target keys {sorted(unknown)} (level, ratio, bytes, kbps)")
        values = {k: v for k, v in spec.items() if v is not None and v != ""}
        try:
            return cls(level=None if values.get("level") is None else int(values["level"]),
                       ratio=_num(values.get("ratio")), bytes=_int(values.get("bytes")),
                       kbps=_num(values.get("kbps")))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad target {spec}: {exc}") from None

    @property
    def empty(self) -> bool:
        return all(getattr(self, k) is None for k in ("level", "ratio", "bytes", "kbps"))

    def wanted_bytes(self, raw_bytes: int, seconds: float | None) -> float | None:
        """Bytes aimed at, for ratio and kbps targets."""
        if self.ratio is not None:
            return raw_bytes / self.ratio
        if self.kbps is not None:
            if not seconds:
                raise TargetError("a kbps target needs a signal with a duration (audio)")
            return self.kbps * 1000.0 / 8.0 * seconds
        return None


def _num(value) -> float | None:
    return None if value is None else float(value)


def _int(value) -> int | None:
    return None if value is None else int(value)


def choose_level(target: Target, levels: int, size: Callable[[int], int], raw_bytes: int,
                 seconds: float | None = None) -> int:
    """The level meeting `target`: `size(level)` is the container size at that level."""
    top = levels - 1
    if target.empty:
        return top
    if target.level is not None:
        if target.level > top:
            raise TargetError(f"level {target.level} is out of range: this codec has levels "
                              f"0..{top}")
        return target.level
    budget = target.bytes if target.bytes is not None else target.wanted_bytes(raw_bytes, seconds)
    best = _highest_within(budget, levels, size)
    if target.bytes is not None:
        if best is None:
            raise TargetError(f"cannot fit {target.bytes} bytes: the smallest container is "
                              f"{size(0)} bytes (level 0)")
        return best
    if best is None:
        return 0
    if best == top:
        return top
    # ratio / kbps: the nearer of the two levels around the wanted size
    return best if budget - size(best) <= size(best + 1) - budget else best + 1


def _highest_within(budget: float, levels: int, size: Callable[[int], int]) -> int | None:
    """Highest level whose size is <= budget (sizes grow with the level), or None."""
    if size(0) > budget:
        return None
    low, high = 0, levels - 1
    while low < high:
        mid = (low + high + 1) // 2
        if size(mid) <= budget:
            low = mid
        else:
            high = mid - 1
    return low
