"""Aria-like training crops from photographs (dance.augment): what they look like, that they
are reproducible, and that bad settings are one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dance.augment import AriaLikePhotos, AugmentError
from dance.data import DataError, build_datasets

from .conftest import SHARED

MASK = SHARED / "data" / "aria" / "rgb_vignetting_half_reso_mask.png"


def _photo(h: int = 300, w: int = 420, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx % 64 * 4, yy % 48 * 5, (xx + yy) % 80 * 3], -1)
    return (base + rng.integers(0, 30, base.shape)).clip(0, 255).astype(np.uint8)


@pytest.fixture
def mask_path(tmp_path):
    """The real Aria mask when the shared data is here, else a disc of the same kind (black
    beyond a circle, as the fisheye's image circle leaves the corners)."""
    if MASK.exists():
        return MASK
    yy, xx = np.mgrid[0:256, 0:256]
    disc = (((yy - 128) ** 2 + (xx - 128) ** 2) < 100 ** 2) * 255
    path = tmp_path / "mask.png"
    Image.fromarray(np.repeat(disc[..., None], 3, -1).astype(np.uint8)).save(path)
    return path


def test_crops_are_soft_uint8_and_reproducible(mask_path):
    data = AriaLikePhotos([_photo(), _photo(seed=1)], 128, {"mask": str(mask_path), "repeats": 3})
    assert len(data) == 6
    torch.manual_seed(0)
    first = [data[i] for i in range(6)]
    torch.manual_seed(0)
    again = [data[i] for i in range(6)]
    assert all(a.dtype == torch.uint8 and a.shape == (3, 128, 128) for a in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again))      # torch's RNG decides all
    assert not torch.equal(first[0], first[2])                       # same photo, other crop
    # soft: the detail lives at 1/reduction of the grid, so a 4x box downscale and bicubic
    # upscale changes little, where the photo itself (sharp texture) loses much more
    def loss(x: np.ndarray) -> float:
        small = Image.fromarray(x).reduce(4).resize(x.shape[1::-1], Image.BICUBIC)
        return float(np.mean((np.asarray(small, float) - x) ** 2))
    crop = first[0].permute(1, 2, 0).numpy()
    assert loss(crop) < 0.5 * loss(_photo()[:128, :128])


def test_vignetting_darkens_and_blacks_out_like_the_fisheye(mask_path):
    torch.manual_seed(1)
    bright = np.full((400, 400, 3), 200, np.uint8)
    plain = AriaLikePhotos([bright], 128, {"vignette": 0, "exposure": [1, 1], "gamma": [1, 1]})
    masked = AriaLikePhotos([bright], 128, {"vignette": 1, "mask": str(mask_path),
                                             "exposure": [1, 1], "gamma": [1, 1]})
    assert abs(float(plain[0].float().mean()) - 200) < 3
    means = [float(masked[0].float().mean()) for _ in range(30)]
    assert min(means) < 150 and max(means) <= 202                    # never brighter


def test_bad_settings_are_one_line_errors(tmp_path, mask_path):
    for settings, key in (({"downscale": [4, 2]}, "downscale"), ({"jpeg_quality": [50, 120]}, "jpeg_quality"),
                          ({"reduction": 3}, "reduction"), ({"bogus": 1}, "unknown"),
                          ({"vignette": 0.5}, "mask"),
                          ({"vignette": 0.5, "mask": str(tmp_path / "no.png")}, "no.png")):
        with pytest.raises(AugmentError, match=key):
            AriaLikePhotos([_photo()], 128, settings)
    Image.fromarray(_photo()).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="aria_like"):
        build_datasets({"sources": [str(tmp_path)], "aria_like": {"vignette": 0}}, "image")  # no crop
    with pytest.raises(DataError, match="downscale"):
        build_datasets({"sources": [str(tmp_path)], "crop": 64, "val_fraction": 0,
                        "aria_like": {"vignette": 0, "downscale": "x"}}, "image")


def test_training_photos_become_aria_like_and_validation_stays_real(tmp_path):
    for i in range(3):
        Image.fromarray(_photo(seed=i)).save(tmp_path / f"p{i}.png")
    splits = build_datasets({"sources": [str(tmp_path)], "crop": 64, "val_fraction": 0.34,
                             "aria_like": {"vignette": 0, "repeats": 2}}, "image")
    assert len(splits.train) == 4 and len(splits.val) == 1           # 2 photos x 2; 1 held out
    assert isinstance(splits.train.datasets[0], AriaLikePhotos)
    assert not isinstance(splits.val.datasets[0], AriaLikePhotos)
