"""The "dance" family (the paper's codec): strided conv + GDN encoder, Cheng-2020 decoder,
factorized prior; variable rate by a quantisation step per level (`dance.priors`).

Config keys: dims, in_channels, latent_channels, encoder {pool, widths, kernels, strides},
decoder {widths (one per upsampling stage), attention, upsample: subpel|transposed},
rate {levels, step_min, step_max} (optional: one level = fixed rate, the version-1 codecs).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..models import FactorizedPriorModel, rate_settings, register_model
from ..priors import FactorizedPrior
from .convnets import analysis, crop, fold_pool, frozen, synthesis


@register_model("dance")
class DanceAutoencoder(FactorizedPriorModel):
    def __init__(self, dims: int, in_channels: int, latent_channels: int, encoder: dict,
                 decoder: dict, rate: dict | None = None):
        super().__init__()
        self.dims, self.in_channels, self.latent_channels = dims, in_channels, latent_channels
        self.pool = self.input_pool = int(encoder.get("pool", 1))
        self.strides = [int(s) for s in encoder["strides"]]
        self.encoder = analysis(dims, in_channels, latent_channels, self.pool, encoder)
        factors = list(reversed(self.strides)) + ([self.pool] if self.pool > 1 else [])
        self.decoder = synthesis(dims, latent_channels, in_channels, factors, decoder)
        rate = rate_settings({"rate": rate})
        self.levels = rate["levels"]
        self.entropy_bottleneck = FactorizedPrior(latent_channels, rate["levels"],
                                                  rate["step_min"], rate["step_max"])

    @classmethod
    def from_config(cls, config: dict) -> "DanceAutoencoder":
        return cls(int(config["dims"]), int(config["in_channels"]),
                   int(config["latent_channels"]), config["encoder"], config["decoder"],
                   config.get("rate"))

    @property
    def stride(self) -> int:
        return self.pool * math.prod(self.strides)

    def string_shapes(self, size: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [(self.latent_channels, *[s // self.stride for s in size])]

    def forward(self, x: torch.Tensor, level: float | None = None) -> dict:
        y = self.encoder(x)
        y_hat, likelihoods = self.entropy_bottleneck(y, level)
        return {"x_hat": crop(self.decoder(y_hat), x), "likelihoods": {"y": likelihoods}}

    def export_encoder(self, pooled: bool = False) -> nn.Module:
        """pooled: without the leading AvgPool (done by the caller); else the pool is folded
        into the first conv (`fold_pool`)."""
        encoder = frozen(self.encoder)
        return encoder[1:] if pooled and self.pool > 1 else fold_pool(encoder, self.dims)

    def code(self, outputs: tuple[torch.Tensor, ...], level: int):
        self.__dict__.pop("_estimating", None)    # a search ends in coding: let outputs go
        y = outputs[0][0].to(torch.float32)
        return [self.entropy_bottleneck.code(y, self.check_level(level))], [tuple(y.shape)]

    def estimate_bytes(self, outputs: tuple[torch.Tensor, ...], level: int) -> list[int]:
        """The string's length from its symbols' information content (no coding): that of
        `code` for most latents, else a 32-bit word off (`FactorizedPrior.estimate_bytes`).
        The level-independent work is kept for the next call with the same `outputs` (a
        target search sizes several levels of one latent; outputs are not changed in place)
        until `code` is called."""
        cached = self.__dict__.get("_estimating")
        if cached is None or cached[0] is not outputs:
            centered = self.entropy_bottleneck.centered(outputs[0][0].to(torch.float32))
            cached = self.__dict__["_estimating"] = (outputs, centered)
        return [self.entropy_bottleneck.estimate_bytes(None, self.check_level(level), cached[1])]

    def decompress(self, strings: list[bytes], shapes: list[tuple[int, ...]],
                   level: int) -> torch.Tensor:
        y_hat = self.entropy_bottleneck.decode(strings[0], shapes[0], self.check_level(level))
        return self.synthesize(y_hat)

    def decompress_v1(self, payload: bytes, shape: tuple[int, ...]) -> torch.Tensor:
        """A version-1 container's payload (the only family that wrote them)."""
        return self.synthesize(self.entropy_bottleneck.decode_v1(payload, shape))

    def synthesize(self, y_hat: torch.Tensor) -> torch.Tensor:
        device = next(self.decoder.parameters()).device
        with torch.inference_mode():
            return self.decoder(y_hat.unsqueeze(0).to(device))
