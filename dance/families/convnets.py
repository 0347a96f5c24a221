"""The N-D analysis and synthesis networks the built-in families share (sized by
`dance.heuristics`): strided conv + GDN encoders and Cheng-2020-style decoders."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..layers import (GDN, AttentionBlock, FrozenGDN, ResidualBlock, ResidualBlockUpsample, conv,
                      subpel_conv)

POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


def analysis(dims: int, in_channels: int, latent_channels: int, pool: int,
             spec: dict) -> nn.Sequential:
    """[AvgPool(pool)], then conv(k_i, s_i) with GDN between: spec {widths (hidden), kernels,
    strides}."""
    widths = [in_channels, *[int(w) for w in spec["widths"]], latent_channels]
    kernels, strides = [int(k) for k in spec["kernels"]], [int(s) for s in spec["strides"]]
    if not (len(kernels) == len(strides) == len(widths) - 1):
        raise ValueError("encoder needs one kernel and one stride per conv "
                         f"(widths {widths}, kernels {kernels}, strides {strides})")
    layers: list[nn.Module] = [POOL[dims](pool)] if pool > 1 else []
    for i, (k, s) in enumerate(zip(kernels, strides)):
        if i:
            layers.append(GDN(widths[i]))
        layers.append(conv(dims, widths[i], widths[i + 1], k, s))
    return nn.Sequential(*layers)


def synthesis(dims: int, latent_channels: int, out_channels: int, factors: list[int],
              spec: dict) -> nn.Sequential:
    """AttentionBlock, then per upsampling stage ResidualBlockUpsample + ResidualBlock (an
    attention block after the middle stage), ending in a sub-pixel conv to the output channels
    — the Cheng 2020 decoder generalised to N-D and any number of stages. `factors`: the
    upsampling of each stage, coarsest first."""
    widths = [int(w) for w in spec["widths"]]
    if len(widths) != len(factors):
        raise ValueError(f"decoder needs one width per upsampling stage: {len(factors)} "
                         f"stages ({factors}), got widths {widths}")
    mode = spec.get("upsample", "subpel")
    attention = bool(spec.get("attention", True))
    layers: list[nn.Module] = [AttentionBlock(dims, latent_channels)] if attention else []
    layers.append(ResidualBlock(dims, latent_channels, widths[0]))
    middle = len(factors) // 2
    for i in range(1, len(factors)):
        layers += [ResidualBlockUpsample(dims, widths[i - 1], widths[i], factors[i - 1], mode),
                   ResidualBlock(dims, widths[i], widths[i])]
        if attention and i == middle:
            layers.append(AttentionBlock(dims, widths[i]))
    layers.append(subpel_conv(dims, widths[-1], out_channels, factors[-1]))
    return nn.Sequential(*layers)


def frozen(encoder: nn.Sequential) -> nn.Sequential:
    """A copy for inference/export: GDN parameters baked in, no autograd reparametrisation."""
    layers = [FrozenGDN(m) if isinstance(m, GDN) else copy.deepcopy(m) for m in encoder]
    return nn.Sequential(*layers).eval().requires_grad_(False)


def fold_pool(encoder: nn.Sequential, dims: int) -> nn.Sequential:
    """A frozen encoder's leading AvgPool folded into its first conv.

    AvgPool(p) then conv(k, s, pad k//2) equals one conv of size p·k, stride p·s, padding
    p·(k//2) whose weights are the original ones replicated over p×…×p cells and divided by
    p^dims: the same linear map (equal up to float rounding), without a pass over the
    full-resolution input.
    """
    layers = list(encoder)
    if not layers or not isinstance(layers[0], tuple(POOL.values())):
        return encoder
    p = int(layers[0].kernel_size if isinstance(layers[0].kernel_size, int)
            else layers[0].kernel_size[0])
    first = layers[1]
    weight = first.weight.detach()
    for axis in range(2, 2 + dims):
        weight = weight.repeat_interleave(p, dim=axis)
    fused = type(first)(first.in_channels, first.out_channels, first.kernel_size[0] * p,
                        stride=first.stride[0] * p, padding=first.padding[0] * p)
    fused.weight.data.copy_(weight / p ** dims)
    fused.bias.data.copy_(first.bias.detach())
    return nn.Sequential(fused, *layers[2:]).eval().requires_grad_(False)


def crop(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x[(..., *[slice(0, s) for s in like.shape[2:]])]
