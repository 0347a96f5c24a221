"""N-D building blocks (1D/2D/3D): strided convs, GDN, and the Cheng-2020 decoder blocks.

CompressAI's GDN, attention and residual blocks are 2D-only; these are the same designs with the
spatial rank as a parameter, so one model family covers audio (1D), images (2D) and volumes (3D).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from dance import quiet_compressai

quiet_compressai()
from compressai.ops.parametrizers import NonNegativeParametrizer  # noqa: E402

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _check_dim(dim: int) -> None:
    if dim not in _CONV:
        raise ValueError(f"spatial rank must be 1, 2 or 3, got {dim}")


def conv(dim: int, cin: int, cout: int, k: int = 5, stride: int = 1) -> nn.Module:
    """A `dim`-D convolution with 'same'-style padding k//2 (output = ceil(input / stride))."""
    _check_dim(dim)
    return _CONV[dim](cin, cout, kernel_size=k, stride=stride, padding=k // 2)


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé 2016) on any spatial rank.

    y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)   (inverse=True multiplies instead: IGDN).
    Parametrised like CompressAI's GDN: beta and gamma are stored through a non-negative
    reparametrisation (`NonNegativeParametrizer`) so training keeps them positive.
    """

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6,
                 gamma_init: float = 0.1):
        super().__init__()
        self.inverse = bool(inverse)
        self.beta_reparam = NonNegativeParametrizer(minimum=beta_min)
        self.gamma_reparam = NonNegativeParametrizer()
        self.beta = nn.Parameter(self.beta_reparam.init(torch.ones(channels)))
        self.gamma = nn.Parameter(self.gamma_reparam.init(gamma_init * torch.eye(channels)))

    def effective_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(beta, gamma) after the reparametrisation: what the normalisation really uses."""
        return self.beta_reparam(self.beta), self.gamma_reparam(self.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta, gamma = self.effective_params()
        return gdn(x, beta, gamma, self.inverse)


def gdn(x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, inverse: bool) -> torch.Tensor:
    """GDN with given effective parameters; the channel mixing is a 1×…×1 convolution."""
    dim = x.dim() - 2
    channels = gamma.shape[0]
    weight = gamma.reshape(channels, channels, *([1] * dim))
    norm = _CONV_FN[dim](x * x, weight, beta)
    return x * torch.sqrt(norm) if inverse else x * torch.rsqrt(norm)


class FrozenGDN(nn.Module):
    """GDN with its effective (beta, gamma) baked in as buffers: for fast inference and export."""

    def __init__(self, source: GDN):
        super().__init__()
        beta, gamma = source.effective_params()
        self.inverse = source.inverse
        self.register_buffer("beta", beta.detach().clone())
        self.register_buffer("gamma", gamma.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gdn(x, self.beta, self.gamma, self.inverse)


class PixelShuffle(nn.Module):
    """N-D sub-pixel shuffle: (N, C·r^d, *S) -> (N, C, *(S·r))."""

    def __init__(self, dim: int, factor: int):
        super().__init__()
        _check_dim(dim)
        self.dim, self.factor = dim, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, r = self.dim, self.factor
        n, c_in, *size = x.shape
        c = c_in // r ** d
        x = x.reshape(n, c, *([r] * d), *size)
        # interleave each factor axis after its spatial axis: (n, c, s0, r0, s1, r1, ...)
        order = [0, 1] + [i for k in range(d) for i in (2 + d + k, 2 + k)]
        x = x.permute(order)
        return x.reshape(n, c, *[s * r for s in size])


def subpel_conv(dim: int, cin: int, cout: int, factor: int, k: int = 3) -> nn.Module:
    """Upsample by `factor` with a convolution to cout·factor^dim channels and a pixel shuffle."""
    return nn.Sequential(conv(dim, cin, cout * factor ** dim, k), PixelShuffle(dim, factor))


def transposed_conv(dim: int, cin: int, cout: int, factor: int) -> nn.Module:
    """Upsample by `factor` with a transposed convolution (output = input · factor)."""
    _check_dim(dim)
    kind = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dim]
    k = 2 * factor - factor % 2
    return kind(cin, cout, k, stride=factor, padding=(k - factor) // 2)


def upsampler(dim: int, cin: int, cout: int, factor: int, mode: str = "subpel") -> nn.Module:
    if mode == "subpel":
        return subpel_conv(dim, cin, cout, factor)
    if mode == "transposed":
        return transposed_conv(dim, cin, cout, factor)
    raise ValueError(f"upsampling mode must be 'subpel' or 'transposed', got {mode!r}")


class ResidualBlock(nn.Module):
    """Two 3-wide convs with LeakyReLU and a (1-wide conv) skip when widths differ (Cheng 2020)."""

    def __init__(self, dim: int, cin: int, cout: int):
        super().__init__()
        self.conv1 = conv(dim, cin, cout, 3)
        self.conv2 = conv(dim, cout, cout, 3)
        self.act = nn.LeakyReLU(inplace=True)
        self.skip = conv(dim, cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.conv1(x))
        out = self.act(self.conv2(out))
        return out + self.skip(x)


class ResidualBlockUpsample(nn.Module):
    """Upsampling residual block (Cheng 2020): upsample → LeakyReLU → conv → IGDN, plus an
    upsampled skip path."""

    def __init__(self, dim: int, cin: int, cout: int, factor: int, mode: str = "subpel"):
        super().__init__()
        self.up = upsampler(dim, cin, cout, factor, mode)
        self.act = nn.LeakyReLU(inplace=True)
        self.conv = conv(dim, cout, cout, 3)
        self.igdn = GDN(cout, inverse=True)
        self.skip = upsampler(dim, cin, cout, factor, mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.igdn(self.conv(self.act(self.up(x))))
        return out + self.skip(x)


class _BottleneckUnit(nn.Module):
    """1-wide → 3-wide → 1-wide residual unit at half width, used inside AttentionBlock."""

    def __init__(self, dim: int, channels: int):
        super().__init__()
        half = max(channels // 2, 1)
        self.body = nn.Sequential(
            conv(dim, channels, half, 1), nn.ReLU(inplace=True),
            conv(dim, half, half, 3), nn.ReLU(inplace=True),
            conv(dim, half, channels, 1))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class AttentionBlock(nn.Module):
    """Cheng-2020 simplified attention: x + trunk(x) · sigmoid(mask(x))."""

    def __init__(self, dim: int, channels: int):
        super().__init__()
        self.trunk = nn.Sequential(*[_BottleneckUnit(dim, channels) for _ in range(3)])
        self.mask = nn.Sequential(*[_BottleneckUnit(dim, channels) for _ in range(3)],
                                  conv(dim, channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.trunk(x) * torch.sigmoid(self.mask(x))
