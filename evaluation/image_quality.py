"""Full-frame image quality: PSNR and MS-SSIM of a decoded H×W×3 uint8 frame against the original.

MS-SSIM (pytorch_msssim, 5 scales, data range 255) needs the smaller side to exceed 16·(w−1) for a
Gaussian window of w taps, because it halves the frame four times. The standard window is 11 taps
(sides > 160 px). Smaller frames use the largest odd window that fits (σ stays 1.5, so the
weights barely change): 9 taps above 128 px, 7 above 96, 5 above 64, 3 above 32. Frames with a
side of 32 px or less have no MS-SSIM: NaN.
"""
from __future__ import annotations

import math

import numpy as np

STANDARD_WINDOW = 11


def psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit data (peak 255); inf for identical frames."""
    _check(original, decoded)
    diff = original.astype(np.float32) - decoded.astype(np.float32)
    mse = float(np.mean(np.square(diff), dtype=np.float64))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def ms_ssim_window(height: int, width: int) -> int | None:
    """Gaussian window (taps) MS-SSIM uses for a frame of this size; None if it is too small."""
    fits = (min(height, width) - 1) // 16 + 1  # largest w with side > 16·(w−1)
    window = min(STANDARD_WINDOW, fits if fits % 2 else fits - 1)
    return window if window >= 3 else None


def ms_ssim(original: np.ndarray, decoded: np.ndarray, device: str = "cpu") -> float:
    """Multi-scale SSIM in [0, 1] over the whole frame (RGB channels averaged); NaN for frames
    too small to be halved four times."""
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    _check(original, decoded)
    window = ms_ssim_window(*original.shape[:2])
    if window is None:
        return math.nan

    def tensor(frame: np.ndarray) -> torch.Tensor:
        # H×W×C memory is channels_last already; oneDNN convolves it 2-6× faster than NCHW here
        pixels = torch.from_numpy(np.require(frame, requirements="CW")).to(device)
        return pixels.permute(2, 0, 1)[None].float().contiguous(memory_format=torch.channels_last)

    with torch.inference_mode():
        value = _ms_ssim(tensor(original), tensor(decoded), data_range=255,
                         win_size=window)
    return float(value)


def _check(original: np.ndarray, decoded: np.ndarray) -> None:
    if original.shape != decoded.shape:
        raise ValueError(f"frames differ in shape: {original.shape} vs {decoded.shape}")
    if original.ndim != 3 or original.shape[2] != 3:
        raise ValueError(f"expected H×W×3 frames, got {original.shape}")
