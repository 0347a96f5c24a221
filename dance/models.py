"""The codec-model contract every family implements, and the family registry.

In the spirit of CompressAI's `CompressionModel`, generalised to N-D signals, several entropy-coded
strings and variable rate. A family is one module: a `CodecModel` subclass decorated with
`@register_model("name")`; a config names it by `family: name` (built-ins and registered ones)
or `family: package.module:Class` (imported on demand, so a checkpoint of a family that lives
outside `dance/` loads without a registry edit). `dance.codec.Codec` only relies on this class.
"""
from __future__ import annotations

import importlib
import math
import random
from typing import Callable

import torch
import torch.nn as nn

MODELS: dict[str, type] = {}
# CompressAI entropy models keep their CDF tables in variable-size buffers; checkpoints carry
# tables in `entropy_state()` instead, so these never go into a state dict
TABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


class CodecModel(nn.Module):
    """Base class of a codec family.

    Geometry: inputs are N×C×(spatial...) with spatial sizes a multiple of `stride` (the Codec
    pads); `input_pool` > 1 says the model starts with an average pooling the Codec may do for
    it in integer arithmetic (images), and `export_encoder(pooled=True)` then leaves it out.

    Rate: `levels` operating points, 0 = fewest bytes; training passes a continuous level in
    [0, levels - 1] to `forward`, coding an integer one. One level = a fixed-rate model.
    """

    family = ""          # set by register_model
    levels = 1
    # True: coding at some levels needs only part of the encoder (`encoder_for_level`)
    encoder_depends_on_level = False
    input_pool = 1
    dims: int
    in_channels: int

    @classmethod
    def from_config(cls, config: dict) -> "CodecModel":
        raise NotImplementedError

    # -- geometry ----------------------------------------------------------------------------
    @property
    def stride(self) -> int:
        """Downsampling per spatial axis from input to the coarsest string."""
        raise NotImplementedError

    def string_shapes(self, size: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Shapes of the strings coded for an input of spatial `size` (multiples of `stride`);
        decoders refuse containers that declare others."""
        raise NotImplementedError

    # -- training ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, level: float | None = None) -> dict:
        """{"x_hat": reconstruction, "likelihoods": {name: tensor}} at `level` (default: top)."""
        raise NotImplementedError

    def training_levels(self, rng: random.Random) -> list[tuple[float, float]] | None:
        """Several (level, λ position) pairs whose losses one batch averages, λ taken at the
        position (a level in [0, levels - 1]) of the trainer's ladder: for families trained at
        several operating points per step (the slimmable ensembles' sandwich rule). Default:
        None, one continuous level drawn by the trainer (λ at that level)."""
        return None

    def aux_loss(self) -> torch.Tensor:
        """Loss of auxiliary entropy parameters (CompressAI's quantiles), trained apart."""
        return torch.zeros(())

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimizer groups: "network" (analysis/synthesis), "entropy" (densities, may learn
        faster), "aux" (trained on aux_loss only). Default: everything is network."""
        return {"network": list(self.parameters()), "entropy": [], "aux": []}

    # -- entropy state -----------------------------------------------------------------------
    def update(self, force: bool = True) -> None:
        """Recompute the integer coding tables from the learned densities."""
        raise NotImplementedError

    def entropy_state(self) -> dict[str, torch.Tensor]:
        """Stored coding state (integer CDF tables, float32 constants) for checkpoints."""
        raise NotImplementedError

    def load_entropy_state(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    # -- coding ------------------------------------------------------------------------------
    def export_encoder(self, pooled: bool = False) -> nn.Module:
        """The device side as one plain module (frozen, no training-only ops): input -> a tensor
        or tuple of tensors, which `code` turns into strings. Exported to ONNX/TorchScript."""
        raise NotImplementedError

    def encoder_for_level(self, encoder: nn.Module, level: int) -> nn.Module:
        """The part of `encoder` (an `export_encoder` result) that coding at `level` runs,
        sharing its weights; its outputs go to `code(outputs, level)`. Only called where
        `encoder_depends_on_level`; default: all of it."""
        return encoder

    def code(self, outputs: tuple[torch.Tensor, ...], level: int) -> tuple[list[bytes],
                                                                           list[tuple[int, ...]]]:
        """Entropy-code the encoder outputs of one item (batch 1) at `level`: (strings, shapes).
        Cheap next to the encoder, so target-rate search calls it for several levels."""
        raise NotImplementedError

    def estimate_bytes(self, outputs: tuple[torch.Tensor, ...], level: int) -> list[int]:
        """The lengths of the strings `code(outputs, level)` returns, for target-rate search.
        Default: codes them (exact). A family that can tell them cheaper (the dance family,
        from the symbols' probabilities in its CDF tables) overrides this: its estimates may
        be off by a few bytes, and the search then codes only the level it picks."""
        return [len(string) for string in self.code(outputs, level)[0]]

    def decompress(self, strings: list[bytes], shapes: list[tuple[int, ...]],
                   level: int) -> torch.Tensor:
        """1×C×(padded spatial) reconstruction of one item."""
        raise NotImplementedError

    def compress(self, x: torch.Tensor, level: int) -> dict:
        """{"strings", "shapes"} of one item (1×C×spatial, a multiple of stride). Builds the
        frozen encoder per call: a Codec keeps one instead."""
        encoder = self.export_encoder()
        if self.encoder_depends_on_level:
            encoder = self.encoder_for_level(encoder, self.check_level(level))
        with torch.inference_mode():
            outputs = encoder(x)
        strings, shapes = self.code(outputs if isinstance(outputs, tuple) else (outputs,), level)
        return {"strings": strings, "shapes": shapes}

    # -- checkpoints -------------------------------------------------------------------------
    def network_state(self) -> dict[str, torch.Tensor]:
        """state_dict() without the entropy models' variable-size table buffers."""
        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items()
                if k.rsplit(".", 1)[-1] not in TABLE_BUFFERS}

    def load_network_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load weights saved by `network_state`; raise ValueError naming what does not fit."""
        own = {k for k in self.state_dict() if k.rsplit(".", 1)[-1] not in TABLE_BUFFERS}
        missing, unexpected = own - set(state), set(state) - own
        if missing or unexpected:
            raise ValueError(f"weights do not fit the model: missing {sorted(missing)[:4]}, "
                             f"unexpected {sorted(unexpected)[:4]}")
        try:
            self.load_state_dict({k: state[k] for k in own}, strict=False)
        except RuntimeError as exc:
            raise ValueError(str(exc).splitlines()[-1].strip()) from None

    def check_level(self, level: int) -> int:
        if not (isinstance(level, int) and 0 <= level < self.levels):
            raise ValueError(f"level must be an integer in 0..{self.levels - 1}, got {level!r}")
        return level


class FactorizedPriorModel(CodecModel):
    """A family whose one entropy model is `self.entropy_bottleneck`, a factorized prior
    (`dance.priors.FactorizedPrior`): the contract's entropy members, delegated to it."""

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return entropy_parameter_groups(self, ("entropy_bottleneck.",))

    def update(self, force: bool = True) -> None:
        self.entropy_bottleneck.update()

    def entropy_state(self) -> dict[str, torch.Tensor]:
        return self.entropy_bottleneck.state()

    def load_entropy_state(self, state: dict[str, torch.Tensor]) -> None:
        self.entropy_bottleneck.load_state(state)


def entropy_parameter_groups(model: nn.Module, prefixes: tuple[str, ...]) -> dict:
    """`parameter_groups()` for a model whose entropy models live under `prefixes`: their
    quantiles are "aux", their other parameters "entropy", everything else "network"."""
    named = dict(model.named_parameters())
    entropy = {n for n in named if n.startswith(prefixes)}
    return {"network": [p for n, p in named.items() if n not in entropy],
            "entropy": [p for n, p in named.items() if n in entropy
                        and not n.endswith(".quantiles")],
            "aux": [p for n, p in named.items() if n.endswith(".quantiles")]}


def register_model(name: str) -> Callable[[type], type]:
    """Class decorator: make a family buildable by `build_model({"family": name, ...})`."""
    def add(cls: type) -> type:
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(f"model family '{name}' is already registered")
        if not (isinstance(cls, type) and issubclass(cls, CodecModel)):
            raise TypeError(f"{getattr(cls, '__name__', cls)} must subclass dance.models.CodecModel")
        cls.family = name
        MODELS[name] = cls
        return cls
    return add


def model_class(family: str) -> type:
    """The class of a family name, or of a `module:Class` reference (imported here)."""
    from . import families  # noqa: F401  (registers the built-in families)
    if family in MODELS:
        return MODELS[family]
    if ":" in family:
        module, _, attr = family.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"model family '{family}' cannot be imported ({exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, CodecModel)):
            raise ValueError(f"model family '{family}' is not a dance.models.CodecModel")
        return cls
    raise ValueError(f"unknown model family '{family}' (known: {sorted(MODELS)}, or "
                     "package.module:Class)")


def build_model(config: dict) -> CodecModel:
    return model_class(str(config.get("family", "dance"))).from_config(config)


def rate_settings(config: dict) -> dict:
    """The `rate:` block of a model config with defaults: fixed rate unless levels > 1."""
    rate = {"levels": 1, "step_min": 1.0, "step_max": 1.0, **(config.get("rate") or {})}
    rate["levels"] = int(rate["levels"])
    if rate["levels"] < 1 or not 0 < float(rate["step_min"]) <= float(rate["step_max"]):
        raise ValueError(f"rate: needs levels >= 1 and 0 < step_min <= step_max, got {rate}")
    return rate


def geometric(level: float, levels: int, low: float, high: float) -> float:
    """low at level 0, high at the top level, geometric in between (λ of a level in training)."""
    if levels <= 1:
        return float(high)
    t = float(level) / (levels - 1)
    return math.exp((1 - t) * math.log(low) + t * math.log(high))
