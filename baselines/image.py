"""Conventional image codecs to compare DANCE with: resolution reduction + JPEG, WebP or AVIF.

RR+JPEG / RR+WebP / RR+AVIF downscale the frame (Lanczos), encode the small frame, and the decoder
upsamples it back to the original size (bicubic). To hit a byte budget, the scales of SCALES are
tried from coarse to fine, each with a bisection for the highest quality that fits; among those
fits the one with the best PSNR on the full frame wins. The search stops at the first scale whose
lowest quality overshoots (finer scales only get bigger), or after PATIENCE scales in a row that
score below the best. The DANCE paper's RR+JPEG (Table 2) is
the same with one fixed 8× reduction: `ImageBaseline("rr_jpeg", ratio=..., scale=8)`.

Encoders: libjpeg-turbo, libwebp and libavif (libaom encoder, dav1d decoder) through Pillow; AVIF
needs Pillow >= 11.3 built with libavif (`PIL.features.check("avif")`), else BaselineError. Not
PyAV: its JPEG encoder is ffmpeg's mjpeg, whose coarsest quantiser still spends 3.4× the bytes of
libjpeg at quality 1 on an Aria frame, so it cannot reach the ratios this comparison is about;
WebP is libwebp either way.

AVIF runs at libaom speed AVIF_SPEED = 8 on one thread. Measured on frame 0 of the sample Aria
recording (1408², one budget search each at 200, 800 and 3200:1, CPU seconds on one core of a
shared machine): speed 6 takes 12.5 / 8.9 / 3.1 s, speed 7 8.2 / 4.5 / 1.3 s, speed 8
3.8 / 2.8 / 1.2 s, speed 9 1.7 / 1.3 / 0.6 s. Speed 8 gives up 0.3-0.45 dB PSNR to speed 6
(40.94 vs 41.25, 39.20 vs 39.43, 35.76 vs 36.21 dB) at a third of the time; speed 9 loses another
0.4-0.9 dB at 800 and 3200:1. One thread (Pillow's default is one per core) because libaom's
output depends on the thread count (one 176² encode: 1008 bytes on one thread, 1005 on two), so
containers would change with the machine's cores; and a search makes 50-80 encodes, most of them
of small frames, where threads help little.

Container, all integers little-endian (13 bytes of header, counted in every budget and ratio):
    "DIB" | version u8 (1) | format u8 (1 JPEG, 2 WebP, 3 AVIF) | original height u16 | width u16
    | CRC-32 u32 of the payload | payload: one JPEG, WebP or AVIF file of the reduced frame
The reduction is not stored: it is the original size over the size inside the payload.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from evaluation.image_quality import psnr

MAGIC = b"DIB"
VERSION = 1
HEADER = struct.Struct("<3sBBHHI")
FORMATS = ("jpeg", "webp", "avif")  # format byte = index + 1
QUALITY_RANGE = {"jpeg": (1, 100), "webp": (0, 100), "avif": (0, 100)}
METHODS = ("rr_jpeg", "rr_webp", "rr_avif", "jpeg", "webp", "avif")
# libaom speed (0 slowest .. 10) and threads for AVIF; see the module docstring for the choice.
AVIF_SPEED = 8
AVIF_THREADS = 1
# Downscale factors tried by a budget search; 1/32 of a 1408² frame is 44² pixels.
SCALES = (1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32)
# The search ends after this many scales in a row score below the best: PSNR rises, then falls,
# from coarse to fine. On the sample's 8 frames at 50-3200:1 (JPEG and WebP, 112 searches) it
# found the full search's best every time, with 18% less CPU time.
PATIENCE = 2
MAX_SIDE = 65535


class BaselineError(ValueError):
    """A container that is truncated or corrupt, or a budget no encoding fits."""


@dataclass(frozen=True)
class Encoding:
    """A container and how it was made; `psnr` (dB, full frame) is set by budget searches."""

    data: bytes
    fmt: str
    scale: float
    quality: int
    psnr: float | None = None


def check_frame(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 frame, got {image.dtype} {image.shape}")
    if not (0 < min(image.shape[:2]) and max(image.shape[:2]) <= MAX_SIDE):
        raise ValueError(f"frame sides must be 1..{MAX_SIDE} pixels, got {image.shape[:2]}")


def reduce(image: np.ndarray, scale: float) -> Image.Image:
    """The frame downscaled by `scale` (Lanczos), at least one pixel per side."""
    h, w = image.shape[:2]
    picture = Image.fromarray(image)
    if scale == 1:
        return picture
    size = (max(1, round(w / scale)), max(1, round(h / scale)))
    return picture.resize(size, Image.Resampling.LANCZOS)


def check_format(fmt: str) -> None:
    """Refuse a format this Pillow cannot write (AVIF needs Pillow >= 11.3 built with libavif)."""
    if fmt not in FORMATS:
        raise ValueError(f"image format must be one of {list(FORMATS)}, got {fmt!r}")
    if fmt == "avif" and not _avif_available():
        import PIL
        raise BaselineError(f"AVIF is not available: Pillow {PIL.__version__} was built without "
                            "libavif (PIL.features.check('avif') is False); install Pillow >= "
                            "11.3 wheels, which include it")


def _avif_available() -> bool:
    from PIL import features
    return bool(features.check("avif"))


def pack(picture: Image.Image, fmt: str, quality: int, original_hw: tuple[int, int]) -> bytes:
    """One container: `picture` encoded as `fmt` at `quality`, for a frame of `original_hw`."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        picture.save(buf, "JPEG", quality=quality, optimize=True)
    elif fmt == "webp":
        picture.save(buf, "WEBP", quality=quality, method=6)
    else:
        picture.save(buf, "AVIF", quality=quality, speed=AVIF_SPEED, max_threads=AVIF_THREADS)
    payload = buf.getvalue()
    header = HEADER.pack(MAGIC, VERSION, FORMATS.index(fmt) + 1, *original_hw, zlib.crc32(payload))
    return header + payload


def encode(image: np.ndarray, fmt: str, quality: int, scale: float = 1) -> Encoding:
    """`image` reduced by `scale` and encoded at one quality."""
    check_frame(image)
    check_format(fmt)
    data = pack(reduce(image, scale), fmt, quality, image.shape[:2])
    return Encoding(data, fmt, scale, quality)


def fit_budget(image: np.ndarray, fmt: str, budget: int, scales=SCALES) -> Encoding:
    """The best-PSNR encoding of `image` within `budget` bytes (container included)."""
    check_frame(image)
    check_format(fmt)
    top_quality = QUALITY_RANGE[fmt][1]
    best: Encoding | None = None
    misses = 0  # scored scales in a row no better than the best
    waiting = None  # the finest fit at top quality so far: a finer one at top quality beats it
    for fit in _fits(image, fmt, budget, scales):
        if fit[1] == top_quality:
            waiting = fit
            continue
        for scale, quality, data in filter(None, (waiting, fit)):
            score = psnr(image, decode(data))
            if best is None or score > best.psnr:
                best, misses = Encoding(data, fmt, scale, quality, score), 0
            else:
                misses += 1
        waiting = None
        if misses >= PATIENCE:
            break
    if waiting is not None:
        scale, quality, data = waiting
        score = psnr(image, decode(data))
        if best is None or score > best.psnr:
            best = Encoding(data, fmt, scale, quality, score)
    return best


def _fits(image: np.ndarray, fmt: str, budget: int, scales):
    """(scale, highest quality within budget, container) per scale, coarse to fine, until a
    scale's lowest quality overshoots."""
    low_q, bound = QUALITY_RANGE[fmt]
    for n, scale in enumerate(sorted(set(scales), reverse=True)):
        picture = reduce(image, scale)
        # a finer frame at the same quality takes more bytes: the coarser fit bounds the quality
        fit = _highest_quality(picture, fmt, budget, low_q, bound, image.shape[:2])
        if fit is None:
            if n == 0:
                smallest = len(pack(picture, fmt, low_q, image.shape[:2]))
                raise BaselineError(f"no {fmt} encoding fits {budget} bytes: the smallest is "
                                    f"{smallest} bytes (1/{scale:g} scale, quality {low_q})")
            return
        bound = fit[0]
        yield scale, *fit


def _highest_quality(picture: Image.Image, fmt: str, budget: int, lo: int, hi: int,
                     original_hw: tuple[int, int]) -> tuple[int, bytes] | None:
    """(quality, container) of the highest quality in lo..hi within `budget`, by bisection."""
    data = pack(picture, fmt, hi, original_hw)
    if len(data) <= budget:
        return hi, data
    data = pack(picture, fmt, lo, original_hw)
    if len(data) > budget:
        return None
    fit, lo, hi = (lo, data), lo + 1, hi - 1
    while lo <= hi:
        q = (lo + hi) // 2
        data = pack(picture, fmt, q, original_hw)
        if len(data) <= budget:
            fit, lo = (q, data), q + 1
        else:
            hi = q - 1
    return fit


def budget_for_ratio(shape: tuple[int, ...], ratio: float) -> int:
    """Bytes allowed for a frame of `shape` at compression `ratio` (raw H·W·3 bytes / bytes)."""
    return int(np.prod(shape) // ratio)


def read_header(data: bytes) -> tuple[str, int, int, bytes]:
    """(format, original height, original width, payload) of a container, checked."""
    data = bytes(data)
    if len(data) < HEADER.size or data[:3] != MAGIC:
        raise BaselineError("not an image baseline container (bad magic or shorter than the "
                            f"{HEADER.size}-byte header)")
    _, version, fmt, height, width, crc = HEADER.unpack_from(data)
    if version != VERSION:
        raise BaselineError(f"image baseline container version {version} is not supported "
                            f"(this is {VERSION})")
    if not 1 <= fmt <= len(FORMATS):
        raise BaselineError(f"unknown image format code {fmt} in the container")
    payload = data[HEADER.size:]
    if zlib.crc32(payload) != crc:
        raise BaselineError(f"image baseline container is truncated or corrupt (CRC mismatch, "
                            f"{len(payload)} payload bytes)")
    return FORMATS[fmt - 1], height, width, payload


def decode(data: bytes) -> np.ndarray:
    """The H×W×3 uint8 frame of a container, upsampled back to its original size."""
    fmt, height, width, payload = read_header(data)
    if fmt == "avif" and not _avif_available():
        check_format(fmt)
    try:
        with Image.open(io.BytesIO(payload), formats=[fmt.upper()]) as picture:
            if picture.width > width or picture.height > height:
                raise BaselineError(f"{fmt} payload of {picture.width}×{picture.height} is larger "
                                    f"than the original {width}×{height}")
            picture = picture.convert("RGB")
    except (OSError, SyntaxError) as exc:  # Pillow's errors for undecodable files
        raise BaselineError(f"cannot decode the {fmt} payload: {exc}") from None
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.BICUBIC)
    return np.array(picture)


class ImageBaseline:
    """One method with one target, used like a DANCE codec: `compress(frame) -> bytes`,
    `decompress(bytes) -> frame`.

    rr_jpeg / rr_webp / rr_avif: a `budget_bytes` or a `ratio`, searched over scales (or one fixed
    `scale`).
    jpeg / webp / avif: full resolution, at a `quality` or at the best quality within a budget or
    ratio.
    """

    kind = "image"

    def __init__(self, method: str, *, quality: int | None = None,
                 budget_bytes: int | None = None, ratio: float | None = None,
                 scale: float | None = None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        targets = [t for t in (quality, budget_bytes, ratio) if t is not None]
        reduced = method.startswith("rr_")
        if len(targets) != 1 or (reduced and quality is not None):
            wanted = "budget_bytes or ratio" if reduced else "quality, budget_bytes or ratio"
            raise ValueError(f"{method} needs exactly one of {wanted}")
        if scale is not None and (not reduced or scale < 1):
            raise ValueError("scale (a reduction factor >= 1) applies to rr_jpeg / rr_webp / "
                             "rr_avif only")
        self.method, self.fmt = method, method.removeprefix("rr_")
        self.quality, self.budget_bytes, self.ratio = quality, budget_bytes, ratio
        self.scales = (scale,) if scale is not None else SCALES if reduced else (1,)
        check_format(self.fmt)
        lo, hi = QUALITY_RANGE[self.fmt]
        if quality is not None and not lo <= quality <= hi:
            raise ValueError(f"{self.fmt} quality must be {lo}..{hi}, got {quality}")

    @property
    def id(self) -> str:
        """Method and target, e.g. rr_webp@800:1, jpeg@q50, rr_jpeg@2048B."""
        if self.quality is not None:
            return f"{self.method}@q{self.quality}"
        if self.ratio is not None:
            return f"{self.method}@{self.ratio:g}:1"
        return f"{self.method}@{self.budget_bytes}B"

    def encode(self, image: np.ndarray) -> Encoding:
        if self.quality is not None:
            return encode(image, self.fmt, self.quality)
        check_frame(image)
        budget = self.budget_bytes or budget_for_ratio(image.shape, self.ratio)
        return fit_budget(image, self.fmt, budget, self.scales)

    def compress(self, image: np.ndarray) -> bytes:
        return self.encode(image).data

    @staticmethod
    def decompress(data: bytes) -> np.ndarray:
        return decode(data)
