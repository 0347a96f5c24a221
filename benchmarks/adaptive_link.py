"""Adaptive vs fixed operating points on an emulated wireless link (issue: seed 001).

Runs graphs/adaptive_link.yaml (Aria RGB replay -> adapt -> encode | ZeroMQ | link_ack) inside a
private network namespace whose loopback tc tbf shapes to a bandwidth trace (seed 001's
Bluetooth range, 200 -> 80 -> 200 kB/s by default), once with the controller and once per fixed
level. Per strategy: deadline hit rate (a frame never acknowledged is a miss), mean PSNR of the
frames delivered (each frame re-coded offline at the level it was sent at, decoded, compared),
mean round trip; and the same per constant-bandwidth stretch, where the best fixed point in
hindsight is the one with the best PSNR among those meeting >= 95% of deadlines there.
Also measures what switching a level per frame costs the encoder (no reload).

    sudo python benchmarks/adaptive_link.py [--trace 200:15,80:15,200:15] [--deadline 250]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import linkshape  # noqa: E402

GRAPH = ROOT / "graphs" / "adaptive_link.yaml"
RECORDING = ROOT.parent / "shared" / "data" / "aea" / "recording.vrs"
WARMUP_S = 8.0          # at the trace's first rate before scoring starts (graph start-up)
HIT_FLOOR = 0.95


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trace", default="200:15,80:15,200:15", help="KBPS:SECONDS,...")
    p.add_argument("--deadline", type=float, default=250.0, help="round trip, ms")
    p.add_argument("--codec", default="aria-image")
    p.add_argument("--fixed", default="24,32,40,48,56,63",
                   help="fixed levels to compare (all: every level)")
    p.add_argument("--points", action="store_true",
                   help="adapt picks from the codec checkpoint's operating-point table "
                        "(benchmarks/slim_points.py) instead of giving byte budgets")
    p.add_argument("--speed", type=float, default=0.5,
                   help="replay speed: 1.0 = the camera's 20 fps; default 10 fps, what one "
                        "thread of this CPU encodes with the byte-budget search")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "adaptive_link")
    return p.parse_args()


def run_strategy(args, name: str, fixed: int | None, segments) -> list[dict]:
    """One graph run on the shaped link; its per-frame log with trace times."""
    log = args.out / f"{name}.csv"
    sets = [f"adapt.log={log}", f"adapt.plot={args.out / (name + '.png')}",
            f"adapt.deadline_ms={args.deadline}", f"encode.checkpoint={args.codec}",
            f"replay.speed={args.speed}", f"replay.path={RECORDING}"]
    if fixed is not None:
        sets.append(f"adapt.fixed_level={fixed}")
    elif args.points:
        sets.append(f"adapt.points={args.codec}")
    trace = [linkshape.Segment(WARMUP_S, segments[0].bytes_per_s), *segments]
    follower = linkshape.TraceFollower(trace)
    follower.start()
    duration = follower.duration + 2
    command = [sys.executable, "-m", "pipeline.cli", "run", str(GRAPH), "--quiet",
               "--duration", str(duration), *[a for s in sets for a in ("--set", s)]]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=duration + 180)
    follower.stop()
    if done.returncode != 0:
        raise SystemExit(f"error: {name}: dance run failed:\n{done.stderr[-2000:]}")
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    frames = []
    for row in rows:
        t = (int(row["t_ns"]) - int(follower.started_at * 1e9)) / 1e9 - WARMUP_S
        if 0 <= t < follower.duration - WARMUP_S:
            frames.append({"t": t, "seq": int(row["seq"]),
                           "stretch": follower.segment_at(t + WARMUP_S) - 1,
                           "level": int(row["level"]) if row["level"] else None,
                           "bytes": int(row["bytes"]) if row["bytes"] else None,
                           "latency_ms": float(row["latency_ms"]) if row["latency_ms"] else None,
                           "bandwidth": float(row["bandwidth"])})
    return frames


class Quality:
    """PSNR of recording frame i coded at level L (the codec is deterministic), cached."""

    def __init__(self, codec_name: str):
        from dance.codec import load_codec
        from dance.data import open_vrs, read_vrs_frame, vrs_frame_count

        self.codec = load_codec(codec_name)
        provider = open_vrs(RECORDING)
        self.frames = [read_vrs_frame(provider, RECORDING, i)
                       for i in range(vrs_frame_count(RECORDING))]
        self.cache: dict[tuple[int, int], float] = {}

    def psnr(self, seq: int, level: int) -> float:
        import numpy as np

        from dance.targets import Target

        key = ((seq - 1) % len(self.frames), level)
        if key not in self.cache:
            original = self.frames[key[0]]
            decoded = self.codec.decompress(self.codec.compress(original, target=Target(level=level)))
            mse = float(np.mean((decoded.astype(np.float64) - original) ** 2))
            self.cache[key] = 10 * np.log10(255 ** 2 / max(mse, 1e-10))
        return self.cache[key]


def score(frames: list[dict], quality: Quality, deadline: float) -> dict:
    delivered = [f for f in frames if f["level"] is not None]
    hits = sum(f["latency_ms"] is not None and f["latency_ms"] <= deadline for f in frames)
    psnrs = [quality.psnr(f["seq"], f["level"]) for f in delivered]
    latencies = [f["latency_ms"] for f in delivered]
    return {"frames": len(frames), "hit_rate": hits / len(frames) if frames else 0.0,
            "psnr_db": statistics.fmean(psnrs) if psnrs else float("nan"),
            "latency_ms": statistics.fmean(latencies) if latencies else float("nan")}


def switch_cost_ms(codec_name: str, frames: int = 24) -> tuple[float, float]:
    """Encoder ms per frame at one level and with the level changing every frame (one thread)."""
    import torch

    from dance.codec import load_codec
    from dance.data import open_vrs, read_vrs_frame
    from dance.targets import Target

    torch.set_num_threads(1)
    codec = load_codec(codec_name)
    frame = read_vrs_frame(open_vrs(RECORDING), RECORDING, 0)
    top = codec.levels - 1

    def timed(levels) -> float:
        started = time.perf_counter()
        for level in levels:
            codec.compress(frame, target=Target(level=level))
        return (time.perf_counter() - started) / len(levels) * 1000

    timed([top] * 4)
    levels = [top // 2, top] * (frames // 2)
    steady = statistics.median(timed([top // 2] * frames) for _ in range(3))
    switching = statistics.median(timed(levels) for _ in range(3))
    return steady, switching


def main() -> int:
    args = parse_args()
    reason = linkshape.unavailable()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    if not RECORDING.is_file():
        print(f"error: {RECORDING}: the sample recording is needed (../shared beside the repo)",
              file=sys.stderr)
        return 2
    if not linkshape.inside():
        return linkshape.run_inside([sys.executable, *sys.argv]).returncode
    segments = linkshape.parse_trace(args.trace)
    args.out.mkdir(parents=True, exist_ok=True)
    levels = range(Quality(args.codec).codec.levels) if args.fixed == "all" else \
        [int(L) for L in args.fixed.split(",")]
    strategies = [("adaptive", None)] + [(f"level {L}", L) for L in levels]
    from tqdm import tqdm

    runs = {}
    for name, fixed in tqdm(strategies, desc="strategies", unit="run"):
        runs[name] = run_strategy(args, name.replace(" ", "-"), fixed, segments)
    quality = Quality(args.codec)
    stretches = range(len(segments))
    table = {name: {"all": score(frames, quality, args.deadline),
                    **{k: score([f for f in frames if f["stretch"] == k], quality, args.deadline)
                       for k in stretches}}
             for name, frames in runs.items()}

    kbps = [f"{s.bytes_per_s / 1000:.0f}" for s in segments]
    print(f"\ntrace {args.trace} (kB/s:s), deadline {args.deadline:.0f} ms, codec {args.codec}, "
          f"replay speed {args.speed}\n")
    header = ["strategy", "hit rate", "mean PSNR dB", "mean latency ms",
              *[f"stretch {k + 1} ({kbps[k]} kB/s) hit / PSNR" for k in stretches]]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, rows in table.items():
        cells = [name, f"{rows['all']['hit_rate']:.1%}", f"{rows['all']['psnr_db']:.2f}",
                 f"{rows['all']['latency_ms']:.0f}",
                 *[f"{rows[k]['hit_rate']:.0%} / {rows[k]['psnr_db']:.2f}" for k in stretches]]
        print("| " + " | ".join(cells) + " |")

    adaptive = table["adaptive"]
    fixed_names = [n for n in table if n != "adaptive"]
    print()
    gaps = []
    for k in stretches:
        meeting = [n for n in fixed_names if table[n][k]["hit_rate"] >= HIT_FLOOR]
        if not meeting:
            print(f"stretch {k + 1}: no fixed point meets {HIT_FLOOR:.0%} of deadlines")
            continue
        best = max(meeting, key=lambda n: table[n][k]["psnr_db"])
        gap = table[best][k]["psnr_db"] - adaptive[k]["psnr_db"]
        gaps.append(gap)
        print(f"stretch {k + 1}: best fixed in hindsight {best} {table[best][k]['psnr_db']:.2f} dB;"
              f" adaptive {adaptive[k]['psnr_db']:.2f} dB (gap {gap:+.2f} dB)")
    dominated = [n for n in fixed_names
                 if min(table[n][k]["hit_rate"] for k in stretches) <= 0.8
                 or adaptive["all"]["psnr_db"] - table[n]["all"]["psnr_db"] >= 2]
    print(f"adaptive hit rate {adaptive['all']['hit_rate']:.1%} (target >= 95%); worst stretch "
          f"gap to the best fixed point {max(gaps, default=float('nan')):+.2f} dB (target <= 1 dB);"
          f" fixed points that miss >= 20% somewhere or are >= 2 dB worse: {len(dominated)} of "
          f"{len(fixed_names)}")
    steady, switching = switch_cost_ms(args.codec)
    print(f"encoder ms per frame, one thread: one level {steady:.2f}, level switched every frame "
          f"{switching:.2f} (switch cost {switching - steady:+.2f} ms; target < 1 ms)")

    from nodes.adapt import plot_frames
    frames = [{"t_s": f["t"], "level": f["level"], "bandwidth": f["bandwidth"],
               "latency_ms": f["latency_ms"]} for f in runs["adaptive"]]
    edges, offered = 0.0, []
    for s in segments:
        offered.append((edges, s.bytes_per_s))
        edges += s.seconds
    offered.append((edges, segments[-1].bytes_per_s))
    plot_frames(str(args.out / "adaptive_trace.png"), frames, args.deadline, offered)
    (args.out / "table.json").write_text(json.dumps(table, indent=1))
    print(f"plot: {args.out / 'adaptive_trace.png'}\ntable: {args.out / 'table.json'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
