"""The "slimmable" family (seed 001): a slimmable ensemble of small encoders, a variable bit
depth, one shared decoder, N-D. The device picks per frame how many members run (compute) and
how many bits each latent element gets (bandwidth), with one set of weights and no reload.

Encoder of ensemble size m (members are `analysis` nets of one architecture, own weights, on
the same pooled input): y_m = tanh(g_m · Σ_{i≤m} w_i E_i(x) / Σ_{i≤m} w_i + c_m), w_i = 2^(1-i).
Dividing by the weight sum and a learned per-size, per-channel affine (g_m starts at
Σw / sqrt(Σw²), which keeps independent members' variance) make the bounded latent's range
independent of m, so one quantiser and one decoder serve every size. Bit depth b is the
quantisation step 2 / (2^b - 1) on the (-1, 1) latent (at most 2^b + 1 symbols per element),
entropy-coded by a `FactorizedPrior` with that explicit step per bit depth. Training adds
uniform noise of one step; the seed scales its noise with the ensemble size because its sums
are not normalised — normalised first, the same noise is one step wide for every size.

Levels (operating points): level = k·M + (m - 1) for bit depth bit_depths[k], ensemble size
m of M: level 0 = one member at the lowest bit depth, ordered by bit depth, then size (bytes
grow with the bit depth, little with m). The container stores the level, so a decoder follows
the device's choice per packet. Training (`training_levels`) follows the sandwich rule: per
batch, sizes 1, M and `random_sizes` distinct ones in between, each at a random bit depth,
λ from the bit depth alone (the trainer's `lmbda: [low, high]` over the bit depths).

Config keys: dims, in_channels, latent_channels, members, encoder {pool, widths, kernels,
strides} (one member), decoder {widths, attention, upsample}, bit_depths (increasing),
random_sizes.
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn as nn

from ..models import FactorizedPriorModel, register_model
from ..priors import FactorizedPrior
from .convnets import POOL, analysis, crop, fold_pool, frozen, synthesis

MAX_BITS = 12   # a CDF table row per channel holds ~2^b entries
MAX_MEMBERS = 32


def member_weight(i: int) -> float:
    """w_i of member i (0-based): 2^-i, so each member refines what the earlier ones send."""
    return 2.0 ** -i


def bounded_latents(members, gain: torch.Tensor, bias: torch.Tensor, x: torch.Tensor,
                    every_size: bool = True) -> list[torch.Tensor]:
    """The bounded latent of each ensemble size 1..len(members) (or only the largest's) from
    one pass of each member over x."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    total, weights, latents = None, 0.0, []
    for i, member in enumerate(members):
        term = member_weight(i) * member(x)
        total = term if total is None else total + term
        weights += member_weight(i)
        if every_size or i == len(members) - 1:
            latents.append(torch.tanh(total / weights * gain[i].reshape(shape)
                                      + bias[i].reshape(shape)))
    return latents


class FrozenEnsemble(nn.Module):
    """The device side: frozen members on one input -> (y_1, ..., y_m), the latent of every
    ensemble size up to its own (a rate search may pick any of them). `head(k)`: the first k
    members, the same modules, so a smaller size shares these weights."""

    def __init__(self, members: list[nn.Module], gain: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("gain", gain)
        self.register_buffer("bias", bias)
        self._heads: dict[int, FrozenEnsemble] = {len(members): self}

    def head(self, size: int) -> "FrozenEnsemble":
        if size not in self._heads:
            self._heads[size] = FrozenEnsemble(list(self.members[:size]), self.gain, self.bias)
        return self._heads[size]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(bounded_latents(self.members, self.gain, self.bias, x))


@register_model("slimmable")
class SlimmableEnsemble(FactorizedPriorModel):
    encoder_depends_on_level = True

    def __init__(self, dims: int, in_channels: int, latent_channels: int, members: int,
                 encoder: dict, decoder: dict, bit_depths: list[int], random_sizes: int = 1):
        super().__init__()
        bit_depths = [int(b) for b in bit_depths]
        if not bit_depths or any(not 1 <= b <= MAX_BITS for b in bit_depths) \
                or bit_depths != sorted(set(bit_depths)):
            raise ValueError(f"bit_depths must be increasing integers in 1..{MAX_BITS}, got "
                             f"{bit_depths}")
        if not 1 <= int(members) <= MAX_MEMBERS or int(random_sizes) < 0:
            raise ValueError(f"members must be in 1..{MAX_MEMBERS} and random_sizes >= 0, got "
                             f"{members}, {random_sizes}")
        self.dims, self.in_channels, self.latent_channels = dims, in_channels, latent_channels
        self.size, self.bit_depths, self.random_sizes = int(members), bit_depths, int(random_sizes)
        self.pool = self.input_pool = int(encoder.get("pool", 1))
        self.strides = [int(s) for s in encoder["strides"]]
        self.pooling = POOL[dims](self.pool) if self.pool > 1 else nn.Identity()
        self.members = nn.ModuleList(analysis(dims, in_channels, latent_channels, 1, encoder)
                                     for _ in range(self.size))
        weights = [member_weight(i) for i in range(self.size)]
        start = [sum(weights[:k + 1]) / math.sqrt(sum(w * w for w in weights[:k + 1]))
                 for k in range(self.size)]
        self.size_gain = nn.Parameter(torch.tensor(start)[:, None].repeat(1, latent_channels))
        self.size_bias = nn.Parameter(torch.zeros(self.size, latent_channels))
        factors = list(reversed(self.strides)) + ([self.pool] if self.pool > 1 else [])
        self.decoder = synthesis(dims, latent_channels, in_channels, factors, decoder)
        self.levels = self.size * len(bit_depths)
        self.entropy_bottleneck = FactorizedPrior(
            latent_channels, steps=[2.0 / (2 ** b - 1) for b in bit_depths])
        with torch.no_grad():   # the latent's support: CDF tables of ~2^b entries from the start
            self.entropy_bottleneck.quantiles.copy_(
                torch.tensor([-1.0, 0.0, 1.0]).expand_as(self.entropy_bottleneck.quantiles))

    @classmethod
    def from_config(cls, config: dict) -> "SlimmableEnsemble":
        return cls(int(config["dims"]), int(config["in_channels"]),
                   int(config["latent_channels"]), int(config["members"]), config["encoder"],
                   config["decoder"], config["bit_depths"], int(config.get("random_sizes", 1)))

    # -- operating points --------------------------------------------------------------------
    def point(self, level: float | None) -> tuple[int, int]:
        """(ensemble size m, bit-depth index) of a level (None: the top; a continuous one is
        rounded to the nearest point)."""
        index = self.levels - 1 if level is None else min(max(round(float(level)), 0),
                                                         self.levels - 1)
        depth, member = divmod(index, self.size)
        return member + 1, depth

    def level_of(self, members: int, bit_depth: int) -> int:
        """The level of ensemble size `members` at `bit_depth` (one of `bit_depths`)."""
        if not 1 <= members <= self.size or bit_depth not in self.bit_depths:
            raise ValueError(f"no operating point with {members} members at {bit_depth} bits "
                             f"(sizes 1..{self.size}, bit depths {self.bit_depths})")
        return self.bit_depths.index(bit_depth) * self.size + members - 1

    @property
    def stride(self) -> int:
        return self.pool * math.prod(self.strides)

    def string_shapes(self, size: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [(self.latent_channels, *[s // self.stride for s in size])]

    # -- training ----------------------------------------------------------------------------
    def latent(self, x: torch.Tensor, members: int) -> torch.Tensor:
        """The bounded latent of ensemble size `members` (runs members 1..members only)."""
        return bounded_latents(self.members[:members], self.size_gain, self.size_bias,
                               self.pooling(x), every_size=False)[0]

    def forward(self, x: torch.Tensor, level: float | None = None) -> dict:
        members, depth = self.point(level)
        y_hat, likelihoods = self.entropy_bottleneck(self.latent(x, members), depth)
        return {"x_hat": crop(self.decoder(y_hat), x), "likelihoods": {"y": likelihoods}}

    def training_levels(self, rng: random.Random) -> list[tuple[float, float]]:
        """Sandwich rule: sizes 1, `random_sizes` distinct ones in (1, M), and M last (it uses
        every parameter), each at a random bit depth; λ position from the bit depth alone."""
        middle = sorted(rng.sample(range(2, self.size), min(self.random_sizes,
                                                            max(self.size - 2, 0))))
        sizes = [1, *middle, self.size] if self.size > 1 else [1]
        depths = len(self.bit_depths)
        points = []
        for members in sizes:
            depth = rng.randrange(depths)
            position = depth * (self.levels - 1) / (depths - 1) if depths > 1 else self.levels - 1
            points.append((float(depth * self.size + members - 1), float(position)))
        return points

    # -- coding ------------------------------------------------------------------------------
    def export_encoder(self, pooled: bool = False) -> FrozenEnsemble:
        """Every member; `encoder_for_level` takes the first m. pooled: without the leading
        AvgPool (done by the caller); else it is folded into each member's first conv."""
        members = [frozen(member) for member in self.members]
        if not pooled and self.pool > 1:
            members = [fold_pool(nn.Sequential(POOL[self.dims](self.pool), *member), self.dims)
                       for member in members]
        return FrozenEnsemble(members, self.size_gain.detach().clone(),
                              self.size_bias.detach().clone()).eval().requires_grad_(False)

    def encoder_for_level(self, encoder: nn.Module, level: int) -> nn.Module:
        if not isinstance(encoder, FrozenEnsemble):
            raise TypeError("a slimmable encoder is the FrozenEnsemble of export_encoder")
        return encoder.head(self.point(self.check_level(level))[0])

    def _latent_at(self, outputs: tuple[torch.Tensor, ...], level: int) -> tuple[torch.Tensor, int]:
        members, depth = self.point(self.check_level(level))
        if len(outputs) < members:
            raise ValueError(f"level {level} codes the latent of {members} members; the "
                             f"encoder ran {len(outputs)}")
        return outputs[members - 1][0].to(torch.float32), depth

    def code(self, outputs: tuple[torch.Tensor, ...], level: int):
        y, depth = self._latent_at(outputs, level)
        return [self.entropy_bottleneck.code(y, depth)], [tuple(y.shape)]

    def estimate_bytes(self, outputs: tuple[torch.Tensor, ...], level: int) -> list[int]:
        """From the symbols' information content (`FactorizedPrior.estimate_bytes`)."""
        y, depth = self._latent_at(outputs, level)
        return [self.entropy_bottleneck.estimate_bytes(y, depth)]

    def decompress(self, strings: list[bytes], shapes: list[tuple[int, ...]],
                   level: int) -> torch.Tensor:
        depth = self.point(self.check_level(level))[1]
        y_hat = self.entropy_bottleneck.decode(strings[0], shapes[0], depth)
        device = next(self.decoder.parameters()).device
        with torch.inference_mode():
            return self.decoder(y_hat.unsqueeze(0).to(device))
