"""`dance eval image`: the DANCE paper's Table 2 on your frames, DANCE codecs against RR+JPEG and
RR+WebP (and with --avif RR+AVIF) at the same size.

Frame by frame, each codec's container bytes are the budget RR+JPEG and RR+WebP (and RR+AVIF
with --avif) must meet (baselines/image.py: scale and quality searched for the best PSNR, never
over budget). Per method: encoder parameters and conv MACs per pixel (as `dance inspect`),
encoding megapixels per second on one thread (a learned codec's compress, rate search included;
a baseline's one encode at the scale and quality its search found), compression ratio (total
raw H·W·3 bytes / total container bytes), mean PSNR and MS-SSIM over the full frame, and with
--clip the label retention of CLIP zero-shot predictions, decoded frame vs original (Wilson 95%
interval; the paper keeps frames whose original max logit is >= 18: --min-logit 18), or with
--classifier that of a pretrained torchvision ImageNet classifier:
top-1 agreement, original top-1 within the decoded top-5, mean KL(original || decoded) of the
class distributions (--min-confidence P keeps frames whose original top-1 probability is >= P).
Frames a baseline cannot fit (budget below its smallest encoding) are left out of that baseline's
row and counted. Outputs: a table, --report JSON, a PNG of quality vs compression ratio (--plot)
and a Figure-2-style PNG of one frame through each method (--figure).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dance.batch import one_thread

from .batch_eval import add_index_arguments
from .report import add_output_arguments, fmt, write_json

BASELINES = (("RR+JPEG", "jpeg"), ("RR+WebP", "webp"))
# row names of learned codecs; others: DANCE
FAMILY_NAMES = {"walloc": "WaLLoC", "cs": "CS", "slimmable": "Slimmable"}
AVIF = ("RR+AVIF", "avif")  # with --avif
TOP_K = 5  # --classifier: agreement of the original top-1 with the decoded top-5
VRS_SUFFIX = ".vrs"


class EvalError(ValueError):
    """Bad input to `dance eval image`, reported as one line."""


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "image", help="Table 2: image codecs vs RR+JPEG / RR+WebP at the same size",
        description=__doc__.split("\n\n")[1])
    p.add_argument("--codec", action="append", required=True, metavar="CKPT",
                   help="image checkpoint file or zoo name (aria-image); repeat for several")
    p.add_argument("--data", nargs="+", metavar="PATH", help="VRS recordings (RGB stream "
                   "214-1), image files or folders of images (or --index)")
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
    p.add_argument("--classifier", metavar="MODEL", help="torchvision ImageNet classifier for "
                   "label retention with a pretrained model (e.g. mobilenet_v2): top-1 and "
                   "top-5 agreement, mean KL; not with --clip")
    p.add_argument("--classifier-weights", metavar="PATH", help="its torchvision weights file "
                   "(e.g. ../shared/models/mobilenet_v2-b0353104.pth; default: the model's "
                   "file in torch's hub cache)")
    p.add_argument("--min-confidence", type=float, metavar="P", help="with --classifier: count "
                   "only frames whose top-1 probability on the original is at least P (0-1)")
    p.add_argument("--avif", action="store_true", help="add RR+AVIF rows at each codec's size "
                   "(Pillow with libavif; slower to search than JPEG and WebP)")
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
    add_index_arguments(p, image=True)
    p.set_defaults(func=run)


@dataclass
class Method:
    """One row of the table and its per-frame results."""
    name: str
    family: str  # dance, rr_jpeg, rr_webp, rr_avif
    codec: str
    encoder_params: int | None = None
    encoder_macs_per_pixel: float | None = None
    frames: list[dict] = field(default_factory=list)
    labels: list = field(default_factory=list)  # CLIP label per frame (None: no fit)
    predictions: list = field(default_factory=list)  # --classifier: Prediction (None: no fit)
    no_fit: int = 0

    def summary(self, retention, extra: dict | None = None) -> dict:
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
            "encode_mp_per_s": _throughput(done),
            "label_retention": retention.as_dict() if retention else None, **(extra or {})}


def run(args: argparse.Namespace) -> int:
    from baselines.image import BaselineError
    from dance.batch import BatchError
    from dance.bitstream import BitstreamError
    from dance.data import DataError
    from dance.targets import TargetError
    from dance.zoo import CheckpointError
    try:
        from .batch_eval import check_source
        check_source(args, {"--curve": args.curve, "--clip": args.clip,
                            "--classifier": args.classifier})
        if getattr(args, "curve", None) is None:
            return _run(args)
        for option in ("classifier", "classifier_weights", "min_confidence"):
            if getattr(args, option, None) is not None:
                raise EvalError(f"--curve cannot be combined with --{option.replace('_', '-')}: "
                                "label retention is in the one-target table (drop --curve)")
        from .image_curve import run_curve
        return run_curve(args)
    except (EvalError, DataError, CheckpointError, BitstreamError, BaselineError,
            TargetError, BatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    check_classifier_arguments(args)
    if args.max_frames is not None and args.max_frames < 1:
        raise EvalError(f"--max-frames {args.max_frames}: need at least 1")
    from dance.targets import Target
    try:
        target = Target(ratio=args.ratio, bytes=args.bytes, level=args.level)
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    started = time.monotonic()
    baselines = BASELINES + ((AVIF,) if args.avif else ())
    if args.avif:
        from baselines.image import check_format
        check_format("avif")  # a Pillow without libavif fails here, not after the first frame
    # first: missing weights are likely
    classifier = load_clip(args) if args.clip else \
        load_image_classifier(args) if args.classifier else None
    if args.index:
        from .batch_eval import index_image_frames
        codecs = load_codecs(args.codec, args.device)
        methods = build_methods(codecs, baselines)
        count, figure = index_image_frames(args, codecs, methods, target, baselines)
        originals: list = []
    else:
        frames = frame_list(args.data, args.max_frames)
        if not 0 <= args.figure_frame < len(frames):
            raise EvalError(f"--figure-frame {args.figure_frame}: there are {len(frames)} frames")
        codecs = load_codecs(args.codec, args.device)
        methods = build_methods(codecs, baselines)
        count = len(frames)
        originals, figure = _code_frames(args, frames, codecs, methods, target, baselines,
                                         classifier)
    if args.classifier:
        figures = [classifier_figures(m, originals, args.min_confidence) for m in methods]
        summaries = [m.summary(top1, {"top5_retention": top5.as_dict(), "mean_kl": kl})
                     for m, (top1, top5, kl) in zip(methods, figures)]
    else:
        summaries = [m.summary(retention(m, originals, args.min_logit) if classifier else None)
                     for m in methods]
    from evaluation.image_plots import plot_figure, plot_quality

    print_table(summaries, count, "clip" if args.clip else
                "classifier" if args.classifier else None)
    plot_quality(methods, summaries, args.plot)
    plot_figure(*figure, args.figure, per_codec=1 + len(baselines))
    print(f"plot: {args.plot}\nfigure: {args.figure}")
    if args.report:
        write_report(args, summaries, methods, classifier, time.monotonic() - started, count)
        print(f"report: {args.report}")
    return 0


def _code_frames(args: argparse.Namespace, frames: list, codecs: list, methods: list[Method],
                 target, baselines: tuple, classifier) -> tuple[list, tuple]:
    """Every frame through every method in this process; (classifier predictions on the
    originals, the --figure frame's (name, original, [(method, result)]))."""
    from tqdm import tqdm

    kind = "CLIP" if args.clip else args.classifier
    originals: list = []  # classifier prediction on each original frame
    figure = None
    progress = tqdm(frames, unit="frame", desc="dance eval image", file=sys.stderr)
    for index, (frame_name, load) in enumerate(progress):
        original = load()
        results = code_frame(original, codecs, lambda step: progress.set_postfix_str(
            f"{frame_name}: {step}"), target, baselines)
        progress.set_postfix_str(f"{frame_name}: quality")
        score_frame(frame_name, original, methods, results, args.device)
        if classifier is not None:
            progress.set_postfix_str(f"{frame_name}: {kind}")
            present = [r[1] for r in results if r is not None]
            predictions = iter(classifier.classify([original, *present]))
            originals.append(next(predictions))
            for method, result in zip(methods, results):
                prediction = None if result is None else next(predictions)
                method.labels.append(None if prediction is None else prediction.label)
                method.predictions.append(prediction)
        if index == args.figure_frame:
            figure = (frame_name, original, list(zip(methods, results)))
    progress.close()
    return originals, figure


def build_methods(codecs: list[tuple[str, object]], baselines=BASELINES) -> list[Method]:
    """Per codec: its own row, then RR+JPEG and RR+WebP (and RR+AVIF) at its size (the order of
    code_frame)."""
    from dance.analysis import model_report

    methods = []
    for label, codec in codecs:
        report = model_report(codec.model)
        name = f"{FAMILY_NAMES.get(codec.model.family, 'DANCE')} {label}"
        methods.append(Method(name, "dance", label, report["encoder_params"],
                              report["encoder_macs_per_sample"]))
        methods += [Method(f"{name} @ {label}", f"rr_{fmt}", label, 0) for name, fmt in baselines]
    return methods


def code_frame(original, codecs, step, target=None, baselines=BASELINES) -> list:
    """Per method: (container, decoded frame, baseline scale/quality) or None (no fit)."""
    from baselines.image import BaselineError, decode, encode, fit_budget

    results: list = []
    for label, codec in codecs:
        step(label)
        with one_thread():
            started = time.perf_counter()
            container = codec.compress(original, target=target)
            seconds = time.perf_counter() - started
        results.append((container, codec.decompress(container), {"encode_seconds": seconds}))
        for name, image_format in baselines:
            step(f"{name} @ {label}")
            try:
                fit = fit_budget(original, image_format, len(container))
            except BaselineError:
                results.append(None)
                continue
            started = time.perf_counter()      # one encode at the point the search found
            encode(original, image_format, fit.quality, fit.scale)
            results.append((fit.data, decode(fit.data),
                            {"scale": fit.scale, "quality": fit.quality,
                             "encode_seconds": time.perf_counter() - started}))
    return results


def _throughput(frames: list[dict]) -> float | None:
    """Megapixels per second of encoding over the frames that were timed."""
    timed = [f for f in frames if f.get("encode_seconds")]
    if not timed:
        return None
    pixels = sum(f["raw_bytes"] / 3 for f in timed)
    return pixels / sum(f["encode_seconds"] for f in timed) / 1e6


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


def classifier_figures(method: Method, originals: list, min_confidence: float | None) -> tuple:
    """--classifier: (top-1 agreement, original top-1 within the decoded top-5, mean KL(original
    || decoded) in nats or None) of one method over the frames it coded and that pass the
    confidence filter."""
    from evaluation.retention import confident, kl_divergence, label_retention, top_k_retention

    pairs = [(o, d) for o, d in zip(originals, method.predictions) if d is not None]
    labels = [o.label for o, _ in pairs]
    confidences = [o.prob for o, _ in pairs]
    top1 = label_retention(labels, [d.label for _, d in pairs], confidences, min_confidence)
    top5 = top_k_retention(labels, [d.top_labels[:TOP_K] for _, d in pairs], confidences,
                           min_confidence)
    kls = [kl_divergence(o.log_probs, d.log_probs) for o, d in pairs
           if confident(o.prob, min_confidence)]
    return top1, top5, (sum(kls) / len(kls) if kls else None)


def check_classifier_arguments(args: argparse.Namespace) -> None:
    """One classifier per table, and each option with its own classifier."""
    if args.clip and args.classifier:
        raise EvalError("--clip and --classifier are mutually exclusive: label retention with "
                        "one classifier per table")
    if args.clip_weights and not args.clip:
        raise EvalError("--clip-weights needs --clip MODEL")
    if args.min_logit is not None and args.classifier:
        raise EvalError("--min-logit is CLIP's filter; with --classifier use --min-confidence P")
    if args.classifier_weights and not args.classifier:
        raise EvalError("--classifier-weights needs --classifier MODEL")
    if args.min_confidence is not None:
        if not args.classifier:
            raise EvalError("--min-confidence needs --classifier MODEL")
        if not 0 <= args.min_confidence <= 1:
            raise EvalError(f"--min-confidence {args.min_confidence}: a probability, 0 to 1")


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


def load_image_classifier(args: argparse.Namespace):
    from perception.classifier import ClassifierWeightsError, load_image_classifier as load

    try:
        return load(args.classifier, args.classifier_weights, device=args.device, top_k=TOP_K)
    except ClassifierWeightsError as exc:
        raise EvalError(f"--classifier-weights: {exc}") from None
    except ValueError as exc:
        raise EvalError(f"--classifier: {exc}") from None


# -- outputs -----------------------------------------------------------------------------------
def _retention_cell(retention: dict | None) -> str:
    return ("—" if not retention or retention["rate"] is None else
            f"{retention['rate']:.1%} [{retention['ci_low']:.0%}, {retention['ci_high']:.0%}] "
            f"of {retention['total']}")


def print_table(summaries: list[dict], frames: int, with_clip) -> None:
    """`with_clip`: "clip" (or True) adds the CLIP retention column, "classifier" the top-1,
    top-5 and KL columns of --classifier, None (or False) neither."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dance eval image: {frames} frames",
                  caption="ratio: raw H·W·3 bytes / bytes; PSNR, MS-SSIM: means over frames")
    with_classifier = with_clip == "classifier"
    with_clip = bool(with_clip) and not with_classifier
    for column in ("method", "encoder params", "MACs/px", "MP/s 1 thread", "ratio", "PSNR dB",
                   "MS-SSIM",
                   "label retention [95% CI]" if with_clip else None,
                   "top-1 agreement [95% CI]" if with_classifier else None,
                   f"in top-{TOP_K}" if with_classifier else None,
                   "KL nats" if with_classifier else None, "frames"):
        if column:
            table.add_column(column, justify="left" if column == "method" else "right")
    for s in summaries:
        retention = s["label_retention"]
        cells = [
            s["method"], f"{s['encoder_params']:,}",
            "—" if s["encoder_macs_per_pixel"] is None else f"{s['encoder_macs_per_pixel']:,.2f}",
            fmt(s.get("encode_mp_per_s"), "{:.1f}"),
            fmt(s["compression_ratio"], "{:.0f}:1"), fmt(s["psnr_db"], "{:.2f}"),
            fmt(s["ms_ssim"], "{:.4f}")]
        if with_clip or with_classifier:
            cells.append(_retention_cell(retention))
        if with_classifier:
            top5 = s.get("top5_retention")
            cells += ["—" if not top5 or top5["rate"] is None else f"{top5['rate']:.1%}",
                      fmt(s.get("mean_kl"), "{:.3f}")]
        cells.append(f"{s['frames']}" + (f" ({s['no_fit']} no fit)" if s["no_fit"] else ""))
        table.add_row(*cells, style="bold" if s["family"] == "dance" else None)
    Console(width=max(120, Console().width)).print(table)


def write_report(args: argparse.Namespace, summaries: list[dict], methods: list[Method],
                 classifier, seconds: float, frames: int) -> None:
    report = {
        "command": "dance eval image",
        "codecs": args.codec, "data": args.data, "frames": frames, "device": args.device,
        **({"index": str(args.index), "split": args.split} if args.index else {}),
        "clip": classifier.description if classifier and args.clip else None,
        "min_logit": args.min_logit,
        "classifier": classifier.description if classifier and args.classifier else None,
        "classifier_weights": getattr(classifier, "weights_path", None) if args.classifier
        else None,
        "min_confidence": args.min_confidence, "avif": args.avif,
        "seconds": round(seconds, 1),
        "methods": summaries,
        "per_frame": {m.name: m.frames for m in methods},
    }
    write_json(args.report, report)


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None



