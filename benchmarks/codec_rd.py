"""Rate-distortion benchmark: DANCE image codecs vs best-tuned resize+JPEG and resize+WebP.

For every frame and DANCE checkpoint, the real container bytes set a byte budget. For that budget
JPEG and WebP get their best shot (baselines/image.py, as the image_baseline_encode node): every
downscale factor the search reaches, the highest quality whose container fits the budget
(bisection), decoded and upsampled back with bicubic; the best PSNR over scales is reported.
Ratios are raw bytes (H*W*3 uint8) / compressed bytes, containers' headers included.

With several checkpoints, they are ordered by their training lmbda and the script checks that a
higher lmbda gives more bytes and a higher PSNR (the acceptance item on monotonic lmbda).

The optional audio section (--audio) measures an audio checkpoint on held-out simulated clips
(seeds never used in training) as SNR of the DC-free signal at its compression ratio, next to
Opus and MP3 (PyAV) at their lowest bitrates, which cannot go as low.

    python benchmarks/codec_rd.py                              # the sample recording's 8 frames
    python benchmarks/codec_rd.py --images DIR --checkpoints a.pt b.pt c.pt --plot rd.png
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baselines.image import BaselineError, fit_budget  # noqa: E402
from dance import data, zoo  # noqa: E402
from dance.codec import load_codec  # noqa: E402
from evaluation.image_quality import psnr  # noqa: E402

DEFAULT_VRS = REPO.parent / "shared" / "data" / "aea" / "recording.vrs"
CONTEXT_RATIOS = (100, 200, 400, 800, 1600, 3200)


def best_resize_codec(frame: np.ndarray, fmt: str, budget: int) -> tuple[float, int, float, int] | None:
    """(psnr, bytes, scale, quality) of the best resize+fmt encoding within ``budget`` bytes."""
    try:
        best = fit_budget(frame, fmt.lower(), budget)
    except BaselineError:
        return None
    return best.psnr, len(best.data), best.scale, best.quality


def load_frames(vrs: Path | None, images: Path | None) -> list[tuple[str, np.ndarray]]:
    if images is not None:
        files = data.find_recordings([images], data.IMAGE_SUFFIXES)
        return [(f.name, data.read_image(f)) for f in files]
    provider = data.open_vrs(vrs)
    count = data.vrs_frame_count(vrs)
    return [(f"{vrs.name}#{i}", data.read_vrs_frame(provider, vrs, i)) for i in range(count)]


def _label(name: str) -> str:
    """A zoo name as is; a checkpoint file as parent/stem (runs/x/final.pt -> x/final)."""
    path = Path(name)
    return f"{path.parent.name}/{path.stem}" if path.is_file() else name


@dataclass
class Row:
    codec: str
    frame: str
    bytes: int
    ratio: float
    psnr: float
    detail: str = ""


def run_images(checkpoints: list[str], frames: list[tuple[str, np.ndarray]]
               ) -> tuple[list[Row], list[tuple[str, float]]]:
    rows: list[Row] = []
    lambdas = []
    for name in checkpoints:
        codec = load_codec(name)
        label = f"DANCE {_label(name)}"
        lambdas.append((label, float(codec.config.get("lmbda", float("nan")))))
        for frame_name, frame in tqdm(frames, desc=label, unit="frame"):
            raw = frame.size * frame.itemsize
            stream = codec.compress(frame)
            recon = codec.decompress(stream)
            rows.append(Row(label, frame_name, len(stream), raw / len(stream), psnr(frame, recon)))
            for fmt in ("JPEG", "WEBP"):
                best = best_resize_codec(frame, fmt, len(stream))
                if best is None:
                    rows.append(Row(f"resize+{fmt} @ {label}", frame_name, 0, float("nan"), float("nan"),
                                    "no fit"))
                else:
                    score, size, scale, q = best
                    rows.append(Row(f"resize+{fmt} @ {label}", frame_name, size, raw / size, score,
                                    f"1/{scale:g} q{q}"))
    return rows, lambdas


def context_curves(frames: list[tuple[str, np.ndarray]]) -> dict[str, list[tuple[float, float]]]:
    """Mean (ratio, PSNR) of best-tuned resize+JPEG/WebP at fixed target ratios, for the plot."""
    curves: dict[str, list[tuple[float, float]]] = {"JPEG": [], "WEBP": []}
    for fmt in curves:
        for target in tqdm(CONTEXT_RATIOS, desc=f"resize+{fmt} curve", unit="ratio"):
            points = []
            for _, frame in frames:
                best = best_resize_codec(frame, fmt, int(frame.size / target))
                if best:
                    points.append((frame.size / best[1], best[0]))
            if len(points) == len(frames):
                curves[fmt].append((float(np.mean([p[0] for p in points])),
                                    float(np.mean([p[1] for p in points]))))
    return curves


def summarize(rows: list[Row]) -> list[tuple[str, int, float, float, float]]:
    """Per codec: frames, mean bytes, ratio of total raw to total bytes, mean PSNR."""
    out = []
    for codec in dict.fromkeys(r.codec for r in rows):
        mine = [r for r in rows if r.codec == codec and r.bytes]
        if not mine:
            out.append((codec, 0, float("nan"), float("nan"), float("nan")))
            continue
        total_raw = sum(r.ratio * r.bytes for r in mine)
        out.append((codec, len(mine), float(np.mean([r.bytes for r in mine])),
                    total_raw / sum(r.bytes for r in mine), float(np.mean([r.psnr for r in mine]))))
    return out


def check_monotonic_lambda(summary, lambdas: list[tuple[str, float]]) -> bool | None:
    if len(lambdas) < 3:
        return None
    by_name = {s[0]: s for s in summary}
    ordered = sorted(lambdas, key=lambda x: x[1])
    sizes = [by_name[n][2] for n, _ in ordered]
    scores = [by_name[n][4] for n, _ in ordered]
    ok = all(a < b for a, b in zip(sizes, sizes[1:])) and all(a < b for a, b in zip(scores, scores[1:]))
    print("\nlmbda check (higher lmbda -> more bytes and higher PSNR):")
    for (n, lm), size, score in zip(ordered, sizes, scores):
        print(f"  lmbda {lm:10.4g}  {size:10.0f} B  {score:6.2f} dB  {n}")
    print(f"  monotonic: {'yes' if ok else 'NO'}")
    return ok


def plot(rows: list[Row], curves, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    markers = {"JPEG": "s", "WEBP": "^"}
    for fmt, curve in curves.items():
        if curve:
            ax.plot([c[0] for c in curve], [c[1] for c in curve], "--", marker=markers[fmt], alpha=0.6,
                    label=f"best resize+{fmt} (mean, fixed ratios)")
    for codec in dict.fromkeys(r.codec for r in rows):
        mine = [r for r in rows if r.codec == codec and r.bytes]
        if not mine:
            continue
        style = "o" if codec.startswith("DANCE") else ("s" if "JPEG" in codec else "^")
        ax.scatter([r.ratio for r in mine], [r.psnr for r in mine], marker=style, s=22, alpha=0.8,
                   label=codec)
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio (raw bytes / compressed bytes)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("Rate-distortion on Aria RGB frames")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"plot: {out}")


# ----------------------------------------------------------------------------- audio

def _pyav_bytes_and_snr(audio: np.ndarray, codec_name: str, bitrate: int) -> tuple[int, float] | None:
    """Encode each channel as a mono stream (MP3 has at most 2 channels; a fair per-channel setup
    for Opus too), decode, and measure SNR against the DC-free signal."""
    import av

    from dance.preprocess import AudioPreprocessor

    pre = AudioPreprocessor(audio.shape[1])
    reference = pre.inverse(pre.forward(audio), "float64")  # DC-free counts, like DANCE's output
    full_scale = np.abs(reference).max() + 1.0
    total, decoded = 0, []
    for ch in range(audio.shape[1]):
        pcm = (reference[:, ch] / full_scale).astype(np.float32)
        buf = io.BytesIO()
        fmt = "mp3" if codec_name == "libmp3lame" else "ogg"
        with av.open(buf, "w", format=fmt) as container:
            stream = container.add_stream(codec_name, rate=48000 if codec_name == "libopus" else 24000)
            stream.bit_rate = bitrate
            stream.layout = "mono"
            rate = stream.rate
            x = pcm if rate == 48000 else _resample(pcm, 48000, rate)
            frame = av.AudioFrame.from_ndarray(x[None], format="flt", layout="mono")
            frame.rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        total += len(buf.getvalue())
        buf.seek(0)
        with av.open(buf) as container:
            y = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        y = y if rate == 48000 else _resample(y, rate, 48000)
        decoded.append(_align(pcm, y) * full_scale)
    rec = np.stack(decoded, axis=1)
    return total, 10 * math.log10(np.sum(reference**2) / max(np.sum((reference - rec) ** 2), 1e-30))


def _resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    from scipy.signal import resample_poly

    g = math.gcd(src, dst)
    return resample_poly(x, dst // g, src // g).astype(np.float32)


def _align(ref: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Remove the codec delay (best lag up to 4096 samples by cross-correlation), trim to length."""
    from scipy.signal import correlate

    n = len(ref)
    cc = correlate(y[: n + 4096], ref, mode="valid")
    lag = int(np.argmax(cc)) if len(cc) else 0
    out = y[lag: lag + n]
    return np.pad(out, (0, n - len(out)))


def run_audio(checkpoint: str, clips: int, seconds: float, first_seed: int) -> list[Row]:
    from dance import simulate

    codec = load_codec(checkpoint)
    rows: list[Row] = []
    for seed in tqdm(range(first_seed, first_seed + clips), desc="audio clips", unit="clip"):
        audio = simulate.simulate_clip(seed, seconds)
        raw = audio.size * 4
        stream = codec.compress(audio, 48000)
        recon = codec.decompress(stream).astype(np.float64)
        pre = codec.preprocessor
        reference = pre.inverse(pre.forward(audio), "int32").astype(np.float64)  # DC-free counts
        snr = 10 * math.log10(np.sum(reference**2) / max(np.sum((reference - recon) ** 2), 1e-30))
        rows.append(Row(f"DANCE {_label(checkpoint)}", f"sim#{seed}", len(stream), raw / len(stream), snr))
        for name, rate in (("libopus", 6000), ("libmp3lame", 8000)):
            result = _pyav_bytes_and_snr(audio, name, rate)
            if result:
                rows.append(Row(f"{name} {rate // 1000} kb/s/ch", f"sim#{seed}", result[0], raw / result[0],
                                result[1]))
    return rows


# ----------------------------------------------------------------------------- main

def print_table(title: str, summary, quality: str) -> None:
    print(f"\n{title}")
    print(f"{'codec':44s} {'items':>5s} {'mean bytes':>11s} {'ratio':>8s} {quality:>9s}")
    for codec, n, size, ratio, score in summary:
        print(f"{codec:44s} {n:5d} {size:11.0f} {ratio:8.1f} {score:9.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vrs", type=Path, default=DEFAULT_VRS,
                        help="VRS recording whose RGB frames are used")
    parser.add_argument("--images", type=Path, help="folder of PNG/JPG images instead of --vrs")
    parser.add_argument("--checkpoints", nargs="+", default=["aria-image"],
                        help="image checkpoints or zoo names")
    parser.add_argument("--frames", type=int, nargs="+",
                        help="only these frame indices (e.g. the held-out 7)")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--plot", type=Path, default=Path("runs/codec_rd.png"))
    parser.add_argument("--no-curves", action="store_true", help="skip the fixed-ratio JPEG/WebP curves")
    parser.add_argument("--audio", help="also benchmark this audio checkpoint (e.g. aria-audio)")
    parser.add_argument("--audio-clips", type=int, default=4)
    parser.add_argument("--audio-seconds", type=float, default=6.0)
    parser.add_argument("--audio-seed", type=int, default=1_000_000, help="first simulator seed (held out)")
    args = parser.parse_args(argv)
    try:
        frames = load_frames(None if args.images else args.vrs, args.images)
        if args.frames:
            frames = [frames[i] for i in args.frames if 0 <= i < len(frames)]
        frames = frames[: args.max_frames]
        if not frames:
            raise data.DataError("no frames selected (check --frames / --max-frames)")
        rows, lambdas = run_images(args.checkpoints, frames)
    except (data.DataError, zoo.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nper frame ({len(frames)} frames of {frames[0][1].shape}):")
    for r in rows:
        print(f"  {r.codec:44s} {r.frame:22s} {r.bytes:7d} B {r.ratio:8.1f}:1 {r.psnr:6.2f} dB {r.detail}")
    summary = summarize(rows)
    print_table("images (ratio = total raw bytes / total compressed bytes; PSNR averaged over frames)",
                summary, "PSNR dB")
    check_monotonic_lambda(summary, lambdas)
    curves = {} if args.no_curves else context_curves(frames)
    for fmt, curve in curves.items():
        print(f"best resize+{fmt}: " + ", ".join(f"{r:.0f}:1 {p:.2f} dB" for r, p in curve))
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, curves, args.plot)
    if args.audio:
        audio_rows = run_audio(args.audio, args.audio_clips, args.audio_seconds, args.audio_seed)
        print_table("audio (held-out simulated clips; SNR of the DC-free signal)", summarize(audio_rows),
                    "SNR dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
