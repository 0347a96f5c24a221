"""Encoding to a target: a level, a compression ratio, a byte budget or a bit rate.

Sizes grow with the level (steps shrink), so the level is found by bisection over the model's
levels on the real container size — entropy coding only: the network ran once, and a family
may reuse level-independent work (the hyperprior's z string) across the tries. A family that
can estimate its string sizes without coding (`CodecModel.estimate_bytes`) lets the search run
on estimates, so a block is entropy-coded once (twice where a byte budget needs checking).
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
                 seconds: float | None = None, carry: float = 0.0,
                 hint: int | None = None,
                 estimate: Callable[[int], float] | None = None) -> int:
    """The level meeting `target`: `size(level)` is the container size at that level. `carry`:
    bytes a ratio/kbps target may spend beyond its share (a stream's reservoir); `hint`: where
    to start looking (the previous block's level: then about four sizes are computed for a
    stream's level changes, not log2(levels) + 1).

    `estimate(level)`: a cheap guess of `size(level)` (the family's `estimate_bytes`: no
    entropy coding). With it the search runs on estimates and `size` is called only where a
    byte budget needs the real size: a bytes target is verified (never exceeded: the level
    steps down until the real container fits, and up while the next level may fit too, by
    `ESTIMATE_SLACK`); a ratio/kbps target takes the nearest level by estimated size, coded
    once (a stream's reservoir absorbs the few bytes an estimate is off)."""
    top = levels - 1
    if target.empty:
        return top
    if target.level is not None:
        if target.level > top:
            raise TargetError(f"level {target.level} is out of range: this codec has levels "
                              f"0..{top}")
        return target.level
    budget = target.bytes if target.bytes is not None \
        else target.wanted_bytes(raw_bytes, seconds) + carry
    guess = size if estimate is None else _memo(estimate)
    best = _highest_within(budget, levels, guess, hint)
    if target.bytes is not None:
        if estimate is not None:
            best = _verify_budget(budget, top, size, guess, best)
        if best is None:
            raise TargetError(f"cannot fit {target.bytes} bytes: the smallest container is "
                              f"{size(0)} bytes (level 0)")
        return best
    if best is None:
        return 0
    if best == top:
        return top
    # ratio / kbps: the nearer of the two levels around the wanted size
    return best if budget - guess(best) <= guess(best + 1) - budget else best + 1


# how far a size estimate may exceed the real size, in bytes (absolute, relative to the
# estimate): a bytes target codes the next level up for real while its estimate is within
# this of the budget (the dance family's estimates are rarely a 4-byte word off)
ESTIMATE_SLACK = (8.0, 0.005)


def _memo(function: Callable[[int], float]) -> Callable[[int], float]:
    cache: dict[int, float] = {}

    def cached(level: int) -> float:
        if level not in cache:
            cache[level] = function(level)
        return cache[level]
    return cached


def _verify_budget(budget: float, top: int, size: Callable[[int], int],
                   estimate: Callable[[int], float], best: int | None) -> int | None:
    """The highest level whose real size fits `budget`, starting from the estimates' `best`
    (None: even level 0 looked too big): down while the real size is over, then up while the
    next level's estimate leaves room for it to fit and its real size does."""
    level = 0 if best is None else best
    while size(level) > budget:
        if level == 0:
            return None
        level -= 1
    while level < top:
        guess = estimate(level + 1)
        if guess - ESTIMATE_SLACK[0] - ESTIMATE_SLACK[1] * guess > budget \
                or size(level + 1) > budget:
            break
        level += 1
    return level


def bisect_highest(budget: float, low: int, high: int, size: Callable[[int], float]) -> int:
    """Highest level in [low, high] whose size is <= budget, given size(low) <= budget."""
    while low < high:
        mid = (low + high + 1) // 2
        if size(mid) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def _highest_within(budget: float, levels: int, size: Callable[[int], float],
                    hint: int | None = None) -> int | None:
    """Highest level whose size is <= budget (sizes grow with the level), or None. From `hint`
    (the previous block's level): secant steps on the sizes seen so far, inside the bracket
    they leave — about four sizes for sizes that grow smoothly with the level, where galloping
    out from the hint and bisecting took five or six; without one, bisection."""
    if hint is None:
        return None if size(0) > budget else bisect_highest(budget, 0, levels - 1, size)
    below, above = -1, levels       # size(below) <= budget < size(above): answer in [below, above)
    known: dict[int, float] = {}
    level = min(max(int(hint), 0), levels - 1)
    while True:
        known[level] = known_size = size(level)
        if known_size <= budget:
            below = level
        else:
            above = level
        if above - below == 1:
            return below if below >= 0 else None
        level = _next_probe(budget, below, above, known)


def _next_probe(budget: float, below: int, above: int, known: dict[int, float]) -> int:
    """A level strictly between `below` and `above` to size next: where the line through the
    two known sizes nearest the budget (the bracket's ends, or the last two on its one known
    side) keeps within it; galloping (doubling the span seen) where that line is flat, and
    bisection once six sizes have not closed a two-sided bracket."""
    two_sided = below >= 0 and above in known
    if two_sided:
        a, b = below, above
    elif below >= 0:                 # every known size fits: the two highest
        lower = [k for k in known if k < below]
        a, b = (max(lower), below) if lower else (below, below)
    else:                            # none fits: the two lowest
        higher = [k for k in known if k > above]
        a, b = (above, min(higher)) if higher else (above, above)
    slope = (known[b] - known[a]) / (b - a) if b > a else 0.0
    if two_sided and (slope <= 0 or len(known) >= 6):
        level = (below + above) // 2
    elif slope > 0:
        level = int(a + (budget - known[a]) // slope)
    elif below >= 0:
        level = below + max(1, 2 * (b - a))
    else:
        level = above - max(1, 2 * (b - a))
    return min(max(level, below + 1), above - 1)
