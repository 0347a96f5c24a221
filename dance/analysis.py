"""Parameter counts and MACs counted from the real modules (forward hooks), not from tables.

Conv MACs = output elements × (input channels / groups) × kernel volume (transposed convs:
input elements × output channels / groups × kernel volume); padding zeros count like the
paper's figures. GDN's channel mixing (C MACs per output element) is reported separately as
`norm`, because the paper's 506.25 MACs/px counts the convolutions only. Pooling counts nothing.
Wavelet packets (`dance.wavelets`) count their lifting multiply-adds with the convs: each
lifting step is a 2-tap filter on half the samples.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .layers import GDN, FrozenGDN
from .wavelets import InverseWaveletPacket, WaveletPacket

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """{'conv': MACs, 'norm': MACs} of one forward pass of `module` on `x`."""
    totals = {"conv": 0, "norm": 0}

    def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(mod, _CONVS):
            kernel = math.prod(mod.kernel_size)
            totals["conv"] += output.numel() * mod.in_channels // mod.groups * kernel
        elif isinstance(mod, (WaveletPacket, InverseWaveletPacket)):
            totals["conv"] += inputs[0].numel() * mod.macs_per_element()
        elif isinstance(mod, _TRANSPOSED):
            kernel = math.prod(mod.kernel_size)
            totals["conv"] += inputs[0].numel() * mod.out_channels // mod.groups * kernel
        else:
            totals["norm"] += output.numel() * output.shape[1]

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (*_CONVS, *_TRANSPOSED, GDN, FrozenGDN, WaveletPacket,
                                 InverseWaveletPacket))]
    try:
        with torch.inference_mode():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return totals


def model_report(model, probe_stride_multiple: int = 4) -> dict:
    """Parameters and MACs per input sample position (pixel, frame, voxel) of encoder (what
    the device runs, `export_encoder`) and decoder (the rest of a forward pass), measured on a
    probe input of `probe_stride_multiple` × stride per axis. Works for any `CodecModel`."""
    side = model.stride * probe_stride_multiple
    device = next(model.parameters()).device
    x = torch.zeros(1, model.in_channels, *[side] * model.dims, device=device)
    positions = side ** model.dims
    pooled = torch.zeros(1, model.in_channels, *[side // model.input_pool] * model.dims,
                         device=device)
    encoder = model.export_encoder(pooled=True)
    enc = count_macs(encoder, pooled)
    was_training = model.training
    model.eval()
    total = count_macs(model, x)
    model.train(was_training)
    groups = model.parameter_groups()
    entropy_params = sum(p.numel() for p in groups["entropy"] + groups["aux"])
    encoder_params = count_params(encoder) + sum(b.numel() for b in encoder.buffers())
    return {
        "encoder_params": encoder_params,
        "decoder_params": count_params(model) - entropy_params - encoder_params,
        "entropy_params": entropy_params,
        "encoder_macs_per_sample": enc["conv"] / positions,
        "encoder_norm_macs_per_sample": enc["norm"] / positions,
        "decoder_macs_per_sample": (total["conv"] - enc["conv"]) / positions,
        "decoder_norm_macs_per_sample": (total["norm"] - enc["norm"]) / positions,
        "stride": model.stride,
        "latent_channels": model.string_shapes((side,) * model.dims)[0][0],
        "dims": model.dims,
        "in_channels": model.in_channels,
    }
