"""DANCE: data-adaptive neural compression engine (N-D rate-distortion autoencoders).

Layered like CompressAI: `layers` (N-D blocks), `entropy` (bottleneck + rANS coding), `models`
(registry, DanceAutoencoder), `heuristics` (sizing rules), `zoo` (configs, checkpoints),
`preprocess`, `codec` (arrays <-> containers), `bitstream` (container format).
"""
from __future__ import annotations

from .models import build_model, register_model
from .zoo import load_checkpoint, load_codec, load_config, save_checkpoint

__all__ = ["build_model", "register_model", "load_checkpoint", "load_codec", "load_config",
           "save_checkpoint"]
