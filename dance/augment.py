"""Photographs made to look like Aria RGB frames, for training image codecs.

None of the shared training photos is Aria data. An Aria RGB frame (1408², fisheye) is soft:
it keeps ~45 dB PSNR through a 4× downscale and back, so its detail lives at about a quarter of
its pixel grid, and it is darkened toward the edge of the image circle and black outside it,
then stored as JPEG. `AriaLikePhotos` builds training crops with those properties:

1. a random square region of a photo is resized to the *reduced* crop (crop / reduction) by a
   random factor in `downscale` (the reduced domain the codec actually codes, at the density of
   a 4×-reduced Aria frame), flipped and rotated by a multiple of 90°;
2. upscaled back to the crop size (bicubic): the soft full-resolution signal;
3. exposure jitter (gain and gamma), then, with probability `vignette`, multiplied by the Aria
   vignetting mask at a random place in a virtual 1408² frame (dark rim, black corners);
4. a JPEG round trip at a random quality in `jpeg_quality` (4:2:0, as the recordings).

Randomness comes from torch's global generator (as `dance.data`'s crops), so DataLoader workers
are seeded and a resumed run draws the same crops. Photos are decoded once, in the main process,
before workers fork.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

DEFAULTS = {"reduction": 4, "downscale": [2.0, 4.0], "jpeg_quality": [75, 92],
            "exposure": [0.6, 1.5], "gamma": [0.8, 1.25], "vignette": 0.8, "mask": None,
            "repeats": 1}


class AugmentError(ValueError):
    """A bad `data.aria_like` setting; the message names the key."""


def _pair(settings: dict, key: str) -> tuple[float, float]:
    value = settings[key]
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise AugmentError(f"data.aria_like.{key}: expected [low, high], got {value!r}") from None
    if not 0 < low <= high:
        raise AugmentError(f"data.aria_like.{key}: needs 0 < low <= high, got {value!r}")
    return low, high


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _log_uniform(low: float, high: float) -> float:
    return math.exp(_uniform(math.log(low), math.log(high)))


class AriaLikePhotos(Dataset):
    """Aria-like uint8 (3, crop, crop) training crops from photographs (module docstring)."""

    def __init__(self, photos: Sequence[np.ndarray], crop: int, settings: dict | None = None,
                 transform=None):
        from PIL import Image

        unknown = set(settings or {}) - set(DEFAULTS)
        if unknown:
            raise AugmentError(f"data.aria_like: unknown keys {sorted(unknown)} (known: {sorted(DEFAULTS)})")
        s = {**DEFAULTS, **(settings or {})}
        self.reduction = int(s["reduction"])
        if self.reduction < 1 or crop % self.reduction:
            raise AugmentError(f"data.aria_like.reduction: {s['reduction']!r} must be a positive "
                               f"divisor of the crop ({crop})")
        self.downscale, self.exposure, self.gamma = (_pair(s, k) for k in ("downscale", "exposure", "gamma"))
        self.quality = tuple(int(q) for q in _pair(s, "jpeg_quality"))
        if self.quality[1] > 100:
            raise AugmentError(f"data.aria_like.jpeg_quality: at most 100, got {s['jpeg_quality']!r}")
        self.vignette = float(s["vignette"])
        self.repeats = int(s["repeats"])
        if not 0 <= self.vignette <= 1 or self.repeats < 1:
            raise AugmentError("data.aria_like: vignette must be in [0, 1] and repeats >= 1")
        self.mask = None
        if self.vignette > 0:
            if not s["mask"]:
                raise AugmentError("data.aria_like.mask: the vignetting mask PNG is needed when "
                                   "vignette > 0 (../shared/data/aria/rgb_vignetting_half_reso_mask.png)")
            path = Path(s["mask"])
            try:
                with Image.open(path) as im:
                    self.mask = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            except OSError as e:
                raise AugmentError(f"{path}: cannot read the vignetting mask ({e})") from None
        self.crop, self.transform = int(crop), transform
        self.photos = list(photos)
        if not self.photos:
            raise AugmentError("data.aria_like: no photographs to augment")

    def __len__(self) -> int:
        return len(self.photos) * self.repeats

    def __getitem__(self, i: int) -> torch.Tensor:
        photo = self.make(self.photos[i % len(self.photos)])
        x = torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1)))
        return self.transform(x) if self.transform is not None else x

    def make(self, photo: np.ndarray) -> np.ndarray:
        """One Aria-like H×W×3 uint8 crop of `photo`."""
        from PIL import Image

        small = self.crop // self.reduction
        h, w = photo.shape[:2]
        side = max(1, min(h, w, round(small * _log_uniform(*self.downscale))))
        y0 = int(torch.randint(0, h - side + 1, ()))
        x0 = int(torch.randint(0, w - side + 1, ()))
        region = photo[y0:y0 + side, x0:x0 + side]
        region = np.rot90(region, int(torch.randint(0, 4, ())))
        if torch.rand(()) < 0.5:
            region = region[:, ::-1]
        im = Image.fromarray(np.ascontiguousarray(region)).resize((small, small), Image.LANCZOS)
        im = im.resize((self.crop, self.crop), Image.BICUBIC)
        x = np.asarray(im, dtype=np.float32) / 255.0
        x = np.clip(_log_uniform(*self.exposure) * x ** _log_uniform(*self.gamma), 0.0, 1.0)
        if self.mask is not None and float(torch.rand(())) < self.vignette:
            x *= self._mask_window()
        out = Image.fromarray(np.round(x * 255.0).astype(np.uint8))
        buffer = io.BytesIO()
        out.save(buffer, format="JPEG", quality=int(torch.randint(self.quality[0], self.quality[1] + 1, ())),
                 subsampling=2)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return np.asarray(decoded.convert("RGB"))

    def _mask_window(self) -> np.ndarray:
        """The vignetting mask under the crop, placed at random in a virtual Aria frame (redrawn
        a few times if the window falls almost entirely outside the image circle)."""
        mask = self.mask
        if mask.shape[0] < self.crop or mask.shape[1] < self.crop:
            from PIL import Image

            scale = self.crop / min(mask.shape[:2])
            size = (math.ceil(mask.shape[1] * scale), math.ceil(mask.shape[0] * scale))
            mask = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).resize(size, Image.BILINEAR),
                              dtype=np.float32) / 255.0
        for _ in range(4):
            y0 = int(torch.randint(0, mask.shape[0] - self.crop + 1, ()))
            x0 = int(torch.randint(0, mask.shape[1] - self.crop + 1, ()))
            window = mask[y0:y0 + self.crop, x0:x0 + self.crop]
            if window.mean() > 0.1:
                break
        return window
