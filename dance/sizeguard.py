"""Build a model from an untrusted config under an allocation budget.

A checkpoint's config is data: `widths: [1000000, ...]` would make `build_model` ask for
terabytes before any check of ours runs. `allocation_limit` counts the elements every tensor
constructor asks for (torch.empty, zeros, ones, rand, ...) *before* it allocates them, across
every model family, and raises ModelTooLarge once the total passes the limit.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.overrides import TorchFunctionMode

# 64 Mi elements (256 MB of float32): the reference codecs hold about 0.3 Mi
MAX_MODEL_ELEMENTS = 1 << 26
# a bound on one activation of a probe forward pass, as positions × widest layer (an over-
# estimate: aria-image's 262,144 × 512 peaks far lower, at reduced resolution)
MAX_PROBE_ELEMENTS = 1 << 28
_SIZED = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn,
          torch.randint, torch.empty_strided, torch.eye, torch.randperm, torch.arange}


class ModelTooLarge(ValueError):
    """A config whose model would hold more elements than allowed."""


def requested_elements(func, args: tuple, kwargs: dict) -> int:
    """The elements a sized constructor's arguments ask for (a shape, or leading ints)."""
    if func is torch.eye:       # eye(n) is n × n
        ints = [a for a in args if isinstance(a, int)][:2]
        size = ints * 2 if len(ints) == 1 else ints
        return math.prod(abs(s) for s in size)
    size = kwargs.get("size")
    if size is None:
        size = next((a for a in args if isinstance(a, Sequence)), None)
    if size is None:
        size = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
    try:
        return math.prod(abs(int(s)) for s in size)
    except (TypeError, ValueError):
        return 0


class allocation_limit(TorchFunctionMode):
    """`with allocation_limit(n): build_model(config)`: ModelTooLarge instead of allocating
    more than `n` elements in all."""

    def __init__(self, limit: int = MAX_MODEL_ELEMENTS, what: str = "the model"):
        super().__init__()
        self.limit, self.what, self.total = int(limit), what, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SIZED:
            self.total += requested_elements(func, args, kwargs)
            if self.total > self.limit:
                raise ModelTooLarge(f"{self.what} would hold over {self.limit:,} elements "
                                    f"(a tensor of {requested_elements(func, args, kwargs):,} was "
                                    "asked for): refusing to build it")
        return func(*args, **kwargs)
