"""The "hyperprior" family: Ballé et al. 2018's scale hyperprior, N-D, with the dance family's
encoder and decoder (same sizing heuristics) and variable rate by a quantisation step per level.

y = g_a(x); z = h_a(|y|) is coded with a factorized prior (one fixed level); the scales
h_s(z_hat) select, per element of y, a Gaussian CDF row for round(y / step). Two strings per
item: y, then z. h_a and h_s work at the latent's resolution (1/stride² of the pixels), so the
device-side cost is the analysis network's. Config: as "dance", plus hyper {channels, stride (a
power of two, default 4 as in Ballé: one stride-2 conv per halving), kernel (default 5)}; a
smaller stride/kernel keeps h_a's parameters within a device budget and lets a 1408-pixel frame
(2^7·11) tile without padding.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from ..layers import conv, upsampler
from ..models import CodecModel, entropy_parameter_groups, rate_settings, register_model
from ..priors import FactorizedPrior, GaussianPrior
from .convnets import analysis, crop, fold_pool, frozen, synthesis

DEFAULT_HYPER = {"stride": 4, "kernel": 5}  # Ballé 2018: two 5×5 stride-2 convs in h_a


class HyperAnalysis(nn.Module):
    """What the device runs: x -> (y, z)."""

    def __init__(self, g_a: nn.Module, h_a: nn.Module):
        super().__init__()
        self.g_a, self.h_a = g_a, h_a

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.g_a(x)
        return y, self.h_a(torch.abs(y))


@register_model("hyperprior")
class ScaleHyperprior(CodecModel):
    def __init__(self, dims: int, in_channels: int, latent_channels: int, encoder: dict,
                 decoder: dict, hyper: dict | None = None, rate: dict | None = None):
        super().__init__()
        self.dims, self.in_channels, self.latent_channels = dims, in_channels, latent_channels
        self.pool = self.input_pool = int(encoder.get("pool", 1))
        self.strides = [int(s) for s in encoder["strides"]]
        hyper = {**DEFAULT_HYPER, **(hyper or {})}
        n = int(hyper.get("channels", max(16, latent_channels // 2)))
        self.hyper_channels, self.hyper_stride = n, int(hyper["stride"])
        halvings = self.hyper_stride.bit_length() - 1
        if self.hyper_stride < 2 or 2 ** halvings != self.hyper_stride:
            raise ValueError(f"hyper.stride must be a power of two >= 2, got {hyper['stride']}")
        k = int(hyper["kernel"])
        d = dims
        self.g_a = analysis(d, in_channels, latent_channels, self.pool, encoder)
        factors = list(reversed(self.strides)) + ([self.pool] if self.pool > 1 else [])
        self.g_s = synthesis(d, latent_channels, in_channels, factors, decoder)
        h_a: list[nn.Module] = [conv(d, latent_channels, n, 3)]
        h_s: list[nn.Module] = []
        for _ in range(halvings):
            h_a += [nn.ReLU(inplace=True), conv(d, n, n, k, 2)]
            h_s += [upsampler(d, n, n, 2), nn.ReLU(inplace=True)]
        self.h_a = nn.Sequential(*h_a)
        self.h_s = nn.Sequential(*h_s, conv(d, n, latent_channels, 3), nn.ReLU(inplace=True))
        rate = rate_settings({"rate": rate})
        self.levels = rate["levels"]
        self.z_prior = FactorizedPrior(n)
        self.y_prior = GaussianPrior(rate["levels"], rate["step_min"], rate["step_max"])
        self._hyper_cache: tuple | None = None

    @classmethod
    def from_config(cls, config: dict) -> "ScaleHyperprior":
        return cls(int(config["dims"]), int(config["in_channels"]),
                   int(config["latent_channels"]), config["encoder"], config["decoder"],
                   config.get("hyper"), config.get("rate"))

    @property
    def stride(self) -> int:
        return self.pool * math.prod(self.strides) * self.hyper_stride

    def string_shapes(self, size: tuple[int, ...]) -> list[tuple[int, ...]]:
        latent = [s * self.hyper_stride // self.stride for s in size]
        return [(self.latent_channels, *latent),
                (self.hyper_channels, *[s // self.hyper_stride for s in latent])]

    def forward(self, x: torch.Tensor, level: float | None = None) -> dict:
        y = self.g_a(x)
        z = self.h_a(torch.abs(y))
        z_hat, z_likelihoods = self.z_prior(z)
        scales = self.h_s(z_hat)
        y_hat, y_likelihoods = self.y_prior(y, scales, level)
        return {"x_hat": crop(self.g_s(y_hat), x),
                "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def aux_loss(self) -> torch.Tensor:
        return self.z_prior.loss()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return entropy_parameter_groups(self, ("z_prior.",))

    def update(self, force: bool = True) -> None:
        self.z_prior.update()
        self.y_prior.update()

    def entropy_state(self) -> dict[str, torch.Tensor]:
        return {**self.z_prior.state("z."), **self.y_prior.state("y.")}

    def load_entropy_state(self, state: dict[str, torch.Tensor]) -> None:
        self.z_prior.load_state(state, "z.")
        self.y_prior.load_state(state, "y.")

    def export_encoder(self, pooled: bool = False) -> nn.Module:
        g_a = frozen(self.g_a)
        g_a = g_a[1:] if pooled and self.pool > 1 else fold_pool(g_a, self.dims)
        h_a = copy.deepcopy(self.h_a).eval().requires_grad_(False)
        return HyperAnalysis(g_a, h_a).eval()

    def _scales(self, z_hat: torch.Tensor) -> torch.Tensor:
        device = next(self.h_s.parameters()).device
        with torch.inference_mode():
            return self.h_s(z_hat.unsqueeze(0).to(device))[0].float().cpu()

    def code(self, outputs: tuple[torch.Tensor, ...], level: int):
        self.check_level(level)
        y, z = (t[0].to(torch.float32) for t in outputs)
        cached = self._hyper_cache
        if cached is None or not torch.equal(cached[0], z):
            # the z string and the scales do not depend on the level: once per item
            symbols, rows = self.z_prior.symbols(z, 0)
            z_hat = self.z_prior.dequantize(torch.from_numpy(symbols).reshape(z.shape), 0)
            cached = self._hyper_cache = (z.clone(), self.z_prior.coder.encode(symbols, rows),
                                          self._scales(z_hat))
        _, z_string, scales = cached
        return ([self.y_prior.code(y, scales, level), z_string],
                [tuple(y.shape), tuple(z.shape)])

    def decompress(self, strings: list[bytes], shapes: list[tuple[int, ...]],
                   level: int) -> torch.Tensor:
        z_hat = self.z_prior.decode(strings[1], shapes[1], 0)
        scales = self._scales(z_hat)
        if tuple(scales.shape) != tuple(shapes[0]):
            raise ValueError(f"string shapes {shapes} do not fit this model")
        y_hat = self.y_prior.decode(strings[0], scales, self.check_level(level))
        device = next(self.g_s.parameters()).device
        with torch.inference_mode():
            return self.g_s(y_hat.unsqueeze(0).to(device))
