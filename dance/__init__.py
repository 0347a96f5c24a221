"""DANCE: data-adaptive neural compression engine (N-D rate-distortion autoencoders).

Layered like CompressAI: `layers` (N-D blocks), `entropy` (entropy models, CDF tables, ANS
coding), `models` (the `CodecModel` contract and the family registry), `priors` (entropy models
with levels), `families` (dance, hyperprior), `heuristics` (sizing rules), `zoo` (configs,
checkpoints), `preprocess`, `targets` (level search), `codec` (arrays <-> containers),
`bitstream` (container format), `export`.
"""
from __future__ import annotations

import importlib
import warnings

# Imported on first use, so that `dance run` of a graph without codecs never loads torch.
_LAZY = {"build_model": "models", "register_model": "models", "load_checkpoint": "zoo",
         "load_codec": "codec", "load_config": "zoo", "save_checkpoint": "zoo"}
__all__ = list(_LAZY)


def quiet_compressai() -> None:
    """Import compressai once with its import-time deprecation notices (not ours) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import compressai  # noqa: F401


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'dance' has no attribute '{name}'")
