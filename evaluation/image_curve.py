"""`dance eval image --curve R1,R2,...`: rate-distortion curves of variable-rate image codecs
against RR+JPEG, RR+WebP and RR+AVIF at the same bytes, frame by frame.

For each ratio R of --curve and each frame, every --codec encodes the frame at
`Target(ratio=R)` (the level nearest to raw/R bytes); that container's size is the byte budget
RR+JPEG, RR+WebP and RR+AVIF must meet on that frame (baselines/image.py `fit_budget`: scale and
quality searched for the best PSNR, never over budget). A frame a baseline cannot fit (budget
below its smallest encoding) is left out of that baseline's point and counted as "no fit".

Per method and ratio: mean bytes per frame, compression ratio (total raw H·W·3 bytes / total
bytes), mean PSNR and MS-SSIM, and ΔPSNR, the mean over frames of codec PSNR − that method's PSNR
on the same frame (codec rows: − the best baseline on each frame). A codec frame whose bytes miss
raw/R by more than TOLERANCE (its levels do not reach R, or are too far apart) is counted as off
target. Per codec and baseline: BD-rate (evaluation/bjontegaard.py) with rate = mean bytes and
quality = mean PSNR, and with MS-SSIM in dB (−10·log10(1 − MS-SSIM)); a baseline's curve keeps
only the ratios at which it fit every frame.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .image_table import EvalError, _mean, frame_list, load_codecs
from .report import finite, fmt, ratio_axis, save_figure, write_json

CURVE_BASELINES = (("RR+JPEG", "jpeg"), ("RR+WebP", "webp"), ("RR+AVIF", "avif"))
MAX_POINTS = 16
# A codec frame is off target when its bytes differ from raw/R by more than this fraction.
TOLERANCE = 0.25
TABLE_PLOT = Path("runs/eval_image.png")     # --plot's default, meant for the one-target table
DEFAULT_PLOT = Path("runs/eval_image_curve.png")
COLOURS = {"dance": "C0", "rr_jpeg": "C1", "rr_webp": "C2", "rr_avif": "C3"}


@dataclass
class Point:
    """One method at one target ratio: a point of its curve, with per-frame results."""
    name: str
    family: str  # dance, rr_jpeg, rr_webp, rr_avif
    codec: str
    target_ratio: float
    frames: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        done = [f for f in self.frames if f["bytes"]]
        raw, sent = sum(f["raw_bytes"] for f in done), sum(f["bytes"] for f in done)
        mean_ms_ssim = _mean(f["ms_ssim"] for f in done)
        summary = {
            "method": self.name, "family": self.family, "codec": self.codec,
            "target_ratio": self.target_ratio, "frames": len(done),
            "no_fit": len(self.frames) - len(done),
            "mean_bytes": sent / len(done) if done else None, "bytes": sent, "raw_bytes": raw,
            "compression_ratio": raw / sent if sent else None,
            "psnr_db": _mean(f["psnr_db"] for f in done), "ms_ssim": mean_ms_ssim,
            "ms_ssim_db": ms_ssim_db(mean_ms_ssim)}
        if self.family == "dance":
            summary["off_target"] = sum(f["off_target"] for f in done)
            summary["codec_minus_best_baseline_psnr_db"] = _mean(
                f["codec_minus_best_baseline_psnr_db"] for f in done)
        else:
            summary["codec_minus_this_psnr_db"] = _mean(
                f["codec_minus_this_psnr_db"] for f in done)
        return summary


def parse_curve(text: str | None) -> tuple[float, ...]:
    """The ratios of --curve, ascending: comma-separated numbers > 1, at most MAX_POINTS."""
    parts = [p.strip() for p in (text or "").split(",")]
    if not any(parts):
        raise EvalError("--curve: give compression ratios separated by commas, e.g. "
                        "--curve 200,500,1200")
    ratios = []
    for part in parts:
        try:
            ratio = float(part)
        except ValueError:
            raise EvalError(f"--curve: {part!r} is not a number") from None
        if not math.isfinite(ratio) or ratio <= 1:
            raise EvalError(f"--curve: {part!r} is not a compression ratio above 1")
        if ratio in ratios:
            raise EvalError(f"--curve: ratio {part} is given twice")
        ratios.append(ratio)
    if len(ratios) > MAX_POINTS:
        raise EvalError(f"--curve: {len(ratios)} ratios, at most {MAX_POINTS}")
    return tuple(sorted(ratios))


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse the options of the one-target table that a curve cannot honour."""
    for option, value in (("--ratio", args.ratio), ("--bytes", args.bytes),
                          ("--level", args.level)):
        if value is not None:
            raise EvalError(f"--curve cannot be combined with {option}: the curve sets the "
                            "targets")
    for option, value in (("--clip", args.clip), ("--clip-weights", args.clip_weights),
                          ("--min-logit", args.min_logit)):
        if value is not None:
            raise EvalError(f"--curve cannot be combined with {option}: label retention is in "
                            "the one-target table (drop --curve)")
    if args.max_frames is not None and args.max_frames < 1:
        raise EvalError(f"--max-frames {args.max_frames}: need at least 1")


def run_curve(args: argparse.Namespace) -> int:
    """`dance eval image --curve` (errors raised; image_table.run reports them as one line)."""
    from tqdm import tqdm

    ratios = parse_curve(args.curve)
    check_arguments(args)
    from baselines.image import check_format
    check_format("avif")  # a Pillow without libavif fails here, not after the first frame
    started = time.monotonic()
    frames = frame_list(args.data, args.max_frames)
    codecs = load_codecs(args.codec, args.device)
    for name, (label, codec) in zip(args.codec, codecs):
        if codec.levels < 2:
            raise EvalError(f"--codec {name} ({codec.id}) has a single operating point, so it "
                            "cannot follow --curve: it needs a variable-rate codec (trained "
                            "with rate: {levels: N})")
    points = build_points(codecs, ratios)
    progress = tqdm(total=len(frames) * len(ratios) * len(codecs), unit="point",
                    desc="dance eval image --curve", file=sys.stderr)
    for frame_name, load in frames:
        original = load()
        for ratio in ratios:
            for label, codec in codecs:
                progress.set_postfix_str(f"{frame_name} @ {ratio:g}:1: {label}")
                row = [p for p in points if p.codec == label and p.target_ratio == ratio]
                code_point(frame_name, original, codec, ratio, row, args.device,
                           lambda step: progress.set_postfix_str(
                               f"{frame_name} @ {ratio:g}:1: {step}"))
                progress.update()
    progress.close()

    summaries = [p.summary() for p in points]
    bd_rates = bd_rate_table(summaries, [label for label, _ in codecs])
    plot = DEFAULT_PLOT if args.plot == TABLE_PLOT else args.plot
    print_curve_table(summaries, bd_rates, len(frames))
    plot_curves(summaries, plot)
    print(f"plot: {plot}")
    if args.report:
        write_json(args.report, {
            "command": "dance eval image --curve",
            "codecs": args.codec, "data": args.data, "frames": len(frames),
            "device": args.device, "curve": list(ratios), "target_tolerance": TOLERANCE,
            "seconds": round(time.monotonic() - started, 1),
            "methods": summaries, "bd_rate": bd_rates,
            "per_frame": [{"method": p.name, "target_ratio": p.target_ratio, **f}
                          for p in points for f in p.frames]})
        print(f"report: {args.report}")
    return 0


def build_points(codecs: list[tuple[str, object]], ratios) -> list[Point]:
    """Per ratio and codec: the codec's point, then each baseline's at the codec's sizes."""
    points = []
    for ratio in ratios:
        for label, _ in codecs:
            points.append(Point(f"DANCE {label}", "dance", label, ratio))
            points += [Point(f"{name} @ {label}", f"rr_{image_format}", label, ratio)
                       for name, image_format in CURVE_BASELINES]
    return points


def code_point(frame_name: str, original, codec, ratio: float, row: list[Point],
               device: str, step) -> None:
    """One frame at one ratio: the codec, then each baseline within the codec's bytes; appends
    each result to its point of `row` (codec first, then CURVE_BASELINES in order)."""
    from baselines.image import BaselineError, decode, fit_budget
    from dance.targets import Target
    from evaluation.image_quality import ms_ssim, psnr

    raw = int(original.nbytes)
    container = codec.compress(original, target=Target(ratio=ratio))
    decoded, header = codec.decode(container)
    wanted = raw / ratio
    ours = {"frame": frame_name, "bytes": len(container), "raw_bytes": raw,
            "compression_ratio": raw / len(container), "psnr_db": psnr(original, decoded),
            "ms_ssim": ms_ssim(original, decoded, device), "level": header.level,
            "wanted_bytes": wanted, "target_error": len(container) / wanted - 1,
            "off_target": abs(len(container) / wanted - 1) > TOLERANCE}
    theirs = []
    for (name, image_format), point in zip(CURVE_BASELINES, row[1:]):
        step(name)
        try:
            fit = fit_budget(original, image_format, len(container))
        except BaselineError:
            result = {"frame": frame_name, "bytes": None, "raw_bytes": raw,
                      "budget": len(container)}
        else:
            image = decode(fit.data)
            result = {"frame": frame_name, "bytes": len(fit.data), "raw_bytes": raw,
                      "budget": len(container), "compression_ratio": raw / len(fit.data),
                      "psnr_db": fit.psnr, "ms_ssim": ms_ssim(original, image, device),
                      "scale": fit.scale, "quality": fit.quality,
                      "codec_minus_this_psnr_db": _difference(ours["psnr_db"], fit.psnr)}
            theirs.append(fit.psnr)
        point.frames.append(result)
    ours["codec_minus_best_baseline_psnr_db"] = (
        _difference(ours["psnr_db"], max(theirs)) if theirs else None)
    row[0].frames.append(ours)


def _difference(a: float, b: float) -> float | None:
    return a - b if finite(a) and finite(b) else None


def ms_ssim_db(value: float | None) -> float | None:
    """MS-SSIM on a dB scale, −10·log10(1 − MS-SSIM): None when missing or exactly 1."""
    if not finite(value) or value >= 1:
        return None
    return -10 * math.log10(1 - value)


def bd_rate_table(summaries: list[dict], labels: list[str]) -> list[dict]:
    """BD-rate of each codec against each of its baselines, on PSNR and on MS-SSIM in dB;
    negative: the codec needs that many percent fewer bytes at equal quality."""
    from evaluation.bjontegaard import bd_rate

    rows = []
    for label in labels:
        mine = [s for s in summaries if s["codec"] == label]
        ours = [s for s in mine if s["family"] == "dance"]
        for name, _ in CURVE_BASELINES:
            theirs = [s for s in mine if s["method"] == f"{name} @ {label}"
                      and s["frames"] and not s["no_fit"]]  # points on every frame only
            row = {"codec": label, "baseline": name,
                   "points": {"codec": len(ours), "baseline": len(theirs)}}
            for key, quality in (("psnr", "psnr_db"), ("ms_ssim_db", "ms_ssim_db")):
                curves = [[(s["mean_bytes"], s[quality]) for s in side if finite(s[quality])]
                          for side in (theirs, ours)]
                value, why = None, "fewer than 2 points"
                if all(len(curve) >= 2 for curve in curves):
                    reference, test = curves
                    value = bd_rate([r for r, _ in reference], [q for _, q in reference],
                                    [r for r, _ in test], [q for _, q in test])
                    why = None if finite(value) else "no common quality range"
                row[f"bd_rate_{key}_percent"] = value if finite(value) else None
                row[f"bd_rate_{key}_missing"] = why
            rows.append(row)
    return rows


# -- outputs -----------------------------------------------------------------------------------
def print_curve_table(summaries: list[dict], bd_rates: list[dict], frames: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    table = Table(
        title=f"dance eval image --curve: {frames} frames",
        caption="target: --curve ratio; ratio: raw H·W·3 bytes / bytes; bytes, PSNR, MS-SSIM: "
                "means over frames; ΔPSNR: mean over frames of codec PSNR − this method's "
                "(codec rows: − the best baseline on each frame)")
    for column in ("method", "target", "ratio", "bytes/frame", "PSNR dB", "MS-SSIM",
                   "ΔPSNR dB", "frames"):
        table.add_column(column, justify="left" if column == "method" else "right")
    previous = None
    for s in summaries:
        if previous is not None and s["target_ratio"] != previous:
            table.add_section()
        previous = s["target_ratio"]
        ours = s["family"] == "dance"
        delta = s["codec_minus_best_baseline_psnr_db" if ours else "codec_minus_this_psnr_db"]
        notes = [f"{s['no_fit']} no fit" if s["no_fit"] else "",
                 f"{s['off_target']} off target" if ours and s["off_target"] else ""]
        notes = ", ".join(n for n in notes if n)
        table.add_row(s["method"], f"{s['target_ratio']:g}:1",
                      fmt(s["compression_ratio"], "{:.0f}:1"), fmt(s["mean_bytes"], "{:,.0f}"),
                      fmt(s["psnr_db"], "{:.2f}"), fmt(s["ms_ssim"], "{:.4f}"),
                      fmt(delta, "{:+.2f}"), f"{s['frames']}" + (f" ({notes})" if notes else ""),
                      style="bold" if ours else None)
    console.print(table)
    bd = Table(title="BD-rate of each codec against each baseline",
               caption="negative: the codec needs that many % fewer bytes at equal quality; "
                       "—: fewer than 2 points (baselines: ratios fit on every frame) or no "
                       "common quality range")
    for column in ("codec", "against", "BD-rate (PSNR)", "BD-rate (MS-SSIM dB)", "points"):
        bd.add_column(column, justify="left" if column in ("codec", "against") else "right")
    for row in bd_rates:
        bd.add_row(row["codec"], row["baseline"], fmt(row["bd_rate_psnr_percent"], "{:+.1f}%"),
                   fmt(row["bd_rate_ms_ssim_db_percent"], "{:+.1f}%"),
                   f"{row['points']['codec']} / {row['points']['baseline']}")
    console.print(bd)


def plot_curves(summaries: list[dict], path: Path) -> None:
    """PSNR and MS-SSIM vs compression ratio, one line per method, log ratio axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codecs = list(dict.fromkeys(s["codec"] for s in summaries))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for axis, key, label in ((axes[0], "psnr_db", "PSNR (dB)"), (axes[1], "ms_ssim", "MS-SSIM")):
        for method in dict.fromkeys(s["method"] for s in summaries):
            mine = sorted((s for s in summaries if s["method"] == method
                           and s["compression_ratio"] and finite(s[key])),
                          key=lambda s: s["compression_ratio"])
            if not mine:
                continue
            family = mine[0]["family"]
            axis.plot([s["compression_ratio"] for s in mine], [s[key] for s in mine],
                      color=COLOURS[family], marker="osD^v<>"[codecs.index(mine[0]["codec"]) % 7],
                      linestyle="-" if family == "dance" else "--", label=method)
        axis.set_xscale("log")
        ratio_axis(axis, "compression ratio (raw bytes / bytes)", label)
    axes[0].legend(fontsize=7)
    fig.suptitle("Rate-distortion: means over frames at each --curve ratio")
    fig.tight_layout()
    save_figure(fig, path)
