"""The "cs" family (seed 004, HECS-B): a learned compressed-sensing bottleneck for a feature
tensor. The device computes m linear measurements per position (a 1×1 convolution without
bias, C -> m channels: the learned measurement matrix), which a factorized prior entropy-codes;
the server's decoder (1×1, k×k, 1×1 convolutions with ReLU) recovers the C-channel tensor.
Trained by distillation from the unsplit network (perception/distill.py), the measurements
keep what the rest of the network needs, not every value. Variable rate by a quantisation step
per level (`dance.priors`).

Config keys: dims, in_channels (C), measurements (m), decoder {width, kernel},
rate {levels, step_min, step_max}.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..layers import conv
from ..models import FactorizedPriorModel, rate_settings, register_model
from ..priors import FactorizedPrior


@register_model("cs")
class CompressedSensingBottleneck(FactorizedPriorModel):
    def __init__(self, dims: int, in_channels: int, measurements: int, decoder: dict,
                 rate: dict | None = None):
        super().__init__()
        self.dims, self.in_channels, self.measurements = dims, in_channels, measurements
        self.encoder = conv(dims, in_channels, measurements, 1)
        self.encoder.bias = None                      # y = A x: a linear measurement
        width, kernel = int(decoder.get("width", 2 * in_channels)), int(decoder.get("kernel", 3))
        self.decoder = nn.Sequential(conv(dims, measurements, width, 1), nn.ReLU(),
                                     conv(dims, width, width, kernel), nn.ReLU(),
                                     conv(dims, width, in_channels, 1))
        rate = rate_settings({"rate": rate})
        self.levels = rate["levels"]
        self.entropy_bottleneck = FactorizedPrior(measurements, rate["levels"],
                                                  rate["step_min"], rate["step_max"])

    @classmethod
    def from_config(cls, config: dict) -> "CompressedSensingBottleneck":
        return cls(int(config["dims"]), int(config["in_channels"]), int(config["measurements"]),
                   config.get("decoder") or {}, config.get("rate"))

    @property
    def stride(self) -> int:
        return 1

    def string_shapes(self, size: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [(self.measurements, *size)]

    def forward(self, x: torch.Tensor, level: float | None = None) -> dict:
        y_hat, likelihoods = self.entropy_bottleneck(self.encoder(x), level)
        return {"x_hat": self.decoder(y_hat), "likelihoods": {"y": likelihoods}}

    def export_encoder(self, pooled: bool = False) -> nn.Module:
        return copy.deepcopy(self.encoder).eval().requires_grad_(False)

    def code(self, outputs: tuple[torch.Tensor, ...], level: int):
        y = outputs[0][0].to(torch.float32)
        return [self.entropy_bottleneck.code(y, self.check_level(level))], [tuple(y.shape)]

    def decompress(self, strings: list[bytes], shapes: list[tuple[int, ...]],
                   level: int) -> torch.Tensor:
        y_hat = self.entropy_bottleneck.decode(strings[0], shapes[0], self.check_level(level))
        with torch.inference_mode():
            return self.decoder(y_hat.unsqueeze(0))
