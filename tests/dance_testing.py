"""Small random-init DANCE codecs for tests: the bitstream mechanics need no trained weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
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


def sample_image(h: int = 75, w: int = 101, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient plus noise: an H×W×3 uint8 test frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = np.stack([xx * 2, yy * 3, xx + yy], axis=-1) % 256
    return (smooth + rng.integers(0, 20, (h, w, 3))).clip(0, 255).astype(np.uint8)


def sample_audio(frames: int = 3000, seed: int = 0) -> np.ndarray:
    """7-channel int32 counts like the Aria mics: a tone, large per-channel DC offsets, drift."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None]
    offsets = np.array([4e4, 2e6, -3e6, 4.6e7, 1e5, -8e5, 3e6])
    signal = 1e6 * np.sin(2 * np.pi * 440 * t / 48000 + np.arange(7)) + offsets + 20.0 * t
    return (signal + rng.normal(0, 1e4, (frames, 7))).astype(np.int32)
