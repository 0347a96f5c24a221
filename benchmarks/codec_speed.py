"""Encoder + entropy coding throughput of the DANCE codecs on ONE CPU thread, beside WebP.

Images: MP/s on 1408×1408 RGB frames (the Aria camera), DANCE `aria-image` (preprocess, encoder,
quantization, rANS, container) vs WebP quality 1, method 0 (PIL), measured in the same run.
Audio: × real time for 7-channel 48 kHz audio through the streaming `aria-audio` encoder, in the
runtime's 4096-sample blocks and in 1 s blocks. Targets: images ≥ 30 MP/s, audio ≥ 100× real time.
Uses the real AEA sample (../shared/data/aea/recording.vrs) when present, else synthetic signals;
uses the trained default checkpoints when present, else random-init weights (said in the output:
entropy coding speed then is not representative, since untrained latents are not sparse).

    python benchmarks/codec_speed.py [--repeats 5] [--vrs PATH]
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dance.models import build_model  # noqa: E402
from dance.codec import PRECISIONS  # noqa: E402
from dance.zoo import (CheckpointError, load_codec, load_config, resolve_checkpoint,  # noqa: E402
                       save_checkpoint)

DEFAULT_VRS = ROOT.parent / "shared" / "data" / "aea" / "recording.vrs"
SIDE, RATE = 1408, 48000


def codecs_or_random(name: str, tmp: Path):
    """{precision: Codec} of the trained default checkpoint, else of random-init weights."""
    try:
        path, weights = resolve_checkpoint(name), "trained"
    except CheckpointError:
        torch.manual_seed(0)
        config = load_config(name)
        path, weights = tmp / f"{name}.pt", "RANDOM-INIT (no trained checkpoint)"
        save_checkpoint(path, build_model(config), config)
    return {p: load_codec(path, precision=p) for p in PRECISIONS}, weights


def sample_data(vrs: Path) -> tuple[list[np.ndarray], np.ndarray, str]:
    if vrs.is_file():
        from dance.data import open_vrs, read_vrs_audio, read_vrs_frame
        provider = open_vrs(vrs)
        frames = [read_vrs_frame(provider, vrs, i) for i in range(4)]
        return frames, read_vrs_audio(provider, vrs), f"real AEA sample {vrs.name}"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    base = np.stack([xx // 6, yy // 6, (xx + yy) // 11], -1) % 256
    frames = [(base + rng.integers(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
              for _ in range(4)]
    t = np.arange(16384)[:, None]
    audio = (1e6 * np.sin(2 * np.pi * 440 * t / RATE + np.arange(7)) + 4e7
             + rng.normal(0, 1e5, (16384, 7))).astype(np.int32)
    return frames, audio, "synthetic signals (AEA sample not found)"


def timed(fn, items, repeats: int) -> float:
    """Median over repeats of the total time to process all items (after one warm-up)."""
    for item in items[:1]:
        fn(item)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def webp(frame: np.ndarray) -> int:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "WEBP", quality=1, method=0)
    return buf.tell()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vrs", type=Path, default=DEFAULT_VRS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    frames, audio, source = sample_data(args.vrs)
    with tempfile.TemporaryDirectory() as tmp:
        image_codecs, image_weights = codecs_or_random("aria-image", Path(tmp))
        audio_codecs, audio_weights = codecs_or_random("aria-audio", Path(tmp))

    print(f"data: {source}; 1 CPU thread; torch {torch.__version__}")
    print(f"aria-image weights: {image_weights}; aria-audio weights: {audio_weights}\n")

    megapixels = len(frames) * frames[0].shape[0] * frames[0].shape[1] / 1e6
    raw = frames[0].nbytes
    rows, image_speed = [], {}
    for precision, codec in image_codecs.items():
        with torch.inference_mode():
            t_dance = timed(codec.compress, frames, args.repeats)
            x = [codec.preprocessor.forward(f, codec.stride, codec.input_pool)
                 .to(codec.precision).contiguous(memory_format=torch.channels_last)
                 for f in frames]
            t_net = timed(codec.encoder, x, args.repeats)
        image_speed[precision] = megapixels / t_dance
        coded = np.mean([len(codec.compress(f)) for f in frames])
        rows.append((f"DANCE aria-image {precision} (full compress)", megapixels / t_dance,
                     "MP/s", raw / coded))
        rows.append(("  of which encoder network (pooled input)", megapixels / t_net, "MP/s", None))
    t_webp = timed(webp, frames, args.repeats)
    rows.append(("WebP q1 m0 (PIL)", megapixels / t_webp, "MP/s",
                 raw / np.mean([webp(f) for f in frames])))

    for precision, codec in audio_codecs.items():
        for block in (4096, RATE):
            repeats = max(1, int(np.ceil(2 * block / len(audio))))
            long_audio = np.concatenate([audio] * repeats)
            blocks = [long_audio[i:i + block]
                      for i in range(0, len(long_audio) - block + 1, block)]
            seconds = len(blocks) * block / RATE

            def encode_stream(items, codec=codec):
                session = codec.audio_encoder(RATE)
                return [session.encode(b) for b in items]
            t_audio = timed(encode_stream, [blocks], args.repeats)
            ratio = sum(b.nbytes for b in blocks) / sum(len(c) for c in encode_stream(blocks))
            rows.append((f"DANCE aria-audio {precision}, {block}-sample blocks",
                         seconds / t_audio, "× real time", ratio))

    print(f"{'codec':42} {'throughput':>12}  {'unit':12} {'ratio (raw/coded)':>18}")
    for name, speed, unit, ratio in rows:
        r = f"{ratio:.1f}:1" if ratio else ""
        print(f"{name:42} {speed:12.2f}  {unit:12} {r:>18}")
    webp_speed = megapixels / t_webp
    for precision, speed in image_speed.items():
        print(f"\nimage {precision}: DANCE {speed:.1f} MP/s = {speed / webp_speed:.2f}× WebP q1 m0 "
              f"(target ≥ 30 MP/s: {'met' if speed >= 30 else 'NOT met'})", end="")
    print()
    best_audio = max(r[1] for r in rows if r[2] == "× real time")
    print(f"audio: best {best_audio:.1f}× real time (target ≥ 100×: "
          f"{'met' if best_audio >= 100 else 'NOT met'})")
    if "RANDOM" in image_weights + audio_weights:
        print("note: random-init weights give dense latents; trained codecs code fewer symbols "
              "and compress far better, so ratios above are not the codec's.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
