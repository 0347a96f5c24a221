"""`dance encode --index` and `dance extract --index`: one task per recording of a dataset
index, run on the batch layer (dance/batch.py), so that a killed job resumes where it stopped
and the summary is the same whatever the worker count (docs/codecs.md, "--index").

Each task writes its files whole (a .part file renamed into place): a killed worker leaves no
half container, and its result is stored only once all of its files are written.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from .batch import ResultStore, Task, run_tasks, state_folder
from .cli_files import (AUDIO_SUFFIXES, CliError, _check_recording_flags, _compress, _emit,
                        _encode_result, _file_bytes, _frame_indices, _open_recording, _positive,
                        _recording_audio, _recording_frames, _totals)

JOB_FLAGS = ("split", "workers", "ray", "state")
_CODECS: dict = {}   # codecs loaded in this process, by (checkpoint, device, precision, engine)


def index_mode(args: argparse.Namespace, inputs: list[str], name: str) -> bool:
    """Whether this is an --index job; CliError for inputs and --index together, job flags
    without --index, or neither inputs nor --index."""
    if args.index is None:
        given = [f"--{flag}" for flag in JOB_FLAGS if getattr(args, flag) is not None]
        if given:
            raise CliError(f"{given[0]} is for --index jobs: give --index INDEX.parquet")
        if not inputs:
            raise CliError(f"give {name} (or --index INDEX.parquet)")
        return False
    if inputs:
        raise CliError(f"give {name} or --index, not both ({inputs[0]} and --index {args.index})")
    if args.workers is not None:      # before anything is loaded or written
        _positive(args.workers, "--workers")
    return True


# -- encode ------------------------------------------------------------------------------------
def encode_index(args: argparse.Namespace, codec, target) -> int:
    """Every recording of the index to OUTDIR/<id>/<stem>[-NNNNN].dnc; totals and --json."""
    from .zoo import resolve_checkpoint

    _check_recording_flags(args, codec, True)
    if codec.kind == "image" and codec.preprocessor.channels != 3:
        raise CliError(f"codec '{codec.name}' takes {codec.preprocessor.channels}-channel images; "
                       "VRS frames are RGB")
    block = None if args.block is None else _positive(args.block, "--block")
    rows = _recordings(args, "rgb_frames" if codec.kind == "image" else "audio_frames")
    if args.frames is not None:
        for row in rows:      # a slice that selects none of a recording's frames: before any task
            _frame_indices(args.frames, row.rgb_frames, Path(row.path))
    output = _folder(args.output, "-o")
    settings = {"codec": str(resolve_checkpoint(args.codec).resolve()), "codec_hash": codec.hash,
                "device": args.device, "precision": args.precision, "engine": args.engine,
                "target": None if target is None else asdict(target), "frames": args.frames,
                "block": block}
    _CODECS[_codec_key(settings)] = codec      # --workers 1 runs here: no second load
    job = _job(args, "encode", codec_id=codec.id, output=str(output), **settings)
    tasks = [Task(r.id, {**settings, "path": r.path, "id": r.id, "output": str(output / r.id)})
             for r in rows]
    results = _run(args, "encode", job, encode_recording, tasks)
    items = [item for per_recording in results for item in per_recording]
    totals = _totals(items)
    print(f"{len(rows)} recordings, {totals['items']} containers: {totals['raw_bytes']:,} raw "
          f"bytes -> {totals['bytes']:,} bytes; compression ratio {totals['ratio']:.1f}:1 "
          f"(raw bytes / .dnc) in {output}", file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        document = {"codec": codec.id, "index": args.index, "split": args.split, "items": items,
                    "totals": totals}
        _emit(args.json, (json.dumps(document, indent=2, allow_nan=False) + "\n").encode())
    return 0


def encode_recording(task: dict) -> list[dict]:
    """The task of one recording: its containers, each written whole, and their summaries."""
    from .batch import one_thread
    from .targets import Target

    codec = _codec(task)
    path = Path(task["path"])
    items = (_recording_frames(path, codec, task["frames"]) if codec.kind == "image"
             else _recording_audio(path, codec, task["block"]))
    target = None if task["target"] is None else Target(**task["target"])
    folder = Path(task["output"])
    folder.mkdir(parents=True, exist_ok=True)
    encoders: dict = {}
    results = []
    for item in items:
        signal = item.read()
        with one_thread():
            data = _compress(codec, item, signal, target, encoders)
        destination = folder / f"{item.stem}.dnc"
        _write_whole(destination, data)
        results.append({"recording": task["id"],
                        **_encode_result(codec, item, signal, str(destination), data)})
    return results


def _codec_key(settings: dict) -> tuple:
    return settings["codec"], settings["device"], settings["precision"], settings["engine"]


def _codec(task: dict):
    """The task's codec, loaded once per process; CliError when the checkpoint file changed
    since the job started (its results would mix two codecs)."""
    from .codec import load_codec

    key = _codec_key(task)
    if key not in _CODECS:
        _CODECS[key] = load_codec(*key)
    codec = _CODECS[key]
    if codec.hash != task["codec_hash"]:
        raise CliError(f"{task['codec']}: the checkpoint changed since the job started (hash "
                       f"{codec.hash[:16]}, not {task['codec_hash'][:16]})")
    return codec


# -- extract -----------------------------------------------------------------------------------
def extract_index(args: argparse.Namespace) -> int:
    """Every recording of the index: IMAGES/<id>/frame-NNNNN.png and AUDIO/<id>.wav."""
    rows = _recordings(args, None)
    if args.frames is not None:
        for row in rows:
            if row.rgb_frames:
                _frame_indices(args.frames, row.rgb_frames, Path(row.path))
    if args.audio and Path(args.audio).suffix.lower() in AUDIO_SUFFIXES:
        raise CliError(f"--audio {args.audio}: with --index, --audio names a folder (<id>.wav "
                       "per recording)")
    images = _folder(args.images, "--images") if args.images else None
    audio = _folder(args.audio, "--audio") if args.audio else None
    job = _job(args, "extract", images=str(images), audio=str(audio), frames=args.frames)
    tasks = [Task(r.id, {"path": r.path, "id": r.id, "frames": args.frames,
                         "images": str(images / r.id) if images and r.rgb_frames else None,
                         "audio": str(audio / f"{r.id}.wav") if audio and r.audio_frames else None})
             for r in rows]
    results = _run(args, "extract", job, extract_recording, tasks)
    parts = []
    if images:
        parts.append(f"{sum(r['frames'] for r in results):,} RGB frames -> "
                     f"{images}/<id>/frame-NNNNN.png")
    if audio:
        parts.append(f"{sum(r['audio_frames'] for r in results):,} audio frames -> {audio}/<id>.wav")
    print(f"{len(rows)} recordings: {'; '.join(parts)}")
    return 0


def extract_recording(task: dict) -> dict:
    """The task of one recording: its PNG frames and WAV, each written whole."""
    from .data import AUDIO_RATE, read_vrs_audio, read_vrs_frame, vrs_frame_count

    path = Path(task["path"])
    reader = _open_recording(path)
    provider = reader.provider(path)
    result = {"recording": task["id"], "frames": 0, "audio_frames": 0}
    if task["audio"]:
        audio = read_vrs_audio(provider, path)
        destination = Path(task["audio"])
        destination.parent.mkdir(parents=True, exist_ok=True)
        _write_whole(destination, _file_bytes(str(destination), audio, "audio", AUDIO_RATE))
        result["audio_frames"] = len(audio)
    if task["images"]:
        folder = Path(task["images"])
        folder.mkdir(parents=True, exist_ok=True)
        indices = _frame_indices(task["frames"], vrs_frame_count(path, reader), path)
        for index in indices:
            destination = folder / f"frame-{index:05d}.png"
            frame = read_vrs_frame(provider, path, index)
            _write_whole(destination, _file_bytes(str(destination), frame, "image", 0))
        result["frames"] = len(indices)
    return result


# -- shared ------------------------------------------------------------------------------------
def _recordings(args: argparse.Namespace, needed: str | None) -> list:
    """The index's readable recordings (of --split), in index order; a note on stderr for the
    corrupt ones and for those without the stream `needed` (a count field of Recording)."""
    from .dataset import load_index

    rows = load_index(args.index, args.split, include_corrupt=True)
    corrupt = sum(not r.ok for r in rows)
    if corrupt:
        print(f"{corrupt} corrupt recordings in the index left out", file=sys.stderr)
    rows = [r for r in rows if r.ok]
    if needed is not None:
        lacking = sum(not getattr(r, needed) for r in rows)
        if lacking:
            stream = "RGB frames" if needed == "rgb_frames" else "audio"
            print(f"{lacking} recordings without {stream} left out", file=sys.stderr)
        rows = [r for r in rows if getattr(r, needed)]
    if not rows:
        within = f" of split {args.split}" if args.split else ""
        raise CliError(f"{args.index}: no recordings{within} to do")
    return rows


def _folder(text: str, flag: str) -> Path:
    """The output folder of an --index job (created), resolved: each recording writes under it."""
    path = Path(text)
    if text == "-" or path.is_file():
        raise CliError(f"{flag} {text}: {'stdout' if text == '-' else 'a file'}; with --index "
                       f"give {flag} FOLDER (an entry per recording goes under it)")
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _job(args: argparse.Namespace, command: str, **fields) -> dict:
    """What decides the results of a job: the command, the index's bytes, the split, and the
    codec, flags and outputs in `fields`."""
    digest = hashlib.sha256()
    with open(args.index, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return {"command": command, "index_sha256": digest.hexdigest(), "split": args.split, **fields}


def _run(args: argparse.Namespace, kind: str, job: dict, function, tasks: list[Task]) -> list:
    store = ResultStore(state_folder(args.state, kind, job), job)
    workers = None if args.workers is None else _positive(args.workers, "--workers")
    return run_tasks(function, tasks, store, workers=workers, ray=args.ray, desc=f"dance {kind}")


def _write_whole(destination: Path, data: bytes) -> None:
    """`data` to DESTINATION.part, then renamed: never a file cut short under its own name."""
    partial = destination.with_name(destination.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, destination)
