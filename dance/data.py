"""Training datasets: Aria VRS recordings, image folders, WAV/FLAC folders, simulated audio.

Items are raw sensor values as torch tensors, channels first: images uint8 (3, H, W), audio int32
(7, frames). Preprocessing (companding, scaling) is the model's business and happens in training,
so the same preprocessing runs at training and coding time.

Validation data is split off BY RECORDING (a VRS file, an image file, an audio file or a
simulated clip), never by frame, so near-identical neighbouring frames cannot leak across the
split. A single recording cannot be split that way; then its last frames/segments in time are
held out and a note says so.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from . import vrs
from .aria import MIC_CHANNELS, MIC_STREAM, RGB_STREAM
from .aria import MIC_SAMPLE_RATE as AUDIO_RATE

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
AUDIO_SUFFIXES = {".wav", ".flac"}
VRS_SUFFIX = ".vrs"


class DataError(ValueError):
    """A missing, unreadable or unusable input; the message names the file."""


# ----------------------------------------------------------------------------- files and splits

def find_recordings(sources: Sequence[str | Path], suffixes: set[str]) -> list[Path]:
    """Files with the given suffixes from files or folders (searched recursively), sorted."""
    found: list[Path] = []
    for source in sources:
        path = resolve_source(source)
        if path.is_file():
            if path.suffix.lower() not in suffixes:
                raise DataError(f"{path}: unsupported file type (expected {', '.join(sorted(suffixes))})")
            found.append(path)
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not files:
                raise DataError(f"{path}: no {', '.join(sorted(suffixes))} files in this folder")
            found += files
        else:
            raise DataError(f"{path}: no such file or folder")
    return sorted(dict.fromkeys(found))


def resolve_source(source: str | Path) -> Path:
    """A path, or ``pkg:PACKAGE/RELATIVE/PATH`` for a file shipped inside an installed package
    (e.g. ``pkg:matplotlib/mpl-data/sample_data/grace_hopper.jpg``), so configs stay portable."""
    text = str(source)
    if not text.startswith("pkg:"):
        return Path(text).expanduser()
    package, _, relative = text[4:].partition("/")
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{text}: package {package!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / relative


HELDOUT_PERCENT = 15
SPLITS = ("train", "heldout")


def split_of(name: str) -> str:
    """"heldout" for ~15 % of file names, else "train": a stable hash, so the split never moves
    (the training recordings and photos are split by it; evaluations use "heldout")."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return "heldout" if digest % 100 < HELDOUT_PERCENT else "train"


def split_by_recording(recordings: Sequence[Path], val_fraction: float,
                       seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded shuffle, then hold out round(val_fraction * n) recordings (at least one if n >= 2)."""
    recordings = list(recordings)
    if len(recordings) < 2 or val_fraction <= 0:
        return recordings, []
    order = np.random.default_rng(seed).permutation(len(recordings))
    n_val = min(len(recordings) - 1, max(1, round(val_fraction * len(recordings))))
    val = sorted(recordings[i] for i in order[:n_val])
    return [r for r in recordings if r not in val], val


def _time_split(count: int, val_fraction: float) -> tuple[range, range]:
    """Split indices 0..count-1 of one recording into a leading train and trailing val range."""
    n_val = max(1, math.ceil(val_fraction * count)) if count >= 2 and val_fraction > 0 else 0
    return range(0, count - n_val), range(count - n_val, count)


def _crop(x: torch.Tensor, size: int | None, random: bool) -> torch.Tensor:
    """Crop the trailing dims to ``size``: a random offset drawn from torch's global generator (so
    a resumed run restores it with the RNG state) or centred; reflect-pad inputs that are smaller."""
    if size is None:
        return x
    spatial = x.shape[1:]
    pad = [max(0, size - s) for s in spatial]
    if any(pad):
        flat = []
        for p in reversed(pad):
            flat += [p // 2, p - p // 2]
        mode = "reflect" if all(p < s for p, s in zip(pad, spatial)) else "replicate"
        x = torch.nn.functional.pad(x[None].float(), flat, mode=mode)[0].to(x.dtype)
    slices = []
    for s in x.shape[1:]:
        start = int(torch.randint(0, s - size + 1, ())) if random else (s - size) // 2
        slices.append(slice(start, start + size))
    return x[(slice(None), *slices)]


Transform = Callable[[torch.Tensor], torch.Tensor]


class _Cropping(Dataset):
    """Items pass through ``transform`` (the model's preprocessing, which for audio is a filter and
    must see the whole segment), then a random crop in training or a centred one otherwise."""

    def __init__(self, crop: int | None, train: bool, transform: Transform | None):
        self.crop, self.train, self.transform = crop, train, transform

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            x = self.transform(x)
        return _crop(x, self.crop, self.train)


# ----------------------------------------------------------------------------- VRS access

def open_vrs(path: Path):
    """A projectaria-tools data provider for ``path`` (checked by dance/vrs.py) or DataError."""
    try:
        return vrs.open_provider(path)[0]
    except (FileNotFoundError, vrs.VrsError) as e:
        raise DataError(str(e)) from None


def damaged_records(path: Path, stream: str) -> tuple[int, ...]:
    """Indices of the damaged data records of ``stream`` (see dance/vrs.py), usually none."""
    try:
        return vrs.scan(path).damaged.get(stream, ())
    except (FileNotFoundError, vrs.VrsError) as e:
        raise DataError(str(e)) from None


def _refuse_damaged(path: Path, stream: str, first: int, stop: int) -> None:
    bad = [i for i in damaged_records(path, stream) if first <= i < stop]
    if bad:
        raise DataError(f"{path}: record {bad[0]} of stream {stream} is damaged "
                        f"({len(bad)} damaged in records {first}..{stop - 1})")


def _stream(provider, path: Path, label: str):
    from projectaria_tools.core.stream_id import StreamId

    sid = StreamId(label)
    if sid not in provider.get_all_streams() or provider.get_num_data(sid) == 0:
        raise DataError(f"{path}: no records in stream {label}")
    return sid


class VrsReader:
    """Opens VRS files lazily (providers cannot be pickled into DataLoader workers)."""

    def __init__(self):
        self._providers: dict[Path, object] = {}

    def provider(self, path: Path):
        if path not in self._providers:
            self._providers[path] = open_vrs(path)
        return self._providers[path]

    def __getstate__(self):
        return {"_providers": {}}


def read_vrs_frame(provider, path: Path, index: int) -> np.ndarray:
    """RGB frame ``index`` of the RGB stream as uint8 (H, W, 3)."""
    sid = _stream(provider, path, RGB_STREAM)
    _refuse_damaged(path, RGB_STREAM, index, index + 1)
    try:
        frame = provider.get_image_data_by_index(sid, index)[0].to_numpy_array()
    except RuntimeError as e:  # an image the library cannot decode: "bad optional access"
        raise DataError(f"{path}: frame {index} of {RGB_STREAM} cannot be decoded ({e})") from None
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise DataError(f"{path}: frame {index} of {RGB_STREAM} has shape {frame.shape}, expected (H, W, 3)")
    return frame


def read_vrs_audio(provider, path: Path, first: int = 0, count: int | None = None) -> np.ndarray:
    """Audio records [first, first+count) of the mic stream as int32 (frames, 7)."""
    sid = _stream(provider, path, MIC_STREAM)
    total = provider.get_num_data(sid)
    stop = total if count is None else min(total, first + count)
    _refuse_damaged(path, MIC_STREAM, first, stop)
    blocks = []
    for i in range(first, stop):
        data = np.asarray(provider.get_audio_data_by_index(sid, i)[0].data, dtype=np.int64)
        if not data.size or data.size % MIC_CHANNELS:
            raise DataError(f"{path}: audio record {i} has {data.size} values, not a multiple of "
                            f"{MIC_CHANNELS} channels")
        blocks.append(data.reshape(-1, MIC_CHANNELS))
    return (np.concatenate(blocks).astype(np.int32) if blocks
            else np.zeros((0, MIC_CHANNELS), np.int32))


# ----------------------------------------------------------------------------- image datasets

class VrsFrames(_Cropping):
    """RGB frames from VRS recordings, as uint8 (3, H, W) crops; damaged frames are left out.

    ``frames`` optionally restricts each file to some frame indices (the time split of a single
    recording); by default every frame is used. Up to ``cache_frames`` decoded frames stay in
    memory, since training takes many crops from few frames and JPEG decoding dominates.
    """

    cache_frames = 32

    def __init__(self, files: Sequence[Path], crop: int | None, train: bool,
                 transform: Transform | None = None, frames: dict[Path, Sequence[int]] | None = None):
        super().__init__(crop, train, transform)
        self.reader = VrsReader()
        self._cache: dict[tuple[Path, int], torch.Tensor] = {}
        self.index: list[tuple[Path, int]] = []
        for path in files:
            count = vrs_frame_count(path, self.reader)
            chosen = frames.get(path, range(count)) if frames else range(count)
            damaged = set(damaged_records(path, RGB_STREAM))
            kept = [(path, i) for i in chosen if i not in damaged]
            if len(kept) < len(chosen):
                print(f"note: {path}: skipped {len(chosen) - len(kept)} damaged frame(s) of "
                      f"{RGB_STREAM}", file=sys.stderr)
            self.index += kept

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        path, k = self.index[i]
        frame = self._cache.get((path, k))
        if frame is None:
            pixels = read_vrs_frame(self.reader.provider(path), path, k)
            frame = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
            if len(self._cache) < self.cache_frames:
                self._cache[(path, k)] = frame
        return self._finish(frame)


def vrs_frame_count(path: Path, reader: VrsReader | None = None) -> int:
    provider = (reader or VrsReader()).provider(path)
    return provider.get_num_data(_stream(provider, path, RGB_STREAM))


class ImageFiles(_Cropping):
    """PNG/JPG images converted to RGB, as uint8 (3, H, W) crops."""

    def __init__(self, files: Sequence[Path], crop: int | None, train: bool,
                 transform: Transform | None = None):
        super().__init__(crop, train, transform)
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self._finish(torch.from_numpy(read_image(self.files[i]).transpose(2, 0, 1).copy()))


def read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None


# ----------------------------------------------------------------------------- audio datasets

@dataclass(frozen=True)
class Segment:
    path: Path
    start: int  # first frame (sample) of the segment in the recording


def _segment(audio: np.ndarray, frames: int) -> torch.Tensor:
    """(frames, channels) audio as a (channels, frames) tensor, a short one edge-padded."""
    if len(audio) < frames:
        audio = np.pad(audio, ((0, frames - len(audio)), (0, 0)), mode="edge")
    return torch.from_numpy(np.ascontiguousarray(audio.T))


def read_vrs_span(provider, path: Path, per_record: int, start: int, frames: int) -> np.ndarray:
    """Audio frames [start, start+frames) of the mic stream, reading only the records they span."""
    first = start // per_record
    count = math.ceil((start + frames) / per_record) - first
    audio = read_vrs_audio(provider, path, first, count)
    offset = start - first * per_record
    return audio[offset: offset + frames]


class _AudioSegments(_Cropping):
    """Fixed-length segments of multichannel recordings, as int32 (channels, frames) crops.

    A recording shorter than one segment is padded by repeating its edge values (``short="pad"``;
    zero padding would put a step of the DC offset into the data) or skipped with a note
    (``short="skip"``).
    """

    def __init__(self, files: Sequence[Path], segment_frames: int, crop: int | None, train: bool,
                 transform: Transform | None, short: str, segments: dict[Path, Sequence[int]] | None):
        super().__init__(crop, train, transform)
        if short not in ("pad", "skip"):
            raise DataError(f"data.short must be 'pad' or 'skip', got {short!r}")
        if segment_frames <= 0:
            raise DataError(f"data.segment_seconds gives {segment_frames} frames; must be positive")
        self.segment_frames = segment_frames
        self.index: list[Segment] = []
        for path in files:
            frames = self._length(path)
            count = frames // segment_frames
            if count == 0:
                if short == "skip" or frames == 0:
                    print(f"note: {path}: {frames / AUDIO_RATE:.3f} s of audio is shorter than one "
                          f"{segment_frames / AUDIO_RATE:.3f} s segment; skipped", file=sys.stderr)
                    continue
                print(f"note: {path}: {frames / AUDIO_RATE:.3f} s of audio is shorter than one "
                      f"{segment_frames / AUDIO_RATE:.3f} s segment; padded with its edge values",
                      file=sys.stderr)
                count = 1
            chosen = segments.get(path, range(count)) if segments else range(count)
            self.index += [Segment(path, k * segment_frames) for k in chosen]

    def segment_count(self, path: Path) -> int:
        return max(1, self._length(path) // self.segment_frames)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        seg = self.index[i]
        return self._finish(_segment(self._read(seg.path, seg.start, self.segment_frames),
                                     self.segment_frames))

    def _length(self, path: Path) -> int:
        raise NotImplementedError

    def _read(self, path: Path, start: int, frames: int) -> np.ndarray:
        raise NotImplementedError


class VrsAudio(_AudioSegments):
    """Segments of the 7-channel int32 microphone stream of VRS recordings."""

    def __init__(self, files: Sequence[Path], segment_frames: int, crop: int | None, train: bool,
                 transform: Transform | None = None, short: str = "pad",
                 segments: dict[Path, Sequence[int]] | None = None):
        self.reader = VrsReader()
        self._record_frames: dict[Path, tuple[int, int]] = {}
        super().__init__(files, segment_frames, crop, train, transform, short, segments)

    def _layout(self, path: Path) -> tuple[int, int]:
        """(records, frames per record), read from the first record (Aria writes 4096 per record)."""
        if path not in self._record_frames:
            provider = self.reader.provider(path)
            records = provider.get_num_data(_stream(provider, path, MIC_STREAM))
            per_record = len(read_vrs_audio(provider, path, 0, 1))
            self._record_frames[path] = (records, per_record)
        return self._record_frames[path]

    def _length(self, path: Path) -> int:
        records, per_record = self._layout(path)
        return records * per_record

    def _read(self, path: Path, start: int, frames: int) -> np.ndarray:
        _, per_record = self._layout(path)
        return read_vrs_span(self.reader.provider(path), path, per_record, start, frames)


class AudioFiles(_AudioSegments):
    """Segments of WAV/FLAC files read as int32 (soundfile scales other bit depths to full range)."""

    def __init__(self, files: Sequence[Path], segment_frames: int, crop: int | None, train: bool,
                 transform: Transform | None = None, short: str = "pad",
                 segments: dict[Path, Sequence[int]] | None = None, channels: int | None = None):
        self.channels = channels
        super().__init__(files, segment_frames, crop, train, transform, short, segments)

    def _info(self, path: Path):
        import soundfile as sf

        try:
            info = sf.info(str(path))
        except (RuntimeError, sf.LibsndfileError) as e:
            raise DataError(f"{path}: cannot read audio ({e})") from None
        if self.channels is not None and info.channels != self.channels:
            raise DataError(f"{path}: {info.channels} channels, expected {self.channels}")
        return info

    def _length(self, path: Path) -> int:
        return self._info(path).frames

    def _read(self, path: Path, start: int, frames: int) -> np.ndarray:
        import soundfile as sf

        try:
            audio, _ = sf.read(str(path), start=start, frames=frames, dtype="int32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as e:
            raise DataError(f"{path}: cannot read audio ({e})") from None
        return audio


# ----------------------------------------------------------------------------- from a dataset index

class OpenRecordings:
    """VRS providers by path, at most `limit` of them open: the least recently used one is
    dropped (which closes its file) before another opens. Workers start with none open."""

    def __init__(self, limit: int):
        self.limit, self.opens = limit, 0
        self._open: OrderedDict[Path, object] = OrderedDict()

    def get(self, path: Path) -> tuple[object, bool]:
        """The provider of `path`, and whether it was opened just now."""
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path], False
        while len(self._open) >= self.limit:
            self._open.popitem(last=False)
        self._open[path] = open_vrs(path)
        self.opens += 1
        return self._open[path], True

    def __len__(self) -> int:
        return len(self._open)

    def __getstate__(self):
        return {"limit": self.limit, "opens": 0, "_open": OrderedDict()}


class IndexItems(_Cropping):
    """Items numbered through the recordings of a dataset index (dance/dataset.py): item i is
    (recording, position) found from the index's counts, so no file is opened to count them,
    and at most `max_open` recordings are open at once (dance.train.RecordingGroupSampler
    orders the items so that each is opened about once per epoch). Only for a recording the
    index counts damaged records in are they looked up (from the check `open_vrs` ran anyway);
    an item that falls on one is replaced by the next intact item of that recording, so the
    counts stay those of the index."""

    stream = ""

    def __init__(self, rows: Sequence, counts: Sequence[int], records: Sequence[int],
                 crop: int | None, train: bool, transform: Transform | None, max_open: int):
        super().__init__(crop, train, transform)
        self.paths = [Path(r.path) for r in rows]
        self.counts = np.asarray(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self._records = np.asarray(records, dtype=np.int64)
        self._damaged = np.asarray([r.damaged_records for r in rows], dtype=np.int64)
        self.max_open = max_open
        self.recordings = OpenRecordings(max_open)
        self._noted: set[int] = set()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """(recording, position in it) of item i."""
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} of {len(self)}")
        r = int(np.searchsorted(self.starts, i, side="right")) - 1
        return r, i - int(self.starts[r])

    def _open(self, r: int):
        """The recording's provider; on opening, its record count must still be the index's."""
        path = self.paths[r]
        provider, fresh = self.recordings.get(path)
        if fresh:
            found = provider.get_num_data(_stream(provider, path, self.stream))
            if found != self._records[r]:
                raise DataError(f"{path}: {found} records in stream {self.stream}, the index says "
                                f"{self._records[r]}: the file changed since it was indexed (run "
                                "`dance dataset index` again)")
        return provider

    def _intact(self, r: int, position: int) -> int:
        """`position`, or if it falls on a damaged record the next intact one (cyclically)."""
        if not self._damaged[r]:
            return position
        bad = damaged_records(self.paths[r], self.stream)
        count = int(self.counts[r])
        for step in range(count):
            candidate = (position + step) % count
            if not self._touches(r, candidate, bad):
                if step and r not in self._noted:
                    self._noted.add(r)
                    print(f"note: {self.paths[r]}: items on damaged records of {self.stream} are "
                          "replaced by the next intact ones", file=sys.stderr)
                return candidate
        raise DataError(f"{self.paths[r]}: every item of stream {self.stream} falls on a damaged "
                        "record")

    def _touches(self, r: int, position: int, bad: Sequence[int]) -> bool:
        raise NotImplementedError


class IndexFrames(IndexItems):
    """The RGB frames of an index's recordings, as uint8 (3, H, W) crops."""

    stream = RGB_STREAM

    def __init__(self, rows: Sequence, crop: int | None, train: bool,
                 transform: Transform | None = None, max_open: int = 4):
        rows = [r for r in rows if r.rgb_frames]
        frames = [r.rgb_frames for r in rows]
        super().__init__(rows, frames, frames, crop, train, transform, max_open)

    def _touches(self, r: int, position: int, bad: Sequence[int]) -> bool:
        return position in bad

    def __getitem__(self, i: int) -> torch.Tensor:
        r, k = self.locate(i)
        provider = self._open(r)
        pixels = read_vrs_frame(provider, self.paths[r], self._intact(r, k))
        return self._finish(torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))))


class IndexAudio(IndexItems):
    """Fixed-length segments of the mic stream of an index's recordings, as int32 (7, frames)
    crops; a recording shorter than one segment is padded or skipped (`short`, as VrsAudio)."""

    stream = MIC_STREAM

    def __init__(self, rows: Sequence, segment_frames: int, crop: int | None, train: bool,
                 transform: Transform | None = None, short: str = "pad", max_open: int = 4):
        if short not in ("pad", "skip"):
            raise DataError(f"data.short must be 'pad' or 'skip', got {short!r}")
        if segment_frames <= 0:
            raise DataError(f"data.segment_seconds gives {segment_frames} frames; must be positive")
        kept, counts = [], []
        self.short_recordings = 0
        for row in rows:
            if not row.audio_records:
                continue
            count = row.audio_frames // segment_frames
            if count == 0:
                self.short_recordings += 1
                if short == "skip":
                    continue
                count = 1
            kept.append(row)
            counts.append(count)
        self.segment_frames = segment_frames
        self._per_record = np.asarray([r.audio_frames // r.audio_records for r in kept], np.int64)
        super().__init__(kept, counts, [r.audio_records for r in kept], crop, train, transform,
                         max_open)

    def _records_of(self, r: int, position: int) -> range:
        per_record = int(self._per_record[r])
        start = position * self.segment_frames
        return range(start // per_record, math.ceil((start + self.segment_frames) / per_record))

    def _touches(self, r: int, position: int, bad: Sequence[int]) -> bool:
        span = self._records_of(r, position)
        return any(b in span for b in bad)

    def __getitem__(self, i: int) -> torch.Tensor:
        r, k = self.locate(i)
        provider = self._open(r)
        start = self._intact(r, k) * self.segment_frames
        audio = read_vrs_span(provider, self.paths[r], int(self._per_record[r]), start,
                              self.segment_frames)
        return self._finish(_segment(audio, self.segment_frames))


INDEX_KEYS = ("index", "index_split", "val_split", "open_recordings")
SOURCE_KEYS = ("sources", "extra_train", "val_sources", "val_fraction", "simulated", "aria_like")


def build_index_datasets(data: dict, modality: str, channels: int | None = None,
                         transform: Transform | None = None) -> Splits:
    """Train/validation datasets from the recordings of a dataset index: ``data.index`` (a
    path, relative to the working directory like ``sources``), ``index_split`` (train) and
    ``val_split`` (val; null: no validation), ``open_recordings`` (4: recordings open at once
    and shuffled together), with ``crop``, ``val_crop``, ``segment_seconds``, ``short``."""
    from .dataset import SPLITS as INDEX_SPLITS
    from .dataset import load_index

    given = [k for k in SOURCE_KEYS if data.get(k) not in (None, [])]
    if given:
        raise DataError(f"data.index and data.{given[0]}: one or the other (the index lists the "
                        "recordings and their split)")
    index = data["index"]
    if not isinstance(index, str) or not index:
        raise DataError("data.index: the path of a dataset index (`dance dataset index DIR -o "
                        f"INDEX.parquet`), got {type(index).__name__} {index!r}")
    train_split, val_split = data.get("index_split", "train"), data.get("val_split", "val")
    if train_split not in INDEX_SPLITS:
        raise DataError(f"data.index_split: one of {', '.join(INDEX_SPLITS)}, got {train_split!r}")
    if val_split is not None and val_split not in INDEX_SPLITS:
        raise DataError(f"data.val_split: one of {', '.join(INDEX_SPLITS)} or null, got "
                        f"{val_split!r}")
    if val_split == train_split:
        raise DataError(f"data.val_split: {val_split} is data.index_split too: validation would "
                        "see the training recordings")
    max_open = data.get("open_recordings", 4)
    if not isinstance(max_open, int) or isinstance(max_open, bool) or max_open < 1:
        raise DataError(f"data.open_recordings: an integer >= 1, got {max_open!r}")
    if modality not in ("image", "audio"):
        raise DataError(f"modality must be 'image' or 'audio', got {modality!r}")
    path = resolve_source(index)
    try:
        rows = load_index(path)
    except DataError as e:
        raise DataError(f"data.index: {e}") from None
    if modality == "audio" and channels is not None:
        other = next((r for r in rows if r.audio_records and r.audio_channels != channels), None)
        if other is not None:
            raise DataError(f"data.index: {other.path}: {other.audio_channels} audio channels, the "
                            f"model takes {channels}")
    crop = int(data["crop"]) if data.get("crop") else None
    val_crop = int(data["val_crop"]) if data.get("val_crop") else crop
    segment_frames = int(round(float(data.get("segment_seconds", 6.0)) * AUDIO_RATE))
    unit = "RGB frames" if modality == "image" else "audio segments"

    def make(split: str, train: bool) -> IndexItems:
        chosen = [r for r in rows if r.split == split]
        if modality == "image":
            return IndexFrames(chosen, crop if train else val_crop, train, transform, max_open)
        return IndexAudio(chosen, segment_frames, crop if train else val_crop, train, transform,
                          data.get("short", "pad"), max_open)

    train_set = make(train_split, True)
    if not len(train_set):
        raise DataError(f"data.index: {path}: no {unit} in the {train_split} split "
                        f"({sum(r.split == train_split for r in rows)} readable recordings)")
    val_set: IndexItems | None = make(val_split, False) if val_split else None
    def recordings(items: IndexItems, split: str) -> str:
        return f"{len(items.paths)} {split} recording{'s' * (len(items.paths) != 1)}"

    notes = [f"{path}: {recordings(train_set, train_split)}, {len(train_set):,} {unit}"]
    if val_set is not None and len(val_set):
        notes[0] += f"; {recordings(val_set, val_split)} for validation"
    elif val_split:
        notes.append(f"{path}: no {unit} in the {val_split} split: no validation")
        val_set = None
    short = sum(getattr(s, "short_recordings", 0) for s in (train_set, val_set) if s is not None)
    if short:
        done = "skipped" if data.get("short") == "skip" else "padded with their edge values"
        notes.append(f"{short} recording(s) shorter than one {segment_frames / AUDIO_RATE:.3f} s "
                     f"segment: {done}")
    return Splits(train_set, val_set, notes)


# ----------------------------------------------------------------------------- from the config

@dataclass
class Splits:
    train: Dataset
    val: Dataset | None
    notes: list[str]


def build_datasets(data: dict, modality: str, seed: int = 0, channels: int | None = None,
                   transform: Transform | None = None) -> Splits:
    """Train/validation datasets from the ``data`` section of a training config.

    Keys: ``sources`` (files/folders, split by recording), ``extra_train`` (always training),
    ``val_sources`` (explicit validation; disables the automatic split), ``val_fraction``,
    ``crop`` (pixels or samples; ``val_crop`` for validation), ``segment_seconds`` and ``short``
    (audio), ``simulated`` (audio: {count, seconds, seed, val_count}), ``aria_like`` (images:
    training photos become Aria-like crops, `dance.augment`; VRS frames are used as they are).
    Or ``index`` (a dataset index, with its own split: `build_index_datasets`) instead of sources.
    """
    if data.get("index") is not None:
        return build_index_datasets(data, modality, channels, transform)
    stray = next((k for k in INDEX_KEYS[1:] if k in data), None)
    if stray:
        raise DataError(f"data.{stray}: only with data.index (the dataset index to read)")
    crop = int(data["crop"]) if data.get("crop") else None
    val_crop = int(data["val_crop"]) if data.get("val_crop") else crop
    train_crop = crop
    val_fraction = float(data.get("val_fraction", 0.1))
    segment_frames = int(round(float(data.get("segment_seconds", 6.0)) * AUDIO_RATE))
    short = data.get("short", "pad")
    aria_like = data.get("aria_like")
    if aria_like is not None and (modality != "image" or not isinstance(aria_like, dict) or not crop):
        raise DataError("data.aria_like: a mapping of augmentation settings, for images with a data.crop")
    notes: list[str] = []
    if modality == "image":
        suffixes = IMAGE_SUFFIXES | {VRS_SUFFIX}
    elif modality == "audio":
        suffixes = AUDIO_SUFFIXES | {VRS_SUFFIX}
    else:
        raise DataError(f"modality must be 'image' or 'audio', got {modality!r}")

    sources = find_recordings(data.get("sources") or [], suffixes)
    extra = find_recordings(data.get("extra_train") or [], suffixes)
    if data.get("val_sources"):
        train_files, val_files = sources, find_recordings(data["val_sources"], suffixes)
    else:
        train_files, val_files = split_by_recording(sources, val_fraction, seed)
    time_split: dict[Path, tuple[range, range]] = {}

    def make(files: list[Path], train: bool) -> list[Dataset]:
        parts: list[Dataset] = []
        crop = train_crop if train else val_crop
        vrs = [f for f in files if f.suffix.lower() == VRS_SUFFIX]
        other = [f for f in files if f.suffix.lower() != VRS_SUFFIX]
        pick = {p: r[0 if train else 1] for p, r in time_split.items() if p in vrs}
        if modality == "image":
            if vrs:
                parts.append(VrsFrames(vrs, crop, train, transform, frames=pick))
            if other and train and aria_like is not None:
                parts.append(_aria_like(other, crop, aria_like, transform))
            elif other:
                parts.append(ImageFiles(other, crop, train, transform))
        else:
            if vrs:
                parts.append(VrsAudio(vrs, segment_frames, crop, train, transform, short, segments=pick))
            if other:
                parts.append(AudioFiles(other, segment_frames, crop, train, transform, short,
                                        channels=channels))
        return [p for p in parts if len(p)]

    if len(sources) == 1 and not val_files and val_fraction > 0:
        only = sources[0]
        if only.suffix.lower() != VRS_SUFFIX:
            raise DataError(f"{only}: a single {only.suffix} file cannot be split into train and "
                            "validation; give more recordings, val_sources, or val_fraction: 0")
        if modality == "image":
            count = vrs_frame_count(only)
        else:
            count = VrsAudio([only], segment_frames, None, False, short=short).segment_count(only)
        train_range, val_range = _time_split(count, val_fraction)
        time_split[only] = (train_range, val_range)
        val_files = [only] if len(val_range) else []
        unit = "frames" if modality == "image" else "segments"
        notes.append(f"only one recording ({only.name}): holding out its last {len(val_range)} of {count} "
                     f"{unit} in time for validation" if len(val_range) else
                     f"only one recording ({only.name}) with one {unit[:-1]}: no validation set")

    train_parts = make(train_files + extra, True)
    val_parts = make(val_files, False)

    simulated = data.get("simulated")
    if simulated:
        if modality != "audio":
            raise DataError("data.simulated is only for audio")
        from .simulate import SimulatedAudioDataset

        count, seconds = int(simulated.get("count", 100)), float(simulated.get("seconds", 6.0))
        base = int(simulated.get("seed", 0))
        val_count = int(simulated.get("val_count", max(1, round(val_fraction * count))))
        # Validation clips use seeds after the training ones: a split by recording (clip).
        train_parts.append(_CroppedClips(SimulatedAudioDataset(count, seconds, base), crop, True, transform))
        if val_count:
            val_clips = SimulatedAudioDataset(val_count, seconds, base + count)
            val_parts.append(_CroppedClips(val_clips, val_crop, False, transform))

    if not train_parts:
        raise DataError("data: no training items (check data.sources / data.extra_train / data.simulated)")
    return Splits(ConcatDataset(train_parts), ConcatDataset(val_parts) if val_parts else None, notes)


def _aria_like(files: list[Path], crop: int, settings: dict, transform: Transform | None) -> Dataset:
    from tqdm import tqdm

    from .augment import AriaLikePhotos, AugmentError

    photos = [read_image(f) for f in tqdm(files, desc="decoding photos", unit="photo", leave=False)]
    try:
        return AriaLikePhotos(photos, crop, settings, transform)
    except AugmentError as e:
        raise DataError(str(e)) from None


class _CroppedClips(_Cropping):
    """Crops of whole-clip datasets, with the clips cached in memory (simulating is slow)."""

    def __init__(self, clips: Dataset, crop: int | None, train: bool, transform: Transform | None):
        super().__init__(crop, train, transform)
        self.clips = clips
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> torch.Tensor:
        if i not in self._cache:
            self._cache[i] = self.clips[i]
        return self._finish(self._cache[i])
