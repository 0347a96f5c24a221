"""`dance encode`, `decode` and `extract`: files, folders, globs, stdin/stdout and VRS
recordings in, containers (or PNG/WAV) out, at a rate target (docs/codecs.md, "The `dance
encode` / `decode` / `extract` command line"). The parser lives in `dance.cli`.
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
AUDIO_SUFFIXES = (".wav", ".flac")


class CliError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


# rate flags -> Target fields
TARGET_FLAGS = {"ratio": "--ratio", "bytes": "--bytes", "kbps": "--bitrate", "level": "--level"}


class Signal(NamedTuple):
    """What one container holds before encoding."""
    array: np.ndarray
    sample_rate: int
    file_bytes: int | None  # size of the input file, None for a part of a VRS recording


@dataclass
class Item:
    """One output to write: `read()` gives its Signal (encode) or container bytes (decode)."""
    source: str                  # the input as the user named it, "-" for stdin
    stem: str                    # output name in a folder, without the suffix
    read: Callable[[], object]
    stream: str | None = None    # blocks of one recording: coded by one streaming encoder
    part: dict = field(default_factory=dict)   # {"frame": i} or {"block": k} of a recording

    @property
    def label(self) -> str:
        name = "stdin" if self.source == "-" else self.source
        return " ".join([name, *(f"{key} {value}" for key, value in self.part.items())])


def cmd_encode(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .cli_batch import encode_index, index_mode
    from .codec import load_codec

    batch = index_mode(args, args.inputs, "INPUT")
    target = _target(args)
    if args.json == "-" and args.output == "-":
        raise CliError("-o - writes the containers to stdout: give --json a file name")
    try:
        codec = load_codec(args.codec, device=args.device, precision=args.precision,
                           engine=args.engine)
    except ValueError as exc:   # an engine/precision/device combination it cannot run
        raise CliError(str(exc)) from None
    if target is not None and target.kbps is not None and codec.kind != "audio":
        raise CliError(f"--bitrate is for audio; codec '{codec.name}' encodes images: use "
                       "--ratio, --bytes or --level")
    if batch:
        return encode_index(args, codec, target)
    items, grouped = _encode_items(args, codec)
    folder = _output_folder(args.output, items, grouped)
    report = sys.stderr if "-" in (args.output, args.json) else sys.stdout
    encoders: dict = {}
    results = []
    for item in _progress(items, "dance encode"):
        signal = item.read()
        data = _compress(codec, item, signal, target, encoders)
        destination = str(folder / f"{item.stem}.dnc") if folder else args.output
        _emit(destination, data)
        results.append(_encode_result(codec, item, signal, destination, data))
        tqdm.write(_encode_line(results[-1], item, signal), file=report)
    totals = _totals(results)
    if len(results) > 1:
        print(f"{totals['items']} containers: {totals['raw_bytes']:,} raw bytes -> "
              f"{totals['bytes']:,} bytes; compression ratio {totals['ratio']:.1f}:1 "
              "(raw bytes / .dnc)", file=report)
    if args.json:
        document = {"codec": codec.id, "items": results, "totals": totals}
        _emit(args.json, (json.dumps(document, indent=2, allow_nan=False) + "\n").encode())
    return 0


def _target(args: argparse.Namespace):
    """The Target of the rate flags (None: the codec's top level); CliError on a bad value."""
    from .targets import Target

    given = {key: getattr(args, key) for key in TARGET_FLAGS if getattr(args, key) is not None}
    if len(given) > 1:
        raise CliError(f"give one of --ratio, --bytes, --bitrate, --level, not "
                       f"{' and '.join(TARGET_FLAGS[key] for key in given)}")
    if not given:
        return None
    (key, text), = given.items()
    flag, convert = TARGET_FLAGS[key], int if key in ("level", "bytes") else float
    try:
        value = convert(text)
    except ValueError:
        raise CliError(f"{flag} {text}: not {'an integer' if convert is int else 'a number'}") \
            from None
    try:
        return Target(**{key: value})
    except ValueError as exc:
        raise CliError(f"{flag} {text}: {exc}") from None


def _compress(codec, item: Item, signal: Signal, target, encoders: dict) -> bytes:
    """One container; the blocks of one stream share a streaming encoder (filter state)."""
    try:
        if item.stream is None:
            return codec.compress(signal.array, signal.sample_rate, target)
        if item.stream not in encoders:
            encoders[item.stream] = codec.audio_encoder(signal.sample_rate)
        return encoders[item.stream].encode(signal.array, target)
    except ValueError as exc:  # a target no level meets, a signal too large for one container
        raise CliError(f"{item.label}: {exc}") from None


def _encode_result(codec, item: Item, signal: Signal, destination: str, data: bytes) -> dict:
    """The JSON summary of one container."""
    from .bitstream import unpack
    from .codec import raw_bytes

    raw = raw_bytes(signal.array)
    return {"input": item.source, **item.part, "output": destination, "bytes": len(data),
            "raw_bytes": raw, "ratio": raw / len(data), "file_bytes": signal.file_bytes,
            "level": unpack(data).level, "levels": codec.levels, "codec": codec.id}


def _encode_line(result: dict, item: Item, signal: Signal) -> str:
    shape = "×".join(str(s) for s in signal.array.shape)
    file_part = "" if signal.file_bytes is None else f", file {signal.file_bytes:,} bytes"
    file_ratio = "" if signal.file_bytes is None else \
        f", {signal.file_bytes / result['bytes']:.1f}:1 (input file bytes / .dnc)"
    output = "stdout" if result["output"] == "-" else result["output"]
    return (f"{item.label}: {shape} {signal.array.dtype} ({result['raw_bytes']:,} raw bytes"
            f"{file_part}) -> {output}: {result['bytes']:,} bytes, level {result['level']} of "
            f"0..{result['levels'] - 1} [{result['codec']}]; compression ratio "
            f"{result['ratio']:.1f}:1 (raw bytes / .dnc){file_ratio}")


def _totals(results: list[dict]) -> dict:
    size = sum(r["bytes"] for r in results)
    raw = sum(r["raw_bytes"] for r in results)
    return {"items": len(results), "bytes": size, "raw_bytes": raw,
            "ratio": raw / size if size else 0.0}


def _encode_items(args: argparse.Namespace, codec) -> tuple[list[Item], bool]:
    """The containers to write, in order, and whether a folder or pattern was among the
    inputs (then -o is a folder even for one container)."""
    from .data import VRS_SUFFIX

    suffixes = IMAGE_SUFFIXES if codec.kind == "image" else AUDIO_SUFFIXES
    sources, grouped = _expand(args.inputs, suffixes, also_matching=(VRS_SUFFIX,))
    _check_recording_flags(args, codec, any(s.lower().endswith(VRS_SUFFIX) for s in sources))
    block = None if args.block is None else _positive(args.block, "--block")
    items: list[Item] = []
    for source in sources:
        path = Path(source)
        if path.suffix.lower() != VRS_SUFFIX:
            items.append(Item(source, _stem(source), partial(_read, source, codec)))
        elif codec.kind == "image":
            items += _recording_frames(path, codec, args.frames)
        else:
            items += _recording_audio(path, codec, block)
    return items, grouped


def _check_recording_flags(args: argparse.Namespace, codec, any_recording: bool) -> None:
    """--frames (image codecs) and --block (audio codecs) select parts of .vrs inputs."""
    flags = {"--frames": (args.frames, "image"), "--block": (args.block, "audio")}
    for flag, (value, kind) in flags.items():
        if value is None:
            continue
        if not any_recording:
            raise CliError(f"{flag} applies to .vrs inputs, and none was given")
        if codec.kind != kind:
            raise CliError(f"{flag} is for {kind} codecs; '{codec.name}' is an {codec.kind} "
                           "codec")


def _expand(inputs: list[str], suffixes, also_matching=()) -> tuple[list[str], bool]:
    """Input files: files as given, a folder's files with `suffixes` (sorted, recursive),
    a glob pattern's matches with `suffixes` or `also_matching`; and whether a folder or a
    pattern was among the inputs. "-" (stdin) must come alone."""
    from .data import find_recordings

    if "-" in inputs:
        if len(inputs) > 1:
            raise CliError("- (stdin) must be the only input")
        return ["-"], False
    files: list[str] = []
    grouped = False
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files += map(str, find_recordings([path], set(suffixes)))
            grouped = True
        elif path.exists():
            files.append(text)
        elif any(c in text for c in "*?["):
            files += _matches(text, (*suffixes, *also_matching))
            grouped = True
        else:
            raise CliError(f"{text}: no such file or folder")
    return list(dict.fromkeys(files)), grouped


def _matches(pattern: str, suffixes) -> list[str]:
    """The files a glob pattern matches (** included) that have one of `suffixes`, sorted."""
    found = sorted(m for m in glob.glob(pattern, recursive=True)
                   if Path(m).is_file() and Path(m).suffix.lower() in suffixes)
    if not found:
        raise CliError(f"{pattern}: no {', '.join(suffixes)} files match")
    return found


def _stem(source: str) -> str:
    return "stdin" if source == "-" else Path(source).stem


def _positive(text: str, flag: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise CliError(f"{flag} {text}: expected a positive integer")
    return value


def _frame_indices(text: str | None, count: int, path: Path) -> range:
    """The frames START:STOP[:STEP] (python slice) selects of `count`."""
    if text is None:
        return range(count)
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        chosen = range(count)[slice(*(int(p) if p.strip() else None for p in parts))]
    except ValueError:
        raise CliError(f"--frames {text}: expected START:STOP (python slice, e.g. 0:4)") from None
    if not chosen:
        raise CliError(f"--frames {text} selects none of the {count} frames of {path}")
    return chosen


@contextmanager
def _native_log_to_null():
    """projectaria-tools logs to file descriptor 2 while it opens a recording: send that to
    /dev/null, so that progress bars and one-line errors stay readable."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _open_recording(path: Path):
    """A dance.data VRS reader with `path` open; DataError if it cannot be read."""
    from .data import VrsReader

    reader = VrsReader()
    with _native_log_to_null():
        reader.provider(path)
    return reader


def _recording_frames(path: Path, codec, frames: str | None) -> list[Item]:
    from .data import read_vrs_frame, vrs_frame_count

    if codec.preprocessor.channels != 3:
        raise CliError(f"{path}: codec '{codec.name}' takes {codec.preprocessor.channels}-"
                       "channel images; VRS frames are RGB")
    reader = _open_recording(path)
    provider = reader.provider(path)

    def read(index: int) -> Signal:
        return Signal(read_vrs_frame(provider, path, index), 0, None)

    return [Item(str(path), f"{path.stem}-{i:05d}", partial(read, i), part={"frame": i})
            for i in _frame_indices(frames, vrs_frame_count(path, reader), path)]


def _recording_audio(path: Path, codec, block: int | None) -> list[Item]:
    from .data import AUDIO_RATE, read_vrs_audio

    audio = read_vrs_audio(_open_recording(path).provider(path), path)
    if not len(audio):
        raise CliError(f"{path}: the recording holds no audio")
    if block is None:
        return [Item(str(path), path.stem, partial(Signal, audio, AUDIO_RATE, None))]
    return [Item(str(path), f"{path.stem}-{k:05d}",
                 partial(Signal, audio[start:start + block], AUDIO_RATE, None),
                 stream=str(path), part={"block": k})
            for k, start in enumerate(range(0, len(audio), block))]


def _output_folder(output: str, items: list[Item], grouped: bool) -> Path | None:
    """The folder outputs go to (created), or None when `output` names the one output."""
    folder = Path(output)
    if not (grouped or len(items) > 1 or folder.is_dir() or output.endswith(("/", os.sep))):
        return None
    if output == "-" or folder.is_file():
        raise CliError(f"-o {output}: several outputs (or a folder or pattern input) need "
                       "-o FOLDER")
    named: dict[str, str] = {}
    for item in items:
        if item.stem in named:
            raise CliError(f"{named[item.stem]} and {item.label} would both be written as "
                           f"{folder / item.stem}.*: give them different names or folders")
        named[item.stem] = item.label
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _progress(items: list, desc: str):
    """A progress bar on stderr (terminals only) for more than one item."""
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="item", file=sys.stderr,
                disable=True if len(items) < 2 else None)


def cmd_decode(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    sources, grouped = _expand(args.inputs, (".dnc",))
    items = [Item(s, _stem(s), partial(_read_bytes, s)) for s in sources]
    folder = _output_folder(args.output, items, grouped)
    report = sys.stderr if args.output == "-" else sys.stdout
    codecs: dict = {}
    for item in _progress(items, "dance decode"):
        data = item.read()
        codec, array, container = _decode(item, data, args, codecs)
        suffix = ".png" if container.kind == "image" else ".wav"
        destination = str(folder / f"{item.stem}{suffix}") if folder else args.output
        written = _write(destination, array, container.kind, container.sample_rate)
        tqdm.write(_decode_line(item, data, codec, container, destination, array, written),
                   file=report)
    return 0


def _decode_line(item: Item, data: bytes, codec, container, destination: str,
                 array: np.ndarray, written: int) -> str:
    from .codec import raw_bytes

    raw = raw_bytes(array)
    shape = "×".join(str(s) for s in array.shape)
    output = "stdout" if destination == "-" else destination
    return (f"{item.label}: {len(data):,} bytes, level {container.level} [{codec.id}] -> "
            f"{output}: {shape} {array.dtype} ({raw:,} raw bytes, file {written:,} bytes); "
            f"compression ratio {raw / len(data):.1f}:1 (raw bytes / .dnc)")


def _decode(item: Item, data: bytes, args: argparse.Namespace, codecs: dict):
    """(codec, array, container) of one .dnc; the codec is -c or the one the stream names."""
    from .bitstream import BitstreamError, is_block, unpack

    try:
        if is_block(data):      # a stream block names no codec: it takes -c
            if not args.codec:
                raise CliError(f"{item.label}: a stream block (bitstream version 3) names no "
                               "codec: pass its checkpoint with -c")
            if args.codec not in codecs:
                codecs[args.codec] = _load(args)
            codec = codecs[args.codec]
        else:
            codec = _decoder(item, unpack(data), args, codecs)
        array, container = codec.decode(data)
    except BitstreamError as exc:
        raise CliError(f"{item.label}: {exc}") from None
    return codec, array, container


def _load(args: argparse.Namespace):
    from .codec import load_codec
    return load_codec(args.codec, device=args.device)


def _decoder(item: Item, container, args: argparse.Namespace, codecs: dict):
    """The codec for `container`, loaded once per name; CliError naming the checkpoint
    needed when it is not this one."""
    from .codec import load_codec, load_codec_for
    from .zoo import CheckpointError

    needed = f"{container.codec_name}@{container.codec_hash.hex()}"
    key = args.codec or needed
    if key not in codecs:
        try:
            codecs[key] = (load_codec(key, device=args.device) if args.codec else
                           load_codec_for(container.codec_name, container.codec_hash, args.device))
        except CheckpointError:
            if args.codec:
                raise
            raise CliError(f"{item.label} needs checkpoint {needed}, which is not installed "
                           "here: pass that checkpoint with -c FILE") from None
    codec = codecs[key]
    if (codec.name, codec.hash_bytes) != (container.codec_name, container.codec_hash):
        have = f"-c {args.codec}" if args.codec else f"the installed '{container.codec_name}'"
        raise CliError(f"{item.label} needs checkpoint {needed}, but {have} is {codec.id}: "
                       "pass that checkpoint with -c FILE")
    return codec


def cmd_extract(args: argparse.Namespace) -> int:
    from .cli_batch import extract_index, index_mode
    from .data import AUDIO_RATE, read_vrs_audio, read_vrs_frame, vrs_frame_count

    batch = index_mode(args, [args.recording] if args.recording else [], "REC.vrs")
    if not (args.images or args.audio):
        raise CliError("nothing to extract: give --images DIR and/or --audio OUT.wav")
    if args.frames is not None and not args.images:
        raise CliError("--frames selects the frames --images writes; give --images DIR")
    if batch:
        return extract_index(args)
    path = Path(args.recording)
    reader = _open_recording(path)
    provider = reader.provider(path)
    if args.audio:      # first: quick, and a bad file name shows before the frames are written
        audio = read_vrs_audio(provider, path)
        written = _write(args.audio, audio, "audio", AUDIO_RATE)
        print(f"{path}: {len(audio):,} audio frames × {audio.shape[1]} channels "
              f"({len(audio) / AUDIO_RATE:.2f} s) -> {args.audio}: int32 at {AUDIO_RATE} Hz "
              f"({written:,} bytes)")
    if args.images:
        indices = _frame_indices(args.frames, vrs_frame_count(path, reader), path)
        folder = Path(args.images)
        folder.mkdir(parents=True, exist_ok=True)
        for index in _progress(indices, "dance extract"):
            frame = read_vrs_frame(provider, path, index)
            _write(str(folder / f"frame-{index:05d}.png"), frame, "image", 0)
        print(f"{path}: {len(indices)} RGB frames ({frame.shape[1]}×{frame.shape[0]}) -> "
              f"{folder}/frame-{indices[0]:05d}.png .. frame-{indices[-1]:05d}.png")
    return 0


def _read_bytes(source: str) -> bytes:
    return sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()


def _read(source: str, codec) -> Signal:
    """An image or audio file (or stdin's bytes) as the array `codec` encodes."""
    suffix = Path(source).suffix.lower()
    readable = IMAGE_SUFFIXES if codec.kind == "image" else AUDIO_SUFFIXES
    if source != "-" and suffix not in readable:
        raise CliError(f"{source}: '{codec.name}' is an {codec.kind} codec (it reads "
                       f"{', '.join(readable)}), got '{suffix}'")
    data = _read_bytes(source)
    name = "stdin" if source == "-" else source
    if codec.kind == "image":
        return Signal(_read_image(io.BytesIO(data), name, codec), 0, len(data))
    import soundfile as sf
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="int32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise CliError(f"{name}: not a readable audio file ({exc})") from None
    return Signal(samples, int(rate), len(data))


def _read_image(file, name: str, codec) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(codec.preprocessor.channels)
    if mode is None:
        raise CliError(f"codec '{codec.name}' takes {codec.preprocessor.channels}-channel "
                       "images, which image files cannot hold")
    try:
        with Image.open(file) as img:   # reads the header only: the size is known undecoded
            width, height = img.size
            if width * height * len(mode) > codec.max_elements:
                raise CliError(f"{name}: a {width}×{height} image is over the "
                               f"{codec.max_elements:,} elements codec '{codec.name}' encodes "
                               "at once")
            pixels = np.asarray(img.convert(mode))
    except UnidentifiedImageError:
        raise CliError(f"{name}: not a readable image") from None
    except Image.DecompressionBombError as exc:   # PIL refuses it at open, before its size
        raise CliError(f"{name}: refused unread: {exc}") from None
    except OSError as exc:      # truncated or corrupt pixel data
        raise CliError(f"{name}: not a readable image ({exc})") from None
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _write(destination: str, array: np.ndarray, kind: str, sample_rate: int) -> int:
    """Write a decoded array to a file (format from its suffix) or to stdout ("-": PNG or
    WAV); returns the bytes written."""
    data = _file_bytes(destination, array, kind, sample_rate)
    _emit(destination, data)
    return len(data)


def _file_bytes(destination: str, array: np.ndarray, kind: str, sample_rate: int) -> bytes:
    """The PNG (or other image format) or WAV/FLAC bytes of an array, format from the suffix
    of `destination` ("-": PNG or WAV)."""
    suffix = Path(destination).suffix.lower() if destination != "-" else \
        (".png" if kind == "image" else ".wav")
    buffer = io.BytesIO()
    if kind == "image":
        from PIL import Image
        if suffix not in IMAGE_SUFFIXES:
            raise CliError(f"{destination}: the stream holds an image; write .png (or another "
                           "image format)")
        image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
        image.save(buffer, format=Image.registered_extensions()[suffix])
    else:
        import soundfile as sf
        if suffix not in AUDIO_SUFFIXES:
            raise CliError(f"{destination}: the stream holds audio; write .wav or .flac")
        if array.dtype == np.int64:     # int32 counts held wider (the decoder clips to int32)
            array = array.astype(np.int32)
        try:
            sf.write(buffer, array, sample_rate or 48000, format=suffix[1:].upper(),
                     subtype="PCM_32" if suffix == ".wav" else "PCM_24")
        except (sf.LibsndfileError, ValueError) as exc:  # e.g. a rate FLAC cannot hold
            raise CliError(f"{destination}: cannot write {array.shape[1]}-channel audio at "
                           f"{sample_rate or 48000} Hz as {suffix[1:].upper()} ({exc})") from None
    return buffer.getvalue()


def _emit(destination: str, data: bytes) -> None:
    """Write bytes to a file, or to stdout for "-"."""
    if destination == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        Path(destination).write_bytes(data)


