"""Variable rate in one checkpoint vs separately trained fixed-λ models, and encoding to targets.

In one run, on images none of the models trained on (default: the 24 Kodak images):
1. the variable-rate checkpoint at every `--every`-th level: mean bits per pixel, ratio, PSNR;
2. each fixed-λ checkpoint (same architecture and data, trained apart): the same figures;
3. BD-rate of the variable-rate curve against the fixed-λ points (PCHIP, evaluation/bjontegaard):
   the rate the single model costs over dedicated ones, at equal PSNR;
4. rate control: for each `--ratio`, how far each image's container lands from it (median and
   worst, share within 3%), and that `--bytes` budgets are never exceeded;
5. a PNG of PSNR over bits per pixel (`--plot`), and the first image decoded at four levels
   side by side (`--examples`).
With `--audio DIR` (WAV/FLAC clips, e.g. from `python -m dance.simulate`), an audio checkpoint:
its range in bytes over the levels and the rate-control figures, per clip (`--block N`: per
N-sample block of one stream, as the runtime's `encode` node codes them).

    python benchmarks/variable_rate.py --vr dance/checkpoints/aria-image-vr.pt \\
        --fixed runs/fixed-16/final.pt runs/fixed-89/final.pt runs/fixed-500/final.pt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dance import data  # noqa: E402
from dance.codec import load_codec, raw_bytes  # noqa: E402
from dance.targets import Target, TargetError  # noqa: E402
from evaluation.bjontegaard import bd_rate  # noqa: E402
from evaluation.image_quality import psnr  # noqa: E402

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "eval" / "kodak"


def curve_point(codec, images, target: Target) -> tuple[float, float, float]:
    """Mean bits per pixel, mean ratio and mean PSNR of `codec` at `target` over `images`."""
    bpp, ratios, quality = [], [], []
    for image in images:
        stream = codec.compress(image, target=target)
        bpp.append(8 * len(stream) / (image.shape[0] * image.shape[1]))
        ratios.append(raw_bytes(image) / len(stream))
        quality.append(psnr(image, codec.decompress(stream)))
    return float(np.mean(bpp)), float(np.mean(ratios)), float(np.mean(quality))


def target_precision(encode, items, ratio: float) -> tuple[float, float, float, int, int]:
    """(median, worst |error| in %, share within 3%) of containers aimed at `ratio`; of the
    containers aimed at a byte budget of raw/ratio, how many exceed it (must be 0) and how many
    budgets are below even level 0 (refused with TargetError)."""
    errors, over, unreachable = [], 0, 0
    for item in items:
        raw = raw_bytes(item)
        errors.append(abs(raw / len(encode(item, Target(ratio=ratio))) / ratio - 1) * 100)
        try:
            over += len(encode(item, Target(bytes=int(raw / ratio)))) > int(raw / ratio)
        except TargetError:
            unreachable += 1
    return (float(np.median(errors)), float(np.max(errors)),
            float(np.mean(np.array(errors) <= 3)), over, unreachable)


def print_rate_control(encode, items, ratios) -> None:
    results = [(ratio, target_precision(encode, items, ratio))
               for ratio in tqdm(ratios, desc="targets", unit="ratio")]
    print("\nrate control (per item, container included):")
    for ratio, (median, worst, share, over, unreachable) in results:
        print(f"  --ratio {ratio:g}: median error {median:.2f}%, worst {worst:.2f}%, "
              f"{share:.0%} within 3%; --bytes raw/{ratio:g}: {over} over budget, "
              f"{unreachable} below the smallest container")


def audio_items(folder: Path, block: int) -> list[np.ndarray]:
    import soundfile as sf
    clips = [sf.read(str(f), dtype="int32", always_2d=True)[0]
             for f in data.find_recordings([folder], data.AUDIO_SUFFIXES)]
    if not block:
        return clips
    return [clip[i:i + block] for clip in clips for i in range(0, len(clip) - block + 1, block)]


def run_audio(args) -> int:
    codec = load_codec(args.vr)
    items = audio_items(args.audio, args.block)
    if not items:
        print(f"error: no audio clips in {args.audio}", file=sys.stderr)
        return 2
    sizes = [np.mean([len(codec.compress(a, 48000, Target(level=k))) for a in items])
             for k in (0, codec.levels - 1)]
    unit = f"{args.block}-sample blocks" if args.block else "clips"
    print(f"{codec.name} ({codec.levels} levels) on {len(items)} {unit} of {args.audio}: "
          f"range in bytes {sizes[1] / sizes[0]:.1f}x "
          f"({raw_bytes(items[0]) / sizes[0]:.0f}:1 .. {raw_bytes(items[0]) / sizes[1]:.0f}:1)")
    print_rate_control(lambda a, t: codec.compress(a, 48000, t), items, args.ratios)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vr", required=True, help="variable-rate checkpoint (file or zoo name)")
    parser.add_argument("--fixed", nargs="*", default=[], help="fixed-λ checkpoints")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--limit", type=int, default=0, help="use the first N images only")
    parser.add_argument("--every", type=int, default=2, help="measure every N-th level")
    parser.add_argument("--ratios", type=float, nargs="*", default=[200, 400, 800, 1600])
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--examples", type=Path, help="PNG: the first image at four levels")
    parser.add_argument("--audio", type=Path, help="audio clips: rate control of an audio codec")
    parser.add_argument("--block", type=int, default=0, help="audio: code N-sample blocks")
    args = parser.parse_args()
    if args.audio:
        return run_audio(args)
    files = data.find_recordings([args.images], data.IMAGE_SUFFIXES)
    images = [data.read_image(f) for f in files[:args.limit or None]]
    if not images:
        print(f"error: no images in {args.images}", file=sys.stderr)
        return 2
    vr = load_codec(args.vr)
    levels = sorted(set(range(0, vr.levels, args.every)) | {vr.levels - 1})
    curve = [curve_point(vr, images, Target(level=k))
             for k in tqdm(levels, desc=f"{vr.name} levels", unit="level")]
    fixed = []
    for name in tqdm(args.fixed, desc="fixed-λ models", unit="model"):
        codec = load_codec(name)
        fixed.append((codec.name, codec.config.get("lmbda"), *curve_point(codec, images, Target())))
    print(f"\n{vr.name} ({vr.levels} levels) on {len(images)} images of {args.images}")
    print(f"{'point':>14} {'bpp':>8} {'ratio':>9} {'PSNR':>7}")
    for k, (bpp, ratio, q) in zip(levels, curve):
        print(f"{'level ' + str(k):>14} {bpp:8.4f} {ratio:7.0f}:1 {q:7.2f}")
    print(f"range in bytes: {curve[-1][0] / curve[0][0]:.1f}x "
          f"({curve[0][1]:.0f}:1 .. {curve[-1][1]:.0f}:1)")
    for name, lmbda, bpp, ratio, q in fixed:
        print(f"{name:>14} {bpp:8.4f} {ratio:7.0f}:1 {q:7.2f}   (λ {lmbda})")
    if len(fixed) >= 2:
        delta = bd_rate([f[2] for f in fixed], [f[4] for f in fixed],
                        [c[0] for c in curve], [c[2] for c in curve])
        print(f"BD-rate of the variable-rate model vs the fixed-λ models: {delta:+.1f}% "
              "(target: <= +5%)")
    print_rate_control(lambda im, t: vr.compress(im, target=t), images, args.ratios)
    if args.plot:
        plot(args.plot, vr.name, curve, fixed)
        print(f"wrote {args.plot}")
    if args.examples:
        side_by_side(args.examples, vr, images[0])
        print(f"wrote {args.examples}")
    return 0


def side_by_side(path: Path, codec, image: np.ndarray) -> None:
    """The original and its decodes at four levels, a 512² centre crop each, labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    levels = np.linspace(0, codec.levels - 1, 4).round().astype(int)
    h, w = image.shape[:2]
    top, left = max(0, h // 2 - 256), max(0, w // 2 - 256)
    crop = (slice(top, top + 512), slice(left, left + 512))
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.4))
    axes[0].imshow(image[crop])
    axes[0].set_title("original")
    for ax, level in zip(axes[1:], levels):
        stream = codec.compress(image, target=Target(level=int(level)))
        decoded = codec.decompress(stream)
        ax.imshow(decoded[crop])
        ax.set_title(f"level {level}: {raw_bytes(image) / len(stream):.0f}:1, "
                     f"{psnr(image, decoded):.1f} dB", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def plot(path: Path, name: str, curve, fixed) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([c[0] for c in curve], [c[2] for c in curve], "o-", ms=3, label=f"{name} (levels)")
    ax.plot([f[2] for f in fixed], [f[4] for f in fixed], "s", label="fixed-λ models")
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
