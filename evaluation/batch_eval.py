"""`dance eval image|audio --index`: the tables over a dataset index (dance/dataset.py), run as
tasks on dance/batch.py: one per chunk of a recording's RGB frames (image), one per recording's
mics (audio). A task returns plain JSON per method (the frame or clip dicts the tables keep);
the merge concatenates them in task order and the tables' own summaries do the rest, so the
table is the one the same frames give without --index, whatever --workers or --ray
(docs/evaluation.md, "--index").
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path

CHUNK = 8                   # image frames per task: a few seconds each on one core
INDEX_OPTIONS = ("split", "workers", "ray", "state", "chunk", "frames")


def add_index_arguments(parser: argparse.ArgumentParser, image: bool) -> None:
    """--index and its options (light: runs when the CLI starts)."""
    group = parser.add_argument_group("dataset-scale jobs (docs/evaluation.md, \"--index\")")
    group.add_argument("--index", type=Path, metavar="INDEX.parquet",
                       help="the ok recordings of a `dance dataset index`, as resumable tasks "
                            "on worker processes or Ray; not with --data")
    group.add_argument("--split", metavar="train|val|test", help="only this split of the index")
    group.add_argument("--workers", type=int, metavar="N",
                       help="worker processes (default: all cores; 1: in this process)")
    group.add_argument("--ray", metavar="auto|ADDRESS",
                       help="run the tasks on this Ray cluster instead of local workers")
    group.add_argument("--state", type=Path, metavar="DIR", help="where finished tasks are "
                       "kept for a rerun to skip (default: runs/jobs/eval-KIND-<fingerprint>)")
    if image:
        group.add_argument("--chunk", type=int, metavar="FRAMES",
                           help=f"frames per task (default {CHUNK})")
        group.add_argument("--frames", metavar="START:STOP",
                           help="only frames START to STOP-1 of each recording (default: all)")


def check_source(args: argparse.Namespace, refused: dict[str, object]) -> None:
    """--data or --index, never both; the index options only with --index; `refused`: options
    (flag -> value) that --index does not support yet."""
    from dance.batch import BatchError

    if args.index and args.data:
        raise BatchError("--index and --data are mutually exclusive: give the recordings one way")
    if not args.index:
        if not args.data:
            raise BatchError("give the recordings: --data PATH... or --index INDEX.parquet")
        given = [o for o in INDEX_OPTIONS if getattr(args, o, None) is not None]
        if given:
            raise BatchError(f"--{given[0]} needs --index INDEX.parquet")
        return
    if getattr(args, "max_frames", None) is not None:
        raise BatchError("--max-frames counts frames of --data; with --index use --frames "
                         "START:STOP (per recording)")
    for flag, value in refused.items():
        if value:
            raise BatchError(f"--index does not combine with {flag} yet")
    for option in ("workers", "chunk"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            raise BatchError(f"--{option} {value}: need at least 1")


def frame_range(text: str | None) -> tuple[int, int | None]:
    """--frames START:STOP (either side may be empty) -> (start, stop or None)."""
    from dance.batch import BatchError

    if text is None:
        return 0, None
    start, colon, stop = text.partition(":")
    try:
        first, last = int(start or 0), (int(stop) if stop else None)
    except ValueError:
        first = last = -1
    if not colon or first < 0 or (last is not None and last <= first):
        raise BatchError(f"--frames {text}: expected START:STOP with 0 <= START < STOP, e.g. 0:8")
    return first, last


def recordings(args: argparse.Namespace, count: str, what: str) -> list:
    """The index's ok rows (of --split) with `count` > 0; says on stderr what was left out."""
    from dance.batch import BatchError
    from dance.dataset import load_index

    rows = load_index(args.index, args.split, include_corrupt=True)
    ok = [r for r in rows if r.ok]
    usable = [r for r in ok if getattr(r, count)]
    where = f" of split {args.split}" if args.split else ""
    lacking = f", {len(ok) - len(usable)} without {what}" if len(ok) > len(usable) else ""
    print(f"{args.index}: {len(usable)} recordings{where}; left out: {len(rows) - len(ok)} "
          f"corrupt{lacking}", file=sys.stderr)
    if not usable:
        raise BatchError(f"{args.index}: no ok recordings with {what}{where}")
    return usable


def run_job(args: argparse.Namespace, kind: str, job: dict, function, tasks: list) -> list:
    """The tasks' results in task order, from --state or the job's default folder."""
    from dance.batch import ResultStore, run_tasks, state_folder

    job = {"command": f"dance eval {kind}", "index_sha256": _sha256(args.index),
           "split": args.split, **job}
    store = ResultStore(state_folder(args.state, f"eval-{kind}", job), job)
    return run_tasks(function, tasks, store, workers=args.workers, ray=args.ray,
                     desc=f"dance eval {kind}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def codec_sources(names: list[str]) -> list[str]:
    """--codec values as a worker anywhere on this machine finds them (files made absolute)."""
    return [str(Path(n).resolve()) if Path(n).is_file() else n for n in names]


# -- image -------------------------------------------------------------------------------------
def index_image_frames(args: argparse.Namespace, codecs: list, methods: list, target,
                       baselines: tuple) -> tuple[int, tuple]:
    """Code and score the index's frames as tasks into `methods` (their `frames` and `no_fit`,
    as the frame loop of image_table does); returns (frame count, the --figure frame's
    (name, original, [(method, result)]), recomputed here: pixels do not travel as JSON)."""
    from dance.batch import BatchError, Task

    first, last = frame_range(args.frames)
    chunk = args.chunk or CHUNK
    common = {"codecs": codec_sources(args.codec), "target": asdict(target),
              "avif": args.avif, "device": args.device}
    tasks, frames = [], []
    for row in recordings(args, "rgb_frames", "RGB frames"):
        stop = min(row.rgb_frames, last or row.rgb_frames)
        for start in range(first, stop, chunk):
            end = min(start + chunk, stop)
            tasks.append(Task(f"{row.id}#{start}:{end}", {"path": row.path, "id": row.id,
                                                          "frames": [start, end], **common}))
            frames += [(row, i) for i in range(start, end)]
    if not tasks:
        raise BatchError(f"--frames {args.frames}: no recording in {args.index} has those frames")
    if not 0 <= args.figure_frame < len(frames):
        raise BatchError(f"--figure-frame {args.figure_frame}: there are {len(frames)} frames")
    job = {"chunk": chunk, "frames": [first, last], "codecs": [c.hash for _, c in codecs],
           "target": asdict(target), "baselines": [f for _, f in baselines],
           "device": args.device}
    for result in run_job(args, "image", job, image_chunk, tasks):
        for method, coded in zip(methods, result["frames"], strict=True):
            method.frames += coded
            method.no_fit += sum(f["bytes"] is None for f in coded)
    return len(frames), _figure(*frames[args.figure_frame], codecs, methods, target, baselines)


def image_chunk(task: dict) -> dict:
    """Task: frames [start, stop) of one recording through every method, scored; per method
    the frame dicts of image_table.score_frame. Torch runs on one thread: decoders give
    slightly different pixels on other thread counts, and results must not depend on how many
    workers share the cores."""
    from dance.batch import one_thread

    with one_thread():
        return _image_chunk(task)


def _image_chunk(task: dict) -> dict:
    from dance import data
    from dance.targets import Target

    from .image_table import AVIF, BASELINES, Method, code_frame, score_frame

    codecs = _image_codecs(tuple(task["codecs"]), task["device"])
    baselines = BASELINES + ((AVIF,) if task["avif"] else ())
    target = Target(**task["target"])
    slots = [Method("", "", "") for _ in range(len(codecs) * (1 + len(baselines)))]
    path = Path(task["path"])
    provider = _provider(task["path"])
    for i in range(*task["frames"]):
        original = data.read_vrs_frame(provider, path, i)
        results = code_frame(original, codecs, lambda step: None, target, baselines)
        score_frame(f"{task['id']}#{i}", original, slots, results, task["device"])
    return {"frames": [m.frames for m in slots]}


@lru_cache(maxsize=2)
def _image_codecs(names: tuple[str, ...], device: str) -> list:
    """Codecs load once per worker process, not once per task."""
    from .image_table import load_codecs
    return load_codecs(list(names), device)


@lru_cache(maxsize=4)
def _provider(path: str):
    from dance import data
    return data.open_vrs(Path(path))


def _figure(row, frame: int, codecs: list, methods: list, target, baselines: tuple) -> tuple:
    from dance import data

    from .image_table import code_frame

    path = Path(row.path)
    original = data.read_vrs_frame(data.open_vrs(path), path, frame)
    results = code_frame(original, codecs, lambda step: None, target, baselines)
    return f"{row.id}#{frame}", original, list(zip(methods, results))


# -- audio -------------------------------------------------------------------------------------
def index_audio_clips(args: argparse.Namespace, methods: list, target) -> tuple[int, float]:
    """Code and score each recording's mics as one task into `methods` (clips, SSDR/SRDR
    frames, delay windows, as audio_table's clip loop does); returns (clips, seconds)."""
    from dance.batch import Task

    from .audio_table import _rates

    common = {"codecs": codec_sources(args.codec), "mp3": args.mp3, "opus": args.opus,
              "max_seconds": args.max_seconds, "ratio": target.ratio, "block": args.block,
              "projection": args.projection, "device": args.device}
    tasks = [Task(row.id, {"path": row.path, **common})
             for row in recordings(args, "audio_records", "a mic stream")]
    job = {"codecs": [m.coder.hash for m in methods if m.family == "dance"],
           "mp3": _rates(args.mp3, "--mp3"), "opus": _rates(args.opus, "--opus"),
           "max_seconds": args.max_seconds, "ratio": target.ratio, "block": args.block,
           "projection": args.projection, "device": args.device}
    seconds = 0.0
    for result in run_job(args, "audio", job, audio_clip, tasks):
        seconds += result["seconds"]
        for method, scored in zip(methods, result["methods"], strict=True):
            method.clips.append(scored["clip"])
            method.ssdr_frames += scored["ssdr_frames"]
            method.srdr_frames += scored["srdr_frames"]
            method.delay_hits += scored["delay_hits"]
            method.delay_windows += scored["delay_windows"]
    return len(tasks), seconds


def audio_clip(task: dict) -> dict:
    """Task: one recording's mic audio through every method (audio_table.evaluate), torch on
    one thread as in image_chunk."""
    from dance.batch import one_thread

    with one_thread():
        return _audio_clip(task)


def _audio_clip(task: dict) -> dict:
    from dance.preprocess import notch_filter
    from dance.targets import Target

    from .audio_table import evaluate, read_clip

    path = Path(task["path"])
    raw, rate = read_clip(path, task["max_seconds"])
    reference = notch_filter(raw, rate)
    scored = []
    for method in _audio_methods(task["mp3"], task["opus"], tuple(task["codecs"]),
                                 task["device"]):
        fresh = replace(method, clips=[], ssdr_frames=[], srdr_frames=[], delay_hits=0,
                        delay_windows=0, speech=[])
        evaluate(fresh, path, raw, reference, rate, task["projection"],
                 Target(ratio=task["ratio"]), task["block"])
        scored.append({"clip": fresh.clips[0], "ssdr_frames": fresh.ssdr_frames,
                       "srdr_frames": fresh.srdr_frames, "delay_hits": fresh.delay_hits,
                       "delay_windows": fresh.delay_windows})
    return {"seconds": len(raw) / rate, "methods": scored}


@lru_cache(maxsize=2)
def _audio_methods(mp3: str, opus: str, codecs: tuple[str, ...], device: str) -> list:
    """The table's methods in its order, codecs loaded once per worker process."""
    from .audio_table import baseline_methods, load_codecs
    return baseline_methods(mp3, opus) + load_codecs(list(codecs), device)
