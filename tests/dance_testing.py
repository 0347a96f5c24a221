"""Small random-init DANCE codecs for tests: the bitstream mechanics need no trained weights."""
from __future__ import annotations

from pathlib import Path

import torch

from dance.models import build_model
from dance.zoo import save_checkpoint

TINY_IMAGE = {
    "name": "tiny-image", "kind": "image", "family": "dance", "dims": 2, "in_channels": 3,
    "latent_channels": 16,
    "encoder": {"pool": 2, "widths": [8, 8, 16], "kernels": [5, 5, 5, 5], "strides": [2, 2, 2, 2]},
    "decoder": {"widths": [16, 8, 8, 8, 8], "attention": True, "upsample": "subpel"},
    "preprocess": {"type": "image"},
}
TINY_AUDIO = {
    "name": "tiny-audio", "kind": "audio", "family": "dance", "dims": 1, "in_channels": 7,
    "latent_channels": 16,
    "encoder": {"pool": 1, "widths": [16, 16, 16], "kernels": [3, 5, 5, 7],
                "strides": [2, 3, 4, 5]},
    "decoder": {"widths": [16, 16, 8, 8], "attention": True, "upsample": "subpel"},
    "preprocess": {"type": "audio", "sample_rate": 48000, "dc_cutoff_hz": 10.0,
                   "scale": 2.0 ** 31, "mu": 65535.0},
}


def tiny_checkpoint(path: Path, config: dict, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(path, build_model(config), config)
    return path
