"""Codec: arrays <-> .dnc containers with one trained model (preprocess, pad, encode, code).

Images: H×W×C uint8 of any size (padded to the model stride by edge replication, cropped back).
Audio: frames×channels int32/int64 counts or float full scale, padded the same way; for streams,
`audio_encoder()` keeps the preprocessing filter state across blocks, and each block becomes its
own container (decodable alone).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from . import bitstream
from .bitstream import BitstreamError, Container
from .entropy import EntropyCodingError, EntropyTables, FactorizedCoder
from .models import DanceAutoencoder
from .preprocess import CompandedInput, build_preprocessor

# bfloat16 runs the encoder ~2× faster on CPUs with AVX512-BF16 (and on GPUs); latents differ
# from float32 by ~1e-3, well inside a quantization step. Decoding is unaffected either way.
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Who runs the encoder network: PyTorch (any device and precision) or ONNX Runtime (CPU,
# float32; ~2× PyTorch's float32 speed on the 1-D audio encoders). Only the encoder: symbols
# are decided by the integer tables either way, and decoding always runs in PyTorch.
ENGINES = ("torch", "onnxruntime")


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks up to 32 MB for reuse (process-wide, opt-in).

    By default glibc returns large blocks to the OS on free, so every 1408² frame page-faults
    ~30 MB of fresh, zeroed pages back in: ~20% of a bfloat16 image compress on this box
    (benchmarks/codec_speed.py --retain-freed-memory). The cost: the process keeps that memory.
    Same as setting MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456. Returns
    False (and changes nothing) where glibc's mallopt is unavailable.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 256 << 20))


class Codec:
    """A loaded codec: `compress(array) -> bytes`, `decompress(bytes) -> array`."""

    def __init__(self, model: nn.Module, config: dict, checkpoint_hash: str,
                 tables: EntropyTables, device: str | torch.device = "cpu",
                 precision: str = "float32", engine: str = "torch"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if engine == "onnxruntime" and (precision != "float32" or torch.device(device).type != "cpu"):
            raise ValueError("the onnxruntime engine runs float32 on the CPU only")
        self.model = model.to(device).eval()
        self.precision = PRECISIONS[precision]
        self.config = config
        self.device = torch.device(device)
        self.name = str(config.get("name", "unnamed"))
        self.hash = checkpoint_hash
        self.hash_bytes = bytes.fromhex(checkpoint_hash)[:bitstream.HASH_BYTES]
        self.coder = FactorizedCoder(tables)
        self.preprocessor = build_preprocessor(config)
        self.kind = self.preprocessor.kind
        # images: a leading AvgPool runs in the preprocessor (integer sums); others: folded
        self.input_pool = model.pool if self.kind == "image" else 1
        encoder = model.frozen_encoder()[1:] if self.input_pool > 1 else fast_encoder(model)
        self.engine = engine
        if engine == "onnxruntime":
            from .export import OnnxRuntimeEncoder
            side = 2 * self.stride // self.input_pool
            example = torch.zeros(1, model.in_channels, *[side] * model.dims)
            self.encoder = OnnxRuntimeEncoder(encoder, example, torch.get_num_threads())
        else:
            self.encoder = encoder.eval().to(self.device, self.precision)
            if self.kind == "image":
                self.encoder = self.encoder.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, device: str | torch.device = "cpu",
                        precision: str = "float32", engine: str = "torch") -> "Codec":
        from .zoo import model_from_checkpoint
        model = model_from_checkpoint(ckpt, device)
        return cls(model, ckpt["config"], ckpt["hash"],
                   EntropyTables.from_dict(ckpt["entropy"]), device, precision, engine)

    @property
    def id(self) -> str:
        """Codec name and checkpoint hash prefix, as written into every container."""
        return f"{self.name}@{self.hash_bytes.hex()}"

    @property
    def stride(self) -> int:
        return self.model.stride

    # -- encoding ----------------------------------------------------------------------------
    def compress(self, array: np.ndarray, sample_rate: int = 0) -> bytes:
        """A full container for one image (H×W×C uint8) or audio signal (frames×channels)."""
        if self.kind == "audio":
            return self.audio_encoder(sample_rate).encode(array)
        x = self.preprocessor.forward(array, multiple=self.stride, pool=self.input_pool)
        return self._encode(x, array, 0)

    def audio_encoder(self, sample_rate: int = 0, companded: bool = False) -> "AudioEncoder":
        """A streaming encoder: blocks in, one container per block out, filter state kept.
        `companded`: the blocks are already notch-filtered and companded (the `compand` node)."""
        if self.kind != "audio":
            raise TypeError(f"codec '{self.name}' is an {self.kind} codec, not audio")
        return AudioEncoder(self, sample_rate, companded)

    def _encode(self, x: torch.Tensor, array: np.ndarray, sample_rate: int) -> bytes:
        size = x.shape[2:]
        if min(size) < 1:
            raise ValueError(f"cannot encode an empty signal of shape {array.shape}")
        with torch.inference_mode():
            x = pad_to_multiple(x.to(self.device, self.precision), self.stride // self.input_pool)
            if self.kind == "image":
                x = x.contiguous(memory_format=torch.channels_last)
            y = self.encoder(x)[0].to(torch.float32)
            payload = self.coder.compress(y)
        return Container(self.kind, array.dtype.name, self.name, self.hash_bytes,
                         tuple(array.shape), tuple(y.shape), payload, int(sample_rate)).pack()

    # -- decoding ----------------------------------------------------------------------------
    def decompress(self, data: bytes) -> np.ndarray:
        return self.decode(data)[0]

    def decode(self, data: bytes, companded: bool = False) -> tuple[np.ndarray, Container]:
        """The reconstructed array and the container it came from (shape, sample rate, ...).
        `companded` (audio): the model's companded output, for the `expand` node."""
        container = bitstream.unpack(data)
        self.check(container)
        try:
            y_hat = self.coder.decompress(container.payload, container.latent_shape)
        except EntropyCodingError as exc:
            raise BitstreamError(str(exc)) from None
        with torch.inference_mode():
            x_hat = self.model.decoder(y_hat.unsqueeze(0).to(self.device))
        spatial = container.shape[:2] if self.kind == "image" else container.shape[:1]
        x_hat = x_hat[(..., *[slice(0, s) for s in spatial])]
        post = CompandedInput(self.preprocessor.channels) if companded else self.preprocessor
        return post.inverse(x_hat, container.dtype), container

    def check(self, container: Container) -> None:
        """Raise BitstreamError unless `container` was made by this very codec."""
        if container.codec_hash != self.hash_bytes or container.codec_name != self.name:
            raise BitstreamError(
                f"stream was encoded with codec {container.codec_name}@"
                f"{container.codec_hash.hex()}, this decoder is {self.id}")
        if container.kind != self.kind:
            raise BitstreamError(f"stream holds {container.kind}, codec decodes {self.kind}")
        stride = self.stride
        spatial = container.shape[:2] if self.kind == "image" else container.shape[:1]
        expected = (self.model.latent_channels, *[-(-s // stride) for s in spatial])
        if tuple(container.latent_shape) != expected:
            raise BitstreamError(f"latent shape {container.latent_shape} does not match the "
                                 f"original shape {container.shape} (expected {expected})")


class AudioEncoder:
    """Encodes consecutive audio blocks of one stream; the DC filter state carries over."""

    def __init__(self, codec: Codec, sample_rate: int, companded: bool = False):
        self.codec, self.sample_rate = codec, int(sample_rate)
        channels = codec.preprocessor.channels
        self.stream = CompandedInput(channels) if companded else codec.preprocessor.stream()

    def encode(self, block: np.ndarray) -> bytes:
        return self.codec._encode(self.stream.forward(block), block, self.sample_rate)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the spatial axes at their end (edge replication) to a multiple of `multiple`.

    A concatenation of the edge, not F.pad(mode="replicate"): same values, a third of the
    cost on the small audio blocks of a stream."""
    for axis in range(2, x.dim()):
        missing = -x.shape[axis] % multiple
        if missing:
            edge = x.narrow(axis, x.shape[axis] - 1, 1)
            x = torch.cat([x, edge.expand(*x.shape[:axis], missing, *x.shape[axis + 1:])], axis)
    return x


def fast_encoder(model: DanceAutoencoder) -> nn.Sequential:
    """The frozen encoder with a leading AvgPool folded into the first conv.

    AvgPool(p) then conv(k, s, pad k//2) equals one conv of size p·k, stride p·s, padding
    p·(k//2) whose weights are the original ones replicated over p×…×p cells and divided by
    p^dims: the same linear map (equal up to float rounding), without a pass over the
    full-resolution input.
    """
    layers = list(model.frozen_encoder())
    pool = layers[0]
    if not isinstance(pool, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        return nn.Sequential(*layers)
    first = layers[1]
    p, dims = model.pool, model.dims
    weight = first.weight.detach()
    for axis in range(2, 2 + dims):
        weight = weight.repeat_interleave(p, dim=axis)
    fused = type(first)(first.in_channels, first.out_channels, first.kernel_size[0] * p,
                        stride=first.stride[0] * p, padding=first.padding[0] * p)
    fused.weight.data.copy_(weight / p ** dims)
    fused.bias.data.copy_(first.bias.detach())
    return nn.Sequential(fused, *layers[2:]).eval().requires_grad_(False)
