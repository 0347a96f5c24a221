"""The Aria image codec's targets, measured in one run and printed as met / not met.

1. Held-out Aria frames (default: the sample recording's 8 frames, never trained on): the codec
   at `--ratio 300` and `--ratio 800` (and the rest of --curve, for BD-rates), RR+JPEG, RR+WebP and
   RR+AVIF at the same bytes per frame (`dance eval image --curve`). Target: PSNR ≥ RR+WebP + 1 dB
   and ≥ RR+AVIF + 0.5 dB, frame by frame on average, at both ratios.
2. Kodak (24 images, evaluation only): the same curve; BD-rate vs RR+WebP, and the codec at
   0.12 bpp (`--bytes`, per image) beside CompressAI's published bmshj2018-factorized
   (0.123 bpp / 26.91 dB) and bmshj2018-hyperprior (0.131 / 27.58) points.
3. Speed, one CPU thread, same run: encoder + entropy coding (`Codec.compress` on 1408² frames)
   against WebP quality 1, method 0 (benchmarks/codec_speed.py's timing), with the encoder run by
   PyTorch and by ONNX Runtime (float32 both); the faster one counts. Target: ≥ 1.0×.

    python benchmarks/aria_image_targets.py [--codec aria-image] [--vrs REC.vrs] [--kodak DIR]
                                            [--out runs/targets] [--skip-kodak]
Reports (JSON), plots (PNG) and a summary (targets.json) go to --out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.codec_speed import race, webp  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
TARGET_RATIOS = (300.0, 800.0)
MARGIN_DB = {"RR+WebP": 1.0, "RR+AVIF": 0.5}
KODAK_BPP = 0.12
ENGINES = ("torch", "onnxruntime")  # float32 encoder runners (dance.codec.ENGINES); the faster counts
PUBLISHED = (("bmshj2018-factorized (CompressAI, q1)", 0.123, 26.91),
             ("bmshj2018-hyperprior (CompressAI, q1)", 0.131, 27.58))


def eval_curve(codec: str, data: str, ratios: str, report: Path, plot: Path) -> dict:
    command = [sys.executable, "-m", "pipeline.cli", "eval", "image", "--codec", codec,
               "--data", data, "--curve", ratios, "--report", str(report), "--plot", str(plot)]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    return json.loads(report.read_text())


def rows_at(report: dict, ratio: float) -> dict[str, dict]:
    return {r["method"].split(" @ ")[0]: r for r in report["methods"] if r["target_ratio"] == ratio}


def ratio_targets(report: dict) -> list[dict]:
    checks = []
    for ratio in TARGET_RATIOS:
        rows = rows_at(report, ratio)
        codec = next(r for name, r in rows.items() if name.startswith("DANCE"))
        for name, margin in MARGIN_DB.items():
            gain = rows[name]["codec_minus_this_psnr_db"]
            checks.append({"target": f"{ratio:g}:1 PSNR >= {name} + {margin} dB",
                           "reached_ratio": codec["compression_ratio"],
                           "codec_psnr_db": codec["psnr_db"], "baseline_psnr_db": rows[name]["psnr_db"],
                           "gain_db": gain, "met": gain is not None and gain >= margin})
    return checks


def kodak_point(codec_name: str, kodak: Path) -> dict:
    """The codec at 0.12 bpp on every Kodak image (a byte budget each), mean bpp and PSNR."""
    from dance.codec import load_codec
    from dance.data import find_recordings, read_image
    from dance.targets import Target
    from evaluation.image_quality import psnr

    codec = load_codec(codec_name)
    bpp, quality = [], []
    for path in find_recordings([kodak], {".png"}):
        image = read_image(path)
        pixels = image.shape[0] * image.shape[1]
        data = codec.compress(image, target=Target(bytes=int(KODAK_BPP * pixels / 8)))
        bpp.append(8 * len(data) / pixels)
        quality.append(psnr(image, codec.decompress(data)))
    return {"bpp": float(np.mean(bpp)), "psnr_db": float(np.mean(quality)), "images": len(bpp)}


def speed(codec_name: str, vrs: Path, repeats: int) -> dict:
    from dance.codec import load_codec
    from dance.data import open_vrs, read_vrs_frame

    torch.set_num_threads(1)
    codecs = {engine: load_codec(codec_name, engine=engine) for engine in ENGINES}
    provider = open_vrs(vrs)
    frames = [read_vrs_frame(provider, vrs, i) for i in range(4)]
    jobs = {engine: (lambda c=codec: [c.compress(f) for f in frames]) for engine, codec in codecs.items()}
    best = race({**jobs, "webp": lambda: [webp(f) for f in frames]}, repeats)
    pixels = len(frames) * frames[0].shape[0] * frames[0].shape[1] / 1e6
    fastest = min(ENGINES, key=best.get)
    return {"engine": fastest, "codec_mp_s": pixels / best[fastest], "webp_mp_s": pixels / best["webp"],
            "speed_vs_webp": best["webp"] / best[fastest],
            "mp_s_per_engine": {e: pixels / best[e] for e in ENGINES}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codec", default="aria-image")
    parser.add_argument("--vrs", type=Path, default=SHARED / "aea" / "recording.vrs")
    parser.add_argument("--kodak", type=Path, default=SHARED / "eval" / "kodak")
    parser.add_argument("--curve", default="200,300,500,800,1200,2000")
    parser.add_argument("--kodak-curve", default="100,150,200,300,500,800")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "targets")
    parser.add_argument("--skip-kodak", action="store_true")
    parser.add_argument("--speed-only", action="store_true", help="only the speed figure")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for path in [args.vrs] + ([] if args.skip_kodak else [args.kodak]):
        if not path.exists():
            print(f"error: {path}: not found (the shared data folder beside the repo)", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary: dict = {"codec": args.codec}
    if args.speed_only:
        s = speed(args.codec, args.vrs, args.repeats)
        print(json.dumps(s, indent=2))
        return 0
    aria = eval_curve(args.codec, str(args.vrs), args.curve, args.out / "aria.json", args.out / "aria.png")
    summary["aria"] = {"checks": ratio_targets(aria), "bd_rates": aria["bd_rate"]}
    if not args.skip_kodak:
        kodak = eval_curve(args.codec, str(args.kodak), args.kodak_curve, args.out / "kodak.json",
                           args.out / "kodak.png")
        summary["kodak"] = {"bd_rates": kodak["bd_rate"], "point": kodak_point(args.codec, args.kodak)}
    summary["speed"] = speed(args.codec, args.vrs, args.repeats)
    summary["seconds"] = round(time.monotonic() - started, 1)
    (args.out / "targets.json").write_text(json.dumps(summary, indent=2))

    print(f"\n== targets of {args.codec} ==")
    for check in summary["aria"]["checks"]:
        gain = "n/a" if check["gain_db"] is None else f"{check['gain_db']:+.2f} dB"
        print(f"{check['target']:<36} reached {check['reached_ratio']:.0f}:1, codec "
              f"{check['codec_psnr_db']:.2f} dB vs {check['baseline_psnr_db']:.2f} dB: {gain}  "
              f"{'MET' if check['met'] else 'NOT MET'}")
    for label, part in (("Aria", summary["aria"]), ("Kodak", summary.get("kodak"))):
        for bd in (part or {}).get("bd_rates", []):
            for key, what in (("psnr", "PSNR"), ("ms_ssim_db", "MS-SSIM")):
                value = bd[f"bd_rate_{key}_percent"]
                shown = f"n/a ({bd[f'bd_rate_{key}_missing']})" if value is None else f"{value:+.1f}%"
                print(f"{label} BD-rate ({what}) vs {bd['baseline']}: {shown}")
    if "kodak" in summary:
        point = summary["kodak"]["point"]
        print(f"Kodak at {KODAK_BPP} bpp: {point['bpp']:.3f} bpp, {point['psnr_db']:.2f} dB")
        for name, bpp, db in PUBLISHED:
            print(f"  published {name}: {bpp} bpp, {db} dB")
    s = summary["speed"]
    print(f"speed (1 thread): codec {s['codec_mp_s']:.1f} MP/s ({s['engine']}; "
          + ", ".join(f"{e} {v:.1f}" for e, v in s["mp_s_per_engine"].items())
          + f"), WebP q1 m0 {s['webp_mp_s']:.1f} MP/s: "
          f"{s['speed_vs_webp']:.2f}x  {'MET' if s['speed_vs_webp'] >= 1.0 else 'NOT MET'}")
    print(f"({summary['seconds']:.0f} s; {args.out / 'targets.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
