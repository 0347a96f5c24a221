"""Model registry and the first family, "dance": an N-D rate-distortion autoencoder.

`build_model(config)` looks up `config["family"]` in the registry, so other encoder families
(wavelet front ends, linear measurement encoders, slimmable ensembles, feature codecs) plug in
with `@register_model("name")` and a `from_config(config)` classmethod, without touching callers.
Conventions follow CompressAI: `forward(x) -> {"x_hat", "likelihoods": {"y"}}`, `aux_loss()`,
`update(force=True)`.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn as nn

from .entropy import EntropyBottleneck, EntropyTables, FactorizedCoder
from .layers import (GDN, AttentionBlock, FrozenGDN, ResidualBlock, ResidualBlockUpsample, conv,
                     subpel_conv)

MODELS: dict[str, type] = {}

_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_TABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")


def register_model(name: str) -> Callable[[type], type]:
    """Class decorator: make a model family buildable by `build_model({"family": name, ...})`."""
    def add(cls: type) -> type:
        if name in MODELS:
            raise ValueError(f"model family '{name}' is already registered")
        if not callable(getattr(cls, "from_config", None)):
            raise TypeError(f"{cls.__name__} needs a from_config(config) classmethod")
        MODELS[name] = cls
        return cls
    return add


def build_model(config: dict) -> nn.Module:
    family = config.get("family", "dance")
    if family not in MODELS:
        raise ValueError(f"unknown model family '{family}' (known: {sorted(MODELS)})")
    return MODELS[family].from_config(config)


@register_model("dance")
class DanceAutoencoder(nn.Module):
    """Strided conv + GDN encoder, Cheng-2020 decoder, factorized-prior entropy bottleneck.

    Config keys: dims, in_channels, latent_channels,
    encoder: {pool, widths (hidden), kernels, strides},
    decoder: {widths (one per upsampling stage), attention (bool), upsample: subpel|transposed}.
    """

    def __init__(self, dims: int, in_channels: int, latent_channels: int, encoder: dict,
                 decoder: dict):
        super().__init__()
        self.dims, self.in_channels, self.latent_channels = dims, in_channels, latent_channels
        self.pool = int(encoder.get("pool", 1))
        self.strides = [int(s) for s in encoder["strides"]]
        self.encoder = self._build_encoder(encoder)
        self.decoder = self._build_decoder(decoder)
        self.entropy_bottleneck = EntropyBottleneck(latent_channels)

    @classmethod
    def from_config(cls, config: dict) -> "DanceAutoencoder":
        return cls(int(config["dims"]), int(config["in_channels"]),
                   int(config["latent_channels"]), config["encoder"], config["decoder"])

    # -- architecture ------------------------------------------------------------------------
    def _build_encoder(self, spec: dict) -> nn.Sequential:
        widths = [self.in_channels, *[int(w) for w in spec["widths"]], self.latent_channels]
        kernels = [int(k) for k in spec["kernels"]]
        if not (len(kernels) == len(self.strides) == len(widths) - 1):
            raise ValueError("encoder needs one kernel and one stride per conv "
                             f"(widths {widths}, kernels {kernels}, strides {self.strides})")
        layers: list[nn.Module] = []
        if self.pool > 1:
            layers.append(_POOL[self.dims](self.pool))
        for i, (k, s) in enumerate(zip(kernels, self.strides)):
            if i:
                layers.append(GDN(widths[i]))
            layers.append(conv(self.dims, widths[i], widths[i + 1], k, s))
        return nn.Sequential(*layers)

    def _build_decoder(self, spec: dict) -> nn.Sequential:
        """AttentionBlock, then per upsampling stage ResidualBlockUpsample + ResidualBlock (an
        attention block after the middle stage), ending in a sub-pixel conv to the input
        channels — the Cheng 2020 decoder generalised to N-D and any number of stages."""
        factors = list(reversed(self.strides)) + ([self.pool] if self.pool > 1 else [])
        widths = [int(w) for w in spec["widths"]]
        if len(widths) != len(factors):
            raise ValueError(f"decoder needs one width per upsampling stage: {len(factors)} "
                             f"stages ({factors}), got widths {widths}")
        mode = spec.get("upsample", "subpel")
        attention = bool(spec.get("attention", True))
        d = self.dims
        layers: list[nn.Module] = []
        if attention:
            layers.append(AttentionBlock(d, self.latent_channels))
        layers.append(ResidualBlock(d, self.latent_channels, widths[0]))
        middle = len(factors) // 2
        for i in range(1, len(factors)):
            layers += [ResidualBlockUpsample(d, widths[i - 1], widths[i], factors[i - 1], mode),
                       ResidualBlock(d, widths[i], widths[i])]
            if attention and i == middle:
                layers.append(AttentionBlock(d, widths[i]))
        layers.append(subpel_conv(d, widths[-1], self.in_channels, factors[-1]))
        return nn.Sequential(*layers)

    @property
    def stride(self) -> int:
        """Downsampling per spatial axis from input to latent."""
        return self.pool * math.prod(self.strides)

    def latent_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        """Latent spatial size for an input whose spatial size is a multiple of `stride`."""
        return tuple(s // self.stride for s in size)

    # -- CompressAI conventions --------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict:
        y = self.encoder(x)
        y_hat, y_likelihoods = self.entropy_bottleneck(y)
        x_hat = self.decoder(y_hat)
        x_hat = x_hat[(..., *[slice(0, s) for s in x.shape[2:]])]
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods}}

    def aux_loss(self) -> torch.Tensor:
        """Loss of the bottleneck's quantile parameters (trained with its own optimizer)."""
        return self.entropy_bottleneck.loss()

    def update(self, force: bool = False) -> bool:
        """Recompute the integer CDF tables from the learned densities."""
        return self.entropy_bottleneck.update(force=force)

    def entropy_tables(self) -> EntropyTables:
        return EntropyTables.from_bottleneck(self.entropy_bottleneck)

    def set_entropy_tables(self, tables: EntropyTables) -> None:
        """Install stored tables (as loaded from a checkpoint) into the bottleneck."""
        eb = self.entropy_bottleneck
        device = eb.quantiles.device
        eb._quantized_cdf = tables.quantized_cdf.to(device)
        eb._cdf_length = tables.cdf_length.to(device)
        eb._offset = tables.offset.to(device)

    def entropy_coder(self) -> FactorizedCoder:
        return FactorizedCoder(self.entropy_tables())

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Like nn.Module's, but resizes the bottleneck's table buffers to the stored ones."""
        eb = self.entropy_bottleneck
        for name in _TABLE_BUFFERS:
            key = f"entropy_bottleneck.{name}"
            if key in state_dict:
                setattr(eb, name, torch.empty_like(state_dict[key], device=eb.quantiles.device))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- inference ---------------------------------------------------------------------------
    def frozen_encoder(self) -> nn.Sequential:
        """A copy of the encoder for inference/export: GDN parameters baked in, no autograd
        reparametrisation, no training-only ops."""
        layers = [FrozenGDN(m) if isinstance(m, GDN) else copy.deepcopy(m) for m in self.encoder]
        return nn.Sequential(*layers).eval().requires_grad_(False)

