"""A decoded example beside its original: two microphones' waveforms in one 4096-sample block and
the GCC-PHAT correlation of that pair, original vs an audio codec with and without its channel
alignment, at one ratio (the stream blocks the graphs send).

    python benchmarks/audio_example.py [--clip runs/sim-real-eval/sim_4000000.wav]
        [--codec aria-audio-spatial] [--ratio 600] [--block-index 6] [--mics 0 5]
        [--out docs/img/aria-audio-spatial.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BLOCK = 4096


def decode_stream(codec, raw: np.ndarray, rate: int, ratio: float) -> tuple[np.ndarray, int]:
    from dance.preprocess import full_scale
    from dance.targets import Target
    encoder = codec.audio_encoder(rate, blocks=True)
    coded = [encoder.encode(raw[i:i + BLOCK], Target(ratio=ratio))
             for i in range(0, len(raw), BLOCK)]
    decoded = np.concatenate([codec.decompress(c) for c in coded])
    return full_scale(decoded), sum(map(len, coded))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", type=Path, default=ROOT / "runs" / "sim-real-eval" / "sim_4000000.wav")
    parser.add_argument("--codec", default="aria-audio-spatial")
    parser.add_argument("--ratio", type=float, default=600.0)
    parser.add_argument("--block-index", type=int, default=6)
    parser.add_argument("--mics", type=int, nargs=2, default=[0, 5])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "aria-audio-spatial.png")
    args = parser.parse_args()
    if not args.clip.is_file():
        print(f"error: {args.clip}: not found (make it as benchmarks/aria_audio_targets.py says)",
              file=sys.stderr)
        return 2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    from dance import zoo
    from dance.align import gcc_phat
    from dance.codec import Codec
    from dance.preprocess import notch_filter

    raw, rate = sf.read(str(args.clip), dtype="int32", always_2d=True)
    reference = notch_filter(raw, rate)
    ckpt = zoo.load_checkpoint(zoo.resolve_checkpoint(args.codec))
    aligned = Codec.from_checkpoint(ckpt)
    plain = Codec.from_checkpoint({**ckpt, "config": {k: v for k, v in ckpt["config"].items()
                                                      if k != "align"}})
    runs = {"original": (reference, raw.nbytes)}
    runs[f"{aligned.name}"] = decode_stream(aligned, raw, rate, args.ratio)
    runs["same weights, no alignment"] = decode_stream(plain, raw, rate, args.ratio)
    start = args.block_index * BLOCK
    a, b = args.mics
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    t = np.arange(1024) / rate * 1e3
    for name, (signal, size) in runs.items():
        label = name if name == "original" else f"{name} ({raw.nbytes / size:.0f}:1)"
        window = signal[start:start + BLOCK]
        axes[0].plot(t, window[1500:2524, a], lw=0.8, label=label)
        axes[1].plot(t, window[1500:2524, b], lw=0.8, label=label)
        curve = gcc_phat(window, [(a, b)], 30, rate, upsample=4)[:, 0]
        lags = np.arange(len(curve)) / 4 - 30
        axes[2].plot(lags, curve / max(curve.max(), 1e-12), lw=1, label=label)
    for ax, title in ((axes[0], f"mic {a}"), (axes[1], f"mic {b}")):
        ax.set(title=f"{title}, 21 ms of block {args.block_index}", xlabel="ms", ylabel="full scale")
    axes[2].set(title=f"GCC-PHAT, mics {a}-{b} (100 Hz–8 kHz)", xlabel="lag (samples)",
                ylabel="normalised correlation")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"{args.clip.name}: original vs {args.codec} at {args.ratio:g}:1, 4096-sample blocks")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
