"""Size a DANCE autoencoder from the signal and the operating point, by explicit rules.

The paper chose widths, depths and latent sizes ad hoc per dataset; these rules are written down,
tested, and reproduce both reference configs (`aria-image`: 2-D, 3 channels, 783:1;
`aria-audio`: 1-D, 7 channels, 601:1). Rules, in order:

1. Latent channels M = 128 (Ballé/Cheng low-rate width); 192 when λ ≥ HIGH_RATE_LAMBDA.
2. Samples per latent position D from the target ratio, assuming the entropy model spends
   BITS_PER_LATENT bits per latent element at these rates:
       D = ratio · M · BITS_PER_LATENT / (channels · sample_bits)
   (sample_bits: 8 for images/volumes, 24 for audio unless given).
3. Input reduction r (the front-end AvgPool), 2-D/3-D: with `input_reduction="auto"` the
   largest power of two r <= MAX_INPUT_REDUCTION whose remaining ratio, ratio / r^dims, stays
   >= MIN_CODED_RATIO — at high ratios most of the budget is better spent on a reduced signal
   (gen1 Aria frames keep ~44.7 dB PSNR through a 4× downscale and back, far above what any
   codec keeps at 800:1), and the decoder's last stage learns the upscale. 1-D: r = 1 (the
   array's inter-microphone delays live at full rate). An integer fixes r; 1 gives the paper's
   layout (pool only for halvings beyond the conv stages).
4. Depth and strides from D, at most MAX_CONV_STAGES strided convs:
   * 2-D/3-D: per-axis factor D^(1/dims) snapped to a power of two 2^n; the input reduction
     takes log2(r) of the halvings, min(rest, 4) are stride-2 convs; any remaining halvings
     widen the AvgPool in front (cheap decimation, as the authors do for 1408² frames).
   * 1-D: growing strides 2, 3, 4, 5 (as in SoundStream/EnCodec); the number of stages whose
     stride product is nearest to D in log scale; a factor still missing becomes an AvgPool.
5. Kernels: 5 for 2-D/3-D (Ballé 2017); 1-D: the smallest odd size > stride (3, 5, 5, 7).
   `kernel=` overrides all.
6. Widths: the widest candidate whose conv MACs per input sample position (pixel, audio frame,
   voxel) fit the MAC budget (default 512 for 2-D/3-D — the paper's image encoder — and 2^15
   for 1-D, where positions come ~40× slower: 48 kHz vs 2 MP/s). Candidates, widest first:
   all hidden widths = M, then geometric ramps w_i = min(M, w0·g^i) with w0 = 8·ceil(C/8) and
   g = 8, 7, …, 2. If even g = 2 does not fit, the budget is infeasible (ValueError).
7. Decoder (Cheng 2020 family, heavier than the encoder by design): one width per upsampling
   stage, halving from M toward full resolution, at least 16: w_j = max(16, M/2^j); attention
   blocks on. (Halving keeps the full-resolution stages cheap enough to train on a CPU.)

The walloc family (seed 003) is sized by `size_walloc`: its lossless stage spends about
WALLOC_LATENT_BITS bits per 8-bit latent element, so the element reduction is
R = ratio · WALLOC_LATENT_BITS / sample_bits; the wavelet levels J are the fewest whose
2^(dims·J) subbands per channel leave at least WALLOC_MIN_KEPT of them per input channel after
the reduction (a projection that keeps a few directions of many, not all of few), and the
latent keeps channels · 2^(dims·J) / R of them. 2-D, 3 channels, 150:1: J = 4, 12 channels —
the slides' 64× reduction at 153:1.
"""
from __future__ import annotations

import math

HIGH_RATE_LAMBDA = 0.05
BITS_PER_LATENT = 0.25
MAX_CONV_STAGES = 4
REFERENCE_RATIO = {1: 601.0, 2: 783.0, 3: 783.0}
DEFAULT_MAC_BUDGET = {1: 2.0 ** 15, 2: 512.0, 3: 512.0}
DEFAULT_SAMPLE_BITS = {1: 24, 2: 8, 3: 8}
AUDIO_STRIDES = (2, 3, 4, 5)
MAX_INPUT_REDUCTION = 4
MIN_CODED_RATIO = 48.0
FAMILIES = ("dance", "hyperprior", "walloc")
WALLOC_LATENT_BITS = 3.4   # walloc-image on Kodak at its top level: 8.6 KB for 18,432 elements = 3.7
WALLOC_MIN_KEPT = 4


def size_model(dims: int, channels: int, *, target_ratio: float | None = None,
               lmbda: float | None = None, mac_budget: float | None = None,
               kernel: int | None = None, sample_bits: int | None = None,
               input_reduction: int | str = "auto", family: str = "dance",
               levels: int = 1) -> dict:
    """A model config of `family` for `dims`-D signals with `channels` channels; `levels` > 1
    adds a variable-rate ladder (quantisation steps 4 .. 0.5 around the sized point)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if dims not in (1, 2, 3):
        raise ValueError(f"dims must be 1, 2 or 3, got {dims}")
    if channels < 1:
        raise ValueError(f"channels must be positive, got {channels}")
    ratio = float(target_ratio or REFERENCE_RATIO[dims])
    bits = sample_bits or DEFAULT_SAMPLE_BITS[dims]
    if family == "walloc":
        return size_walloc(dims, channels, ratio, bits, levels)
    budget = float(mac_budget or DEFAULT_MAC_BUDGET[dims])
    latent = 192 if lmbda is not None and lmbda >= HIGH_RATE_LAMBDA else 128

    samples_per_latent = ratio * latent * BITS_PER_LATENT / (channels * bits)
    reduction = _input_reduction(dims, ratio, input_reduction)
    pool, strides = _strides(dims, samples_per_latent, reduction)
    kernels = [kernel or _kernel(dims, s) for s in strides]
    widths = _widths(dims, channels, latent, pool, strides, kernels, budget)
    config = {
        "family": family,
        "dims": dims,
        "in_channels": channels,
        "latent_channels": latent,
        "encoder": {"pool": pool, "widths": widths, "kernels": kernels, "strides": strides},
        "decoder": {"widths": _decoder_widths(latent, len(strides) + (pool > 1)),
                    "attention": True, "upsample": "subpel"},
    }
    if family == "hyperprior":
        config["hyper"] = {"channels": latent // 2}
    if levels > 1:
        config["rate"] = {"levels": int(levels), "step_min": 0.5, "step_max": 4.0}
    if lmbda is not None:
        config["lmbda"] = float(lmbda)
    return config


def size_walloc(dims: int, channels: int, ratio: float, sample_bits: int, levels: int = 1) -> dict:
    """A walloc config (module docstring): wavelet levels and latent channels from the ratio."""
    reduction = ratio * WALLOC_LATENT_BITS / sample_bits
    if reduction <= 1:
        raise ValueError(f"a {ratio:g}:1 walloc needs no reduction of the {sample_bits}-bit signal")
    wavelet_levels = 1
    while 2 ** (dims * wavelet_levels) < WALLOC_MIN_KEPT * reduction:
        wavelet_levels += 1
    latent = max(1, round(channels * 2 ** (dims * wavelet_levels) / reduction))
    config = {"family": "walloc", "dims": dims, "in_channels": channels,
              "wavelet": "bior4.4", "wavelet_levels": wavelet_levels, "latent_channels": latent,
              "encoder": {"hidden": 0}, "decoder": {"width": 160, "blocks": 3},
              "lossless": "auto"}
    if levels > 1:
        config["rate"] = {"levels": int(levels), "step_min": 1.0, "step_max": 4.0}
    return config


def _input_reduction(dims: int, ratio: float, setting: int | str) -> int:
    if setting != "auto":
        if int(setting) < 1 or int(setting) & (int(setting) - 1):
            raise ValueError(f"input_reduction must be 'auto' or a power of two, got {setting!r}")
        return int(setting)
    if dims == 1:
        return 1
    r = 1
    while 2 * r <= MAX_INPUT_REDUCTION and ratio / (2 * r) ** dims >= MIN_CODED_RATIO:
        r *= 2
    return r


def _strides(dims: int, samples_per_latent: float, reduction: int = 1) -> tuple[int, list[int]]:
    if dims == 1:
        products = [math.prod(AUDIO_STRIDES[:n]) for n in range(1, len(AUDIO_STRIDES) + 1)]
        n = min(range(len(products)),
                key=lambda i: abs(math.log(products[i] / samples_per_latent))) + 1
        strides = list(AUDIO_STRIDES[:n])
        pool = max(1, round(samples_per_latent / math.prod(strides)))
        return pool * reduction, strides
    halvings = max(1, round(math.log2(samples_per_latent ** (1.0 / dims))))
    reduced = min(int(math.log2(reduction)), halvings - 1)
    convs = min(halvings - reduced, MAX_CONV_STAGES)
    return 2 ** (halvings - convs), [2] * convs


def _kernel(dims: int, stride: int) -> int:
    if dims > 1:
        return 5
    return stride + 1 if stride % 2 == 0 else stride + 2


def encoder_macs_per_sample(dims: int, channels: int, latent: int, pool: int,
                            strides: list[int], kernels: list[int], widths: list[int]) -> float:
    """Conv MACs per input sample position, by formula (`dance.analysis` measures the modules)."""
    chans = [channels, *widths, latent]
    macs, down = 0.0, float(pool)
    for i, (k, s) in enumerate(zip(kernels, strides)):
        down *= s
        macs += chans[i] * chans[i + 1] * k ** dims / down ** dims
    return macs


def _widths(dims: int, channels: int, latent: int, pool: int, strides: list[int],
            kernels: list[int], budget: float) -> list[int]:
    hidden = len(strides) - 1
    w0 = 8 * math.ceil(channels / 8)
    candidates = [[latent] * hidden]
    candidates += [[min(latent, w0 * g ** i) for i in range(hidden)] for g in range(8, 1, -1)]
    for widths in candidates:
        if encoder_macs_per_sample(dims, channels, latent, pool, strides, kernels,
                                   widths) <= budget:
            return widths
    raise ValueError(f"no encoder fits a budget of {budget:g} MACs per sample position")


def _decoder_widths(latent: int, stages: int) -> list[int]:
    return [max(16, latent // 2 ** j) for j in range(stages)]
