"""Codec: arrays <-> .dnc containers with one trained model of any family.

What is common to every family lives here: preprocessing, padding to the model stride, running
the exported encoder (PyTorch at a precision, or ONNX Runtime), choosing the level for a target
(`dance.targets`), the container, and checking a container before decoding it. The rest is the
family's (`dance.models.CodecModel`).

Images: H×W×C uint8 of any size (padded to the model stride by edge replication, cropped back).
Audio: frames×channels int32/int64 counts or float full scale, padded the same way; for streams,
`audio_encoder()` keeps the preprocessing filter state across blocks, and each block becomes its
own container (decodable alone).
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import torch

from . import align, bitstream, zoo
from .bitstream import BitstreamError, Container
from .entropy import EntropyCodingError
from .models import CodecModel
from .preprocess import CompandedInput, build_preprocessor
from .targets import Target, choose_level

# bfloat16 runs the encoder ~2× faster on CPUs with AVX512-BF16 (and on GPUs); latents differ
# from float32 by ~1e-3, well inside a quantization step. Decoding is unaffected either way.
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Who runs the encoder network: PyTorch (any device and precision) or ONNX Runtime (CPU,
# float32; ~2× PyTorch's float32 speed on the 1-D audio encoders). Only the encoder: symbols
# are decided by the integer tables either way, and decoding always runs in PyTorch.
ENGINES = ("torch", "onnxruntime")
# The largest signal (elements of the original array) one container may hold: decoding runs the
# synthesis network on the whole item at once, ~1 GB at this size (a 2,365² RGB image, 40 s of
# 7-channel 48 kHz audio). Longer audio goes in blocks; a Codec may be given a higher limit.
MAX_ITEM_ELEMENTS = 1 << 24
MEAN_BYTES = 2  # per channel, with `mean_correction`


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

    def __init__(self, model: CodecModel, config: dict, checkpoint_hash: str,
                 device: str | torch.device = "cpu", precision: str = "float32",
                 engine: str = "torch", max_elements: int = MAX_ITEM_ELEMENTS):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if engine == "onnxruntime" and (precision != "float32" or torch.device(device).type != "cpu"):
            raise ValueError("the onnxruntime engine runs float32 on the CPU only")
        self.model = model.to(device).eval()
        self.max_elements = int(max_elements)
        self.precision = PRECISIONS[precision]
        self.config = config
        self.device = torch.device(device)
        self.name = str(config.get("name", "unnamed"))
        self.hash = checkpoint_hash
        self.hash_bytes = bytes.fromhex(checkpoint_hash)[:bitstream.HASH_BYTES]
        self.preprocessor = build_preprocessor(config)
        self.kind = self.preprocessor.kind
        # images: per-channel means sent beside the latents (MEAN_BYTES each), restored exactly
        self.mean_correction = bool(config.get("mean_correction", False)) and self.kind == "image"
        # audio: channels lined up before coding, per-segment delays sent (`dance.align`)
        self.align_shift = int((config.get("align") or {}).get("max_shift", 0)) \
            if self.kind == "audio" else 0
        # images: a leading AvgPool runs in the preprocessor (integer sums); others: folded
        self.input_pool = model.input_pool if self.kind == "image" else 1
        self.engine = engine
        self._network = model.export_encoder(pooled=self.input_pool > 1)
        if engine == "torch":
            self._network = self._network.eval().to(self.device, self.precision)
        self.encoder = self._runner(self._network)
        # families whose encoder work depends on the level: the runner of each level's part
        # of `_network` (weights shared, built on first use), and of each distinct part
        self._level_encoders: dict[int, object] = {}
        self._part_runners: dict[int, tuple[torch.nn.Module, object]] = {}

    def _runner(self, encoder: torch.nn.Module):
        """What runs `encoder` on this codec's engine: the module itself (in place on the
        device, channels-last for images) or an ONNX Runtime session of it."""
        if self.engine == "onnxruntime":
            from .export import OnnxRuntimeEncoder
            side = 2 * self.stride // self.input_pool
            example = torch.zeros(1, self.model.in_channels, *[side] * self.model.dims)
            return OnnxRuntimeEncoder(encoder, example, torch.get_num_threads())
        encoder = encoder.eval().to(self.device, self.precision)
        return encoder.to(memory_format=torch.channels_last) if self.kind == "image" else encoder

    def encoder_at(self, level: int | None):
        """The encoder that coding at `level` runs (None: any level, as a rate search needs):
        the whole one, or for a family with `encoder_depends_on_level` (slimmable ensembles:
        the level picks how many members run) that level's part, built once and sharing the
        whole one's weights, so switching levels per frame reloads and copies nothing."""
        if level is None or not self.model.encoder_depends_on_level:
            return self.encoder
        runner = self._level_encoders.get(level)
        if runner is None:
            part = self.model.encoder_for_level(self._network, level)
            if id(part) not in self._part_runners:
                self._part_runners[id(part)] = (part, self._runner(part))
            runner = self._level_encoders[level] = self._part_runners[id(part)][1]
        return runner

    def fixed_level(self, target: Target | None) -> int | None:
        """The level a target names without a search (a level; no target: the top), when it
        is one of this codec's; None for rate targets."""
        target = target or Target()
        level = self.levels - 1 if target.empty else target.level
        return level if level is not None and 0 <= level < self.levels else None

    @classmethod
    def from_checkpoint(cls, ckpt: dict, device: str | torch.device = "cpu",
                        precision: str = "float32", engine: str = "torch") -> "Codec":
        model = zoo.model_from_checkpoint(ckpt, device)
        return cls(model, ckpt["config"], ckpt["hash"], device, precision, engine)

    @property
    def id(self) -> str:
        """Codec name and checkpoint hash prefix, as written into every container."""
        return f"{self.name}@{self.hash_bytes.hex()}"

    @property
    def stride(self) -> int:
        return self.model.stride

    @property
    def levels(self) -> int:
        return self.model.levels

    # -- encoding ----------------------------------------------------------------------------
    def compress(self, array: np.ndarray, sample_rate: int = 0,
                 target: Target | None = None) -> bytes:
        """A full container for one image (H×W×C uint8) or audio signal (frames×channels), at
        `target` (default: the top level)."""
        if self.kind == "audio":
            return self.audio_encoder(sample_rate).encode(array, target)
        x = self.preprocessor.forward(array, multiple=self.stride, pool=self.input_pool)
        return self._encode(x, array, 0, target)[0]

    def audio_encoder(self, sample_rate: int = 0, companded: bool = False,
                      blocks: bool = False) -> "AudioEncoder":
        """A streaming encoder: blocks in, one container per block out, filter state kept.
        `companded`: the blocks are already notch-filtered and companded (the `compand` node);
        `blocks`: write lean stream blocks (version 3) instead of full containers."""
        if self.kind != "audio":
            raise TypeError(f"codec '{self.name}' is an {self.kind} codec, not audio")
        return AudioEncoder(self, sample_rate, companded, blocks)

    def _encode(self, x: torch.Tensor, array: np.ndarray, sample_rate: int,
                target: Target | None, carry: float = 0.0, hint: int | None = None,
                block: bool = False) -> tuple[bytes, int]:
        """(bytes, level) of one item: a version-2 container, or with `block` a stream block
        (version 3). `carry`: bytes a ratio/kbps target may spend beyond its share (a stream's
        reservoir); `hint`: a level to start the search from (the previous block's)."""
        if min(x.shape[2:]) < 1:
            raise ValueError(f"cannot encode an empty signal of shape {array.shape}")
        if array.size > self.max_elements:
            raise ValueError(f"a signal of {array.size:,} elements is over the {self.max_elements:,}"
                             " a container may hold; encode it in blocks")
        means = self._channel_means(x, array.shape[:2]) if self.mean_correction else None
        extras = [] if means is None else [(means, (array.shape[-1],))]
        if self.align_shift:
            delays = align.segment_delays(x, self.align_shift, self.preprocessor.sample_rate)
            x = align.align(x, delays, self.align_shift)
            extras.append((align.pack_delays(delays), delays.shape))
        with torch.inference_mode():
            x = pad_to_multiple(x.to(self.device, self.precision), self.stride // self.input_pool)
            if self.kind == "image":
                x = x.contiguous(memory_format=torch.channels_last)
            outputs = self.encoder_at(self.fixed_level(target))(x)
            outputs = tuple(t.to(torch.float32) for t in
                            (outputs if isinstance(outputs, tuple) else (outputs,)))
        packed: dict[int, bytes] = {}

        def wrap(level: int, strings: list[bytes], shapes: list[tuple[int, ...]]) -> bytes:
            strings = [*strings, *(string for string, _ in extras)]
            shapes = [*shapes, *(shape for _, shape in extras)]
            if block:
                return bitstream.Block(array.dtype.name, self.hash_bytes[:bitstream.TAG_BYTES],
                                       level, int(array.shape[0]), tuple(strings)).pack()
            return Container(self.kind, array.dtype.name, self.name, self.hash_bytes,
                             tuple(array.shape), tuple(strings), tuple(tuple(s) for s in shapes),
                             int(sample_rate), self.model.family, level).pack()

        def pack(level: int) -> bytes:
            if level not in packed:
                packed[level] = wrap(level, *self.model.code(outputs, level))
            return packed[level]

        shapes = self.model.string_shapes(tuple(s * self.input_pool for s in x.shape[2:]))

        def estimate(level: int) -> int:
            sizes = self.model.estimate_bytes(outputs, level)
            return len(wrap(level, [bytes(n) for n in sizes], shapes))

        # only a family with a cheap estimate (not the default, which codes) gets it
        cheap = type(self.model).estimate_bytes is not CodecModel.estimate_bytes
        seconds = len(array) / sample_rate if self.kind == "audio" and sample_rate else None
        level = choose_level(target or Target(), self.levels, lambda k: len(pack(k)),
                             raw_bytes(array), seconds, carry, hint,
                             estimate if cheap else None)
        return pack(level), level

    def _channel_means(self, x: torch.Tensor, size: tuple[int, int]) -> bytes:
        """Per-channel means on [0, 1] of the image as the encoder sees it (after the input
        reduction: the frame's own means when its sides are multiples of the reduction; 7×
        cheaper than a pass over the full frame), as little-endian uint16 (1/65535 steps)."""
        rows, cols = (-(-s // self.input_pool) for s in size)
        means = x[0, :, :rows, :cols].double().mean((1, 2)).clamp(0, 1).cpu().numpy()
        return np.round(means * 65535).astype("<u2").tobytes()

    def _restore_means(self, x_hat: torch.Tensor, string: bytes) -> torch.Tensor:
        """Shift each channel of the decoded image to the mean the encoder measured: removes a
        decoder's colour/brightness bias for MEAN_BYTES bytes per channel."""
        channels = x_hat.shape[1]
        if len(string) != MEAN_BYTES * channels:
            raise BitstreamError(f"the channel-mean string holds {len(string)} bytes, "
                                 f"expected {MEAN_BYTES * channels}")
        means = torch.from_numpy(np.frombuffer(string, "<u2").astype(np.float32) / 65535)
        shift = means.to(x_hat.device) - x_hat.float().mean(tuple(range(2, x_hat.dim()))).reshape(-1)
        return x_hat + shift.reshape(1, channels, *[1] * (x_hat.dim() - 2)).to(x_hat.dtype)

    # -- decoding ----------------------------------------------------------------------------
    def decompress(self, data: bytes) -> np.ndarray:
        return self.decode(data)[0]

    def decode(self, data: bytes, companded: bool = False) -> tuple[np.ndarray, Container]:
        """The reconstructed array and the container it came from (shape, sample rate, ...).
        `companded` (audio): the model's companded output, for the `expand` node."""
        container = self._block_container(data) if bitstream.is_block(data) \
            else bitstream.unpack(data)
        self.check(container)
        try:
            if container.version == 1:
                x_hat = self.model.decompress_v1(container.strings[0], container.latent_shape)
            else:
                extra = int(self.mean_correction) + int(bool(self.align_shift))
                strings = list(container.strings)[:len(container.strings) - extra]
                shapes = list(container.string_shapes)[:len(strings)]
                x_hat = self.model.decompress(strings, shapes, container.level)
            spatial = self._coded(container)
            x_hat = x_hat[(..., *[slice(0, s) for s in spatial])]
            if self.align_shift:
                delays = align.unpack_delays(container.strings[-1],
                                             *container.string_shapes[-1], self.align_shift)
                x_hat = align.unalign(x_hat, delays, self.align_shift, container.shape[0])
        except (EntropyCodingError, ValueError) as exc:
            raise BitstreamError(f"cannot decode the stream: {exc}") from None
        if self.mean_correction and container.version > 1:
            x_hat = self._restore_means(x_hat, container.strings[-1])
        post = CompandedInput(self.preprocessor.channels) if companded else self.preprocessor
        return post.inverse(x_hat, container.dtype), container

    def _block_container(self, data: bytes) -> Container:
        """A stream block as the container it abbreviates: what it leaves out is this codec's."""
        block = bitstream.unpack_block(data)
        if self.kind != "audio":
            raise BitstreamError(f"stream blocks hold audio; codec '{self.name}' decodes "
                                 f"{self.kind}")
        if block.codec_tag != self.hash_bytes[:bitstream.TAG_BYTES]:
            raise BitstreamError(f"stream block of a codec with hash {block.codec_tag.hex()}..., "
                                 f"this decoder is {self.id}")
        channels = self.preprocessor.channels
        if (block.frames + 2 * self.align_shift) * channels > self.max_elements:
            raise BitstreamError(f"a block of {block.frames:,} frames is over the "
                                 f"{self.max_elements:,} elements this decoder accepts")
        container = Container("audio", block.dtype, self.name, self.hash_bytes,
                              (block.frames, channels), block.strings, (),
                              self.preprocessor.sample_rate, self.model.family, block.level)
        shapes = self._expected_shapes(container)
        if len(block.strings) != len(shapes):
            raise BitstreamError(f"the block holds {len(block.strings)} strings, this codec "
                                 f"writes {len(shapes)}")
        return dataclasses.replace(container, string_shapes=tuple(shapes))

    def _spatial(self, container: Container) -> tuple[int, ...]:
        return container.shape[:2] if self.kind == "image" else container.shape[:1]

    def _coded(self, container: Container) -> tuple[int, ...]:
        """Spatial size of what the model coded: the original's, or with channel alignment
        `align_shift` samples longer at each end."""
        return tuple(s + 2 * self.align_shift for s in self._spatial(container))

    def _expected_shapes(self, container: Container) -> list[tuple[int, ...]]:
        """The string shapes this codec writes for the container's original shape."""
        padded = tuple(-(-s // self.stride) * self.stride for s in self._coded(container))
        expected = [tuple(s) for s in self.model.string_shapes(padded)]
        if self.mean_correction:
            expected.append((self.preprocessor.channels,))
        if self.align_shift:
            expected.append((-(-container.shape[0] // align.SEGMENT), self.preprocessor.channels))
        return expected

    def check(self, container: Container) -> None:
        """Raise BitstreamError unless `container` was made by this very codec and declares
        shapes it can decode (checked before anything is allocated)."""
        if container.codec_hash != self.hash_bytes or container.codec_name != self.name:
            raise BitstreamError(
                f"stream was encoded with codec {container.codec_name}@"
                f"{container.codec_hash.hex()}, this decoder is {self.id}: pass that codec's "
                "checkpoint with -c")
        if container.kind != self.kind:
            raise BitstreamError(f"stream holds {container.kind}, codec decodes {self.kind}")
        if container.family != self.model.family:
            raise BitstreamError(f"stream is of codec family {container.family!r}, this codec "
                                 f"is {self.model.family!r}")
        if not 0 <= container.level < self.levels:
            raise BitstreamError(f"stream level {container.level} is outside this codec's "
                                 f"levels 0..{self.levels - 1}")
        rank = 3 if self.kind == "image" else 2
        channels = self.preprocessor.channels
        if len(container.shape) != rank or container.shape[-1] != channels \
                or min(container.shape) < 1:
            raise BitstreamError(f"original shape {container.shape} is not a {self.kind} with "
                                 f"{channels} channels")
        if self.kind == "image" and container.dtype != "uint8":
            raise BitstreamError(f"an image stream must be uint8, not {container.dtype}")
        padded = tuple(-(-s // self.stride) * self.stride for s in self._coded(container))
        if math.prod(padded) * channels > self.max_elements:
            raise BitstreamError(f"original shape {container.shape} is over the "
                                 f"{self.max_elements:,} elements this decoder accepts")
        expected = self._expected_shapes(container)
        if [tuple(s) for s in container.string_shapes] != expected:
            raise BitstreamError(f"string shapes {list(container.string_shapes)} do not match "
                                 f"the original shape {container.shape} (expected {expected})")


class AudioEncoder:
    """Encodes consecutive audio blocks of one stream; the DC filter state carries over, and so
    does a ratio/kbps target's byte reservoir: a block that came out under its share lets the
    next ones spend the difference (and over, the reverse), so the stream as a whole lands on
    the target although each block can only pick among the codec's levels."""

    def __init__(self, codec: Codec, sample_rate: int, companded: bool = False,
                 blocks: bool = False):
        self.codec, self.sample_rate, self.blocks = codec, int(sample_rate), blocks
        channels = codec.preprocessor.channels
        self.stream = CompandedInput(channels) if companded else codec.preprocessor.stream()
        self.carry = 0.0
        self.level: int | None = None

    def encode(self, block: np.ndarray, target: Target | None = None) -> bytes:
        target = target or Target()
        seconds = len(block) / self.sample_rate if self.sample_rate else None
        wanted = target.wanted_bytes(raw_bytes(block), seconds) \
            if (target.ratio or target.kbps) else None
        data, self.level = self.codec._encode(self.stream.forward(block), block,
                                              self.sample_rate, target,
                                              self.carry if wanted else 0.0, self.level,
                                              self.blocks)
        if wanted:  # at most one block's share either way: a silence does not bank a burst
            self.carry = min(max(self.carry + wanted - len(data), -wanted), wanted)
        return data


def raw_bytes(array: np.ndarray) -> int:
    """Uncompressed size the paper's ratios use: uint8 pixels, 4-byte (int32) audio samples."""
    return int(array.size) * (1 if array.dtype == np.uint8 else 4)


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


def load_codec(name_or_path: str | os.PathLike, device: str = "cpu",
               precision: str = "float32", engine: str = "torch") -> Codec:
    """A ready-to-use Codec from a zoo name (`aria-image`) or a checkpoint path; `precision`
    and `engine` choose how the encoder network runs (`PRECISIONS`, `ENGINES`)."""
    ckpt = zoo.load_checkpoint(zoo.resolve_checkpoint(name_or_path))
    return Codec.from_checkpoint(ckpt, device, precision, engine)


def load_codec_for(name: str, hash_prefix: bytes, device: str = "cpu") -> Codec:
    """The installed codec that wrote a container of codec `name`@`hash_prefix`: the zoo codec of
    that name when its hash matches, else an installed checkpoint with that name and hash (an
    earlier default); CheckpointError when neither is here."""
    try:
        codec = load_codec(zoo.zoo_checkpoint(name), device=device)   # a name, never a path
    except zoo.CheckpointError:
        codec = None
    if codec is not None and codec.hash_bytes == hash_prefix:
        return codec
    path = zoo.find_checkpoint(name, hash_prefix)
    if path is None:
        raise zoo.CheckpointError(f"no installed checkpoint is {name}@{hash_prefix.hex()}")
    return load_codec(path, device=device)
