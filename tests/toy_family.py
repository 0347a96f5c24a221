"""A codec family defined outside `dance/`, through the public contract only: one strided conv
in, one transposed conv out, a factorized prior with levels (used by test_codec_families)."""
from __future__ import annotations

import torch
import torch.nn as nn

from dance.models import CodecModel, rate_settings, register_model
from dance.priors import FactorizedPrior

CONV = {1: nn.Conv1d, 2: nn.Conv2d}
TRANSPOSED = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d}


@register_model("toy-linear")
class ToyLinear(CodecModel):
    def __init__(self, dims: int, in_channels: int, latent_channels: int, factor: int,
                 rate: dict | None):
        super().__init__()
        self.dims, self.in_channels, self.factor = dims, in_channels, factor
        self.latent_channels = latent_channels
        self.analysis = CONV[dims](in_channels, latent_channels, factor, stride=factor)
        self.synthesis = TRANSPOSED[dims](latent_channels, in_channels, factor, stride=factor)
        settings = rate_settings({"rate": rate})
        self.levels = settings["levels"]
        self.prior = FactorizedPrior(latent_channels, self.levels, settings["step_min"],
                                     settings["step_max"])

    @classmethod
    def from_config(cls, config: dict) -> "ToyLinear":
        return cls(config["dims"], config["in_channels"], config["latent_channels"],
                   config["factor"], config.get("rate"))

    @property
    def stride(self) -> int:
        return self.factor

    def string_shapes(self, size):
        return [(self.latent_channels, *[s // self.factor for s in size])]

    def forward(self, x, level=None):
        y_hat, likelihoods = self.prior(self.analysis(x), level)
        return {"x_hat": self.synthesis(y_hat), "likelihoods": {"y": likelihoods}}

    def aux_loss(self):
        return self.prior.loss()

    def parameter_groups(self):
        aux = [self.prior.quantiles]
        density = [p for p in self.prior.parameters() if p is not self.prior.quantiles]
        return {"network": [*self.analysis.parameters(), *self.synthesis.parameters()],
                "entropy": density, "aux": aux}

    def update(self, force=True):
        self.prior.update()

    def entropy_state(self):
        return self.prior.state()

    def load_entropy_state(self, state):
        self.prior.load_state(state)

    def export_encoder(self, pooled=False):
        return self.analysis

    def code(self, outputs, level):
        y = outputs[0][0]
        return [self.prior.code(y, self.check_level(level))], [tuple(y.shape)]

    def decompress(self, strings, shapes, level):
        y_hat = self.prior.decode(strings[0], shapes[0], self.check_level(level))
        with torch.inference_mode():
            return self.synthesis(y_hat[None])
