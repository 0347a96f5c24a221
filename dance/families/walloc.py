"""The "walloc" family (seed 003, WaLLoC): wavelet packet front end, a shallow encoder, a
bounded 8-bit latent and an existing lossless coder.

Device side: a J-level wavelet packet (`dance.wavelets`, CDF 9/7) trades resolution for
channels without loss, a 1×1 encoder (linear, or one hidden layer) projects the C·2^(dims·J)
subbands onto `latent_channels`, and 127·tanh(·/127) bounds the latent, which is rounded to
integers (uniform noise in training) — 8 bits per element. Lossless stage: PNG or lossless
WebP of the latent tiled as an RGB image (3 channels per tile), or the engine's rANS with the
learned factorized prior; `auto` codes all three and keeps the shortest, per frame. The first
byte of the string names the coder. Server side: the decoder (a linear 1×1 path plus residual
blocks, all at the latent's resolution) predicts the subbands, which the inverse packet turns
back into the signal. Variable rate: the prior's quantisation step per level divides the
latent before rounding, i.e. fewer bits per element (`dance.priors`).

Config keys: dims, in_channels, wavelet_levels (J), wavelet (bior4.4 | bior2.2),
latent_channels, encoder {hidden: 0 = linear}, decoder {width, blocks},
lossless (auto | webp | png | rans), rate {levels, step_min, step_max}.
"""
from __future__ import annotations

import copy
import io
import math

import numpy as np
import torch
import torch.nn as nn

from ..layers import ResidualBlock, conv
from ..models import FactorizedPriorModel, rate_settings, register_model
from ..priors import FactorizedPrior
from ..wavelets import InverseWaveletPacket, WaveletPacket

LOSSLESS = ("auto", "rans", "png", "webp")
CODER_TAGS = {"rans": 0, "png": 1, "webp": 2}
LATENT_BOUND = 127.0
# subbands enter the projection ×8 (the coarse band of a [0, 1] image then spans about ±64,
# inside the int8 range) and the decoder sees the latent /8: weights of order one at the start
COEFFICIENT_GAIN = 8.0
WEBP_MAX_SIDE = 16383


class BoundedLatent(nn.Module):
    """127·tanh(y/127): identity near zero, never beyond the int8 range the images hold."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return LATENT_BOUND * torch.tanh(y / LATENT_BOUND)


class WaveletEncoder(nn.Module):
    """The device side: centre, wavelet packet, 1×1 projection, bound."""

    def __init__(self, packet: WaveletPacket, projection: nn.Module):
        super().__init__()
        self.packet, self.projection, self.bound = packet, projection, BoundedLatent()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bound(self.projection(self.packet(x - 0.5) * COEFFICIENT_GAIN))


class SubbandDecoder(nn.Module):
    """Latent -> subbands: a linear 1×1 path (the encoder's pseudo-inverse, learned) plus a
    residual correction from 3-wide residual blocks (its last layer starts at zero, so
    training starts from the linear codec)."""

    def __init__(self, dims: int, latent: int, subbands: int, width: int, blocks: int):
        super().__init__()
        self.linear = conv(dims, latent, subbands, 1)
        layers: list[nn.Module] = [conv(dims, latent, width, 3), nn.LeakyReLU(inplace=True)]
        layers += [ResidualBlock(dims, width, width) for _ in range(blocks)]
        layers.append(conv(dims, width, subbands, 1))
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.residual = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = y / COEFFICIENT_GAIN
        return (self.linear(y) + self.residual(y)) / COEFFICIENT_GAIN


@register_model("walloc")
class WaveletLatentCodec(FactorizedPriorModel):
    def __init__(self, dims: int, in_channels: int, wavelet_levels: int, latent_channels: int,
                 encoder: dict | None = None, decoder: dict | None = None,
                 lossless: str = "auto", rate: dict | None = None, wavelet: str = "bior4.4"):
        super().__init__()
        if lossless not in LOSSLESS:
            raise ValueError(f"lossless: one of {LOSSLESS}, got {lossless!r}")
        self.dims, self.in_channels, self.latent_channels = dims, in_channels, latent_channels
        self.lossless = lossless
        self.packet = WaveletPacket(dims, wavelet_levels, wavelet)
        self.inverse_packet = InverseWaveletPacket(self.packet)
        subbands = self.packet.out_channels(in_channels)
        hidden = int((encoder or {}).get("hidden", 0))
        if hidden == 0:
            projection = conv(dims, subbands, latent_channels, 1)
            nn.init.orthogonal_(projection.weight)        # a random orthonormal projection
        else:
            projection = nn.Sequential(conv(dims, subbands, hidden, 1), nn.GELU(),
                                       conv(dims, hidden, latent_channels, 1))
        self.encoder = WaveletEncoder(self.packet, projection)
        decoder = decoder or {}
        self.decoder = SubbandDecoder(dims, latent_channels, subbands,
                                      int(decoder.get("width", 192)), int(decoder.get("blocks", 3)))
        rate = rate_settings({"rate": rate})
        self.levels = rate["levels"]
        self.entropy_bottleneck = FactorizedPrior(latent_channels, rate["levels"],
                                                  rate["step_min"], rate["step_max"])

    @classmethod
    def from_config(cls, config: dict) -> "WaveletLatentCodec":
        return cls(int(config["dims"]), int(config["in_channels"]),
                   int(config["wavelet_levels"]), int(config["latent_channels"]),
                   config.get("encoder"), config.get("decoder"),
                   str(config.get("lossless", "auto")), config.get("rate"),
                   str(config.get("wavelet", "bior4.4")))

    @property
    def stride(self) -> int:
        return self.packet.stride

    def string_shapes(self, size: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [(self.latent_channels, *[s // self.stride for s in size])]

    def synthesize(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.inverse_packet(self.decoder(y_hat)) + 0.5

    def forward(self, x: torch.Tensor, level: float | None = None) -> dict:
        y_hat, likelihoods = self.entropy_bottleneck(self.encoder(x), level)
        return {"x_hat": self.synthesize(y_hat), "likelihoods": {"y": likelihoods}}

    def export_encoder(self, pooled: bool = False) -> nn.Module:
        return copy.deepcopy(self.encoder).eval().requires_grad_(False)

    # -- lossless stage ----------------------------------------------------------------------
    def code(self, outputs: tuple[torch.Tensor, ...], level: int):
        y = outputs[0][0].to(torch.float32)
        level = self.check_level(level)
        symbols = np.clip(self.entropy_bottleneck.symbols(y, level)[0], -128, 127)
        symbols = symbols.reshape(y.shape)
        low, high = self._table_support(level)
        inside = bool(((symbols >= low) & (symbols <= high)).all())
        if self.lossless == "rans":   # the tables' support is all rANS can code: clip to it
            symbols = np.clip(symbols, low, high)
        coders = ("rans", "png", "webp") if self.lossless == "auto" else (self.lossless,)
        candidates = [self._code_with(name, symbols, level) for name in coders
                      if (name != "webp" or _webp_fits(symbols.shape))
                      and (name != "rans" or inside or self.lossless == "rans")]
        if not candidates:
            raise ValueError(f"a latent of shape {symbols.shape} is too large for WebP "
                             f"(at most {WEBP_MAX_SIDE} px a side): use lossless: png or rans")
        return [min(candidates, key=len)], [tuple(y.shape)]

    def _table_support(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (lowest, highest) symbol the CDF tables of `level` hold, as
        broadcastable columns: `auto` uses rANS only when every symbol is inside, so all
        coders give the same decoded latent."""
        tables = self.entropy_bottleneck.tables
        rows = slice(level * self.latent_channels, (level + 1) * self.latent_channels)
        low = tables.offset[rows].numpy().astype(np.int64)
        high = low + tables.cdf_length[rows].numpy().astype(np.int64) - 2
        shape = (-1,) + (1,) * self.dims
        return low.reshape(shape), high.reshape(shape)

    def _code_with(self, name: str, symbols: np.ndarray, level: int) -> bytes:
        tag = bytes([CODER_TAGS[name]])
        if name == "rans":
            rows = np.arange(self.latent_channels) + level * self.latent_channels
            return tag + self.entropy_bottleneck.coder.encode_runs(
                symbols.reshape(self.latent_channels, -1).astype(np.int32), rows)
        from PIL import Image
        buffer = io.BytesIO()
        image = Image.fromarray(tile_latent(symbols))
        if name == "png":
            image.save(buffer, format="PNG", compress_level=6)
        else:   # method 2, effort 0: 0.6 ms for a Kodak latent, within 3% of the slowest setting
            image.save(buffer, format="WEBP", lossless=True, quality=0, method=2)
        return tag + buffer.getvalue()

    def decompress(self, strings: list[bytes], shapes: list[tuple[int, ...]],
                   level: int) -> torch.Tensor:
        level = self.check_level(level)
        shape = tuple(shapes[0])
        string = strings[0]
        if not string or string[0] not in CODER_TAGS.values():
            raise ValueError("walloc string: unknown lossless coder tag")
        if string[0] == CODER_TAGS["rans"]:
            y_hat = self.entropy_bottleneck.decode(string[1:], shape, level)
        else:
            symbols = untile_latent(_read_image(string[1:], latent_tile_size(shape)), shape)
            y_hat = self.entropy_bottleneck.dequantize(torch.from_numpy(symbols), level)
        with torch.inference_mode():
            return self.synthesize(y_hat.unsqueeze(0))


def latent_tile_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """(width, height) of the RGB image holding a (C, *spatial) latent: tiles of 3 channels
    stacked vertically, each tile the spatial grid with leading axes folded into rows."""
    channels, spatial = shape[0], shape[1:]
    rows = math.prod(spatial[:-1]) if len(spatial) > 1 else 1
    return spatial[-1], math.ceil(channels / 3) * rows


def tile_latent(symbols: np.ndarray) -> np.ndarray:
    """(C, *spatial) int in [-128, 127] -> uint8 (rows, width, 3) image (`latent_tile_size`)."""
    channels = symbols.shape[0]
    width, height = latent_tile_size(symbols.shape)
    groups = math.ceil(channels / 3)
    padded = np.zeros((groups * 3, symbols[0].size), np.uint8)
    padded[:channels] = (symbols.reshape(channels, -1) + 128).astype(np.uint8)
    padded[channels:] = 128
    tiles = padded.reshape(groups, 3, height // groups, width)
    return np.ascontiguousarray(tiles.transpose(0, 2, 3, 1).reshape(height, width, 3))


def untile_latent(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    channels = shape[0]
    width, height = latent_tile_size(shape)
    groups = math.ceil(channels / 3)
    tiles = image.reshape(groups, height // groups, width, 3).transpose(0, 3, 1, 2)
    planes = tiles.reshape(groups * 3, -1)[:channels]
    return planes.astype(np.int32).reshape(shape) - 128


def _webp_fits(shape: tuple[int, ...]) -> bool:
    return max(latent_tile_size(shape)) <= WEBP_MAX_SIDE


def _read_image(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """The RGB pixels of a PNG/WebP latent image, its size checked before any pixel decodes."""
    from PIL import Image, UnidentifiedImageError
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in ("PNG", "WEBP") or image.size != size:
            raise ValueError(f"walloc string: a {image.format} image of {image.size}, expected "
                             f"a PNG/WebP of {size}")
        pixels = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"walloc string: unreadable latent image ({exc})") from None
    return pixels
