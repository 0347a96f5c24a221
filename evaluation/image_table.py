"""`dance eval image`: the DANCE paper's Table 2 on your frames, DANCE codecs against RR+JPEG and
RR+WebP at the same size.

Frame by frame, each codec's container bytes are the budget RR+JPEG and RR+WebP must meet
(baselines/image.py: scale and quality searched for the best PSNR, never over budget). Per method:
encoder parameters and conv MACs per pixel (as `dance inspect`), compression ratio (total raw
H·W·3 bytes / total container bytes), mean PSNR and MS-SSIM over the full frame, and with --clip
the label retention of CLIP zero-shot predictions, decoded frame vs original (Wilson 95% interval;
the paper keeps frames whose original max logit is >= 18: --min-logit 18). Frames a baseline
cannot fit (budget below its smallest encoding) are left out of that baseline's row and counted.
Outputs: a table, --report JSON, a PNG of quality vs compression ratio (--plot) and a Figure-2-style
PNG of one frame through each method (--figure).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .report import add_output_arguments, fmt, write_json

BASELINES = (("RR+JPEG", "jpeg"), ("RR+WebP", "webp"))
VRS_SUFFIX = ".vrs"


class EvalError(ValueError):
    """Bad input to `dance eval image`, reported as one line."""


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "image", help="Table 2: image codecs vs RR+JPEG / RR+WebP at the same size",
        description=__doc__.split("\n\n")[1])
    p.add_argument("--codec", action="append", required=True, metavar="CKPT",
                   help="image checkpoint file or zoo name (aria-image); repeat for several")
    p.add_argument("--data", nargs="+", required=True, metavar="PATH",
                   help="VRS recordings (RGB stream 214-1), image files or folders of images")
    p.add_argument("--max-frames", type=int, metavar="N", help="use the first N frames only")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--ratio", type=float, metavar="N", help="encode each frame at this "
                        "compression ratio (variable-rate codecs; default: their top level)")
    target.add_argument("--bytes", type=int, metavar="B", help="encode each frame within B bytes")
    target.add_argument("--level", type=int, metavar="L", help="encode at operating point L")
    p.add_argument("--clip", metavar="MODEL", help="open_clip model for label retention "
                   "(e.g. ViT-B-32); retention is left out without it")
    p.add_argument("--clip-weights", metavar="PATH_OR_TAG", help="weights file or pretrained "
                   "tag in the local cache (default: the first cached tag); 'random' for tests")
    p.add_argument("--min-logit", type=float, metavar="LOGIT", help="count only frames whose "
                   "max CLIP logit on the original is at least this (paper: 18)")
    add_output_arguments(p, "runs/eval_image.png", "PNG of PSNR and MS-SSIM vs compression ratio")
    p.add_argument("--figure", type=Path, default=Path("runs/eval_image_fig2.png"),
                   help="PNG of one frame through each method (default: %(default)s)")
    p.add_argument("--figure-frame", type=int, default=0, metavar="I",
                   help="which frame the figure shows (default: the first)")
    p.add_argument("--curve", metavar="R1,R2,...", help="RD-curve mode (evaluation/"
                   "image_curve.py): each variable-rate --codec at these compression ratios "
                   "(up to 16, each > 1), RR+JPEG/WebP/AVIF at its bytes, BD-rates; not with "
                   "--ratio/--bytes/--level/--clip; no --figure; --plot default here: "
                   "runs/eval_image_curve.png")

    def dispatch(args: argparse.Namespace) -> int:
        if args.curve is None:
            return run(args)
        from .image_curve import run as run_curve
        return run_curve(args)

    p.set_defaults(func=dispatch)


@dataclass
class Method:
    """One row of the table and its per-frame results."""
    name: str
    family: str  # dance, rr_jpeg, rr_webp
    codec: str
    encoder_params: int | None = None
    encoder_macs_per_pixel: float | None = None
    frames: list[dict] = field(default_factory=list)
    labels: list = field(default_factory=list)  # CLIP label per frame (None: no fit)
    no_fit: int = 0

    def summary(self, retention) -> dict:
        done = [f for f in self.frames if f["bytes"]]
        raw, sent = sum(f["raw_bytes"] for f in done), sum(f["bytes"] for f in done)
        return {
            "method": self.name, "family": self.family, "codec": self.codec,
            "encoder_params": self.encoder_params,
            "encoder_macs_per_pixel": self.encoder_macs_per_pixel,
            "frames": len(done), "no_fit": self.no_fit, "bytes": sent, "raw_bytes": raw,
            "compression_ratio": raw / sent if sent else None,
            "psnr_db": _mean(f["psnr_db"] for f in done),
            "ms_ssim": _mean(f["ms_ssim"] for f in done),
            "label_retention": retention.as_dict() if retention else None}


def run(args: argparse.Namespace) -> int:
    from baselines.image import BaselineError
    from dance.bitstream import BitstreamError
    from dance.data import DataError
    from dance.targets import TargetError
    from dance.zoo import CheckpointError
    try:
        return _run(args)
    except (EvalError, DataError, CheckpointError, BitstreamError, BaselineError,
            TargetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.clip_weights and not args.clip:
        raise EvalError("--clip-weights needs --clip MODEL")
    if args.max_frames is not None and args.max_frames < 1:
        raise EvalError(f"--max-frames {args.max_frames}: need at least 1")
    from dance.targets import Target
    try:
        target = Target(ratio=args.ratio, bytes=args.bytes, level=args.level)
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    started = time.monotonic()
    classifier = load_clip(args) if args.clip else None  # first: missing weights are likely
    frames = frame_list(args.data, args.max_frames)
    if not 0 <= args.figure_frame < len(frames):
        raise EvalError(f"--figure-frame {args.figure_frame}: there are {len(frames)} frames")
    codecs = load_codecs(args.codec, args.device)
    methods = build_methods(codecs)
    originals: list = []  # CLIP prediction on each original frame
    figure = None
    progress = tqdm(frames, unit="frame", desc="dance eval image", file=sys.stderr)
    for index, (frame_name, load) in enumerate(progress):
        original = load()
        results = code_frame(original, codecs, lambda step: progress.set_postfix_str(
            f"{frame_name}: {step}"), target)
        progress.set_postfix_str(f"{frame_name}: quality")
        score_frame(frame_name, original, methods, results, args.device)
        if classifier is not None:
            progress.set_postfix_str(f"{frame_name}: CLIP")
            present = [r[1] for r in results if r is not None]
            predictions = iter(classifier.classify([original, *present]))
            originals.append(next(predictions))
            for method, result in zip(methods, results):
                method.labels.append(None if result is None else next(predictions).label)
        if index == args.figure_frame:
            figure = (frame_name, original, list(zip(methods, results)))
    progress.close()

    summaries = [m.summary(retention(m, originals, args.min_logit) if classifier else None)
                 for m in methods]
    from evaluation.image_plots import plot_figure, plot_quality

    print_table(summaries, len(frames), classifier is not None)
    plot_quality(methods, summaries, args.plot)
    plot_figure(*figure, args.figure)
    print(f"plot: {args.plot}\nfigure: {args.figure}")
    if args.report:
        write_report(args, summaries, methods, classifier, time.monotonic() - started,
                     len(frames))
        print(f"report: {args.report}")
    return 0


def build_methods(codecs: list[tuple[str, object]]) -> list[Method]:
    """Per codec: its own row, then RR+JPEG and RR+WebP at its size (the order of code_frame)."""
    from dance.analysis import model_report

    methods = []
    for label, codec in codecs:
        report = model_report(codec.model)
        methods.append(Method(f"DANCE {label}", "dance", label, report["encoder_params"],
                              report["encoder_macs_per_sample"]))
        methods += [Method(f"{name} @ {label}", f"rr_{fmt}", label, 0) for name, fmt in BASELINES]
    return methods


def code_frame(original, codecs, step, target=None) -> list:
    """Per method: (container, decoded frame, baseline scale/quality) or None (no fit)."""
    from baselines.image import BaselineError, decode, fit_budget

    results: list = []
    for label, codec in codecs:
        step(label)
        container = codec.compress(original, target=target)
        results.append((container, codec.decompress(container), {}))
        for name, image_format in BASELINES:
            step(f"{name} @ {label}")
            try:
                fit = fit_budget(original, image_format, len(container))
            except BaselineError:
                results.append(None)
                continue
            results.append((fit.data, decode(fit.data),
                            {"scale": fit.scale, "quality": fit.quality}))
    return results


def score_frame(frame_name: str, original, methods: list[Method], results: list,
                device: str) -> None:
    """Bytes, ratio, PSNR and MS-SSIM of one frame, appended to each method."""
    from evaluation.image_quality import ms_ssim, psnr

    raw = int(original.nbytes)
    for method, result in zip(methods, results):
        if result is None:
            method.no_fit += 1
            method.frames.append({"frame": frame_name, "bytes": None, "raw_bytes": raw})
            continue
        data, image, detail = result
        method.frames.append({
            "frame": frame_name, "bytes": len(data), "raw_bytes": raw,
            "compression_ratio": raw / len(data), "psnr_db": psnr(original, image),
            "ms_ssim": ms_ssim(original, image, device), **detail})


def retention(method: Method, originals: list, min_logit: float | None):
    """Label retention of one method over the frames it coded."""
    from evaluation.retention import label_retention

    pairs = [(o, label) for o, label in zip(originals, method.labels) if label is not None]
    return label_retention([o.label for o, _ in pairs], [label for _, label in pairs],
                           [o.max_logit for o, _ in pairs], min_logit)


# -- inputs ------------------------------------------------------------------------------------
def frame_list(paths: list[str], limit: int | None) -> list[tuple[str, object]]:
    """(name, loader) of every frame: each VRS recording's RGB frames, then image files."""
    from dance import data

    files = data.find_recordings(paths, data.IMAGE_SUFFIXES | {VRS_SUFFIX})
    frames: list[tuple[str, object]] = []
    for path in files:
        if path.suffix.lower() == VRS_SUFFIX:
            provider = data.open_vrs(path)
            count = data.vrs_frame_count(path)
            frames += [(f"{path.name}#{i}",
                        lambda p=provider, f=path, i=i: data.read_vrs_frame(p, f, i))
                       for i in range(count)]
        else:
            frames.append((path.name, lambda f=path: data.read_image(f)))
        if limit and len(frames) >= limit:
            break
    frames = frames[:limit] if limit else frames
    if not frames:
        raise EvalError(f"no frames in {' '.join(paths)}")
    return frames


def load_codecs(names: list[str], device: str) -> list[tuple[str, object]]:
    """(label, codec) per --codec: a zoo name as is, a file as parent/stem."""
    from dance.codec import load_codec

    codecs = []
    for name in names:
        codec = load_codec(name, device=device)
        if codec.kind != "image":
            raise EvalError(f"--codec {name} is an {codec.kind} codec; this table needs image "
                            "codecs")
        path = Path(name)
        label = f"{path.parent.name}/{path.stem}" if path.is_file() else name
        codecs.append((label if label not in dict(codecs) else f"{label}#{len(codecs)}", codec))
    return codecs


def load_clip(args: argparse.Namespace):
    from perception.clip import ClipWeightsError, load_classifier

    try:
        return load_classifier(args.clip, args.clip_weights, device=args.device)
    except ClipWeightsError as exc:
        raise EvalError(f"--clip-weights: {exc}") from None
    except ValueError as exc:
        raise EvalError(f"--clip: {exc}") from None


# -- outputs -----------------------------------------------------------------------------------
def print_table(summaries: list[dict], frames: int, with_clip: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dance eval image: {frames} frames",
                  caption="ratio: raw H·W·3 bytes / bytes; PSNR, MS-SSIM: means over frames")
    for column in ("method", "encoder params", "MACs/px", "ratio", "PSNR dB", "MS-SSIM",
                   "label retention [95% CI]" if with_clip else None, "frames"):
        if column:
            table.add_column(column, justify="left" if column == "method" else "right")
    for s in summaries:
        retention = s["label_retention"]
        cells = [
            s["method"], f"{s['encoder_params']:,}",
            "—" if s["encoder_macs_per_pixel"] is None else f"{s['encoder_macs_per_pixel']:,.2f}",
            fmt(s["compression_ratio"], "{:.0f}:1"), fmt(s["psnr_db"], "{:.2f}"),
            fmt(s["ms_ssim"], "{:.4f}")]
        if with_clip:
            cells.append("—" if not retention or retention["rate"] is None else
                         f"{retention['rate']:.1%} [{retention['ci_low']:.0%}, "
                         f"{retention['ci_high']:.0%}] of {retention['total']}")
        cells.append(f"{s['frames']}" + (f" ({s['no_fit']} no fit)" if s["no_fit"] else ""))
        table.add_row(*cells, style="bold" if s["family"] == "dance" else None)
    Console(width=max(120, Console().width)).print(table)


def write_report(args: argparse.Namespace, summaries: list[dict], methods: list[Method],
                 classifier, seconds: float, frames: int) -> None:
    report = {
        "command": "dance eval image",
        "codecs": args.codec, "data": args.data, "frames": frames, "device": args.device,
        "clip": classifier.description if classifier else None, "min_logit": args.min_logit,
        "seconds": round(seconds, 1),
        "methods": summaries,
        "per_frame": {m.name: m.frames for m in methods},
    }
    write_json(args.report, report)


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None



