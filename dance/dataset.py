"""The dataset manifest (`dance dataset index`; its parser is in dance.cli): one Parquet row per
VRS recording, so that every dataset-scale job (`dance eval --index`, `dance encode --index`,
`dance extract --index`, `dance train` with `data.index`) reads the same list, the same counts
and the same split (docs/scale.md).

A file that fails dance/vrs.py's checks or has no readable stream is a row with status
"corrupt" and the reason, never a fatal error. The split is by recording and comes from a
seeded hash of the recording's id, so adding recordings never moves the others.
"""
from __future__ import annotations

import glob
import hashlib
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

from .aria import MIC_STREAM, RGB_STREAM, STREAM_NAMES
from .data import VRS_SUFFIX, DataError

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
MAX_INDEX_BYTES = 256 << 20     # a million recordings take ~100 MB; refuse larger before reading
INDEX_VERSION = 1


@dataclass(frozen=True)
class Recording:
    """One row of the index. Counts are 0 for a stream the recording lacks (or when corrupt)."""

    id: str                 # path relative to the indexed root, without .vrs, "/"-separated
    path: str               # absolute path of the file when indexed
    bytes: int
    status: str             # "ok" or "corrupt"
    error: str              # why it is corrupt; "" when ok
    split: str              # train, val or test
    streams: str            # stream ids with names, "214-1 camera-rgb, 231-1 mic, ..."
    rgb_frames: int
    rgb_width: int
    rgb_height: int
    audio_records: int
    audio_frames: int       # samples per channel
    audio_channels: int
    duration_s: float       # first to last record of the RGB or mic stream
    damaged_records: int    # records dance/vrs.py found damaged (skipped by every reader)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


COLUMNS = tuple(f.name for f in fields(Recording))


def split_for(recording_id: str, seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """train/val/test from a seeded hash of the id: stable when other recordings come and go."""
    digest = hashlib.sha256(f"{seed}:{recording_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, fraction in zip(SPLITS, fractions):
        edge += fraction
        if position < edge:
            return name
    return SPLITS[-1]


def parse_fractions(text: str) -> tuple[float, float, float]:
    """"0.8,0.1,0.1" -> fractions of train, val, test (they must sum to 1)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values) \
            or abs(sum(values) - 1) > 1e-6:
        raise DataError(f"--split {text}: expected three fractions train,val,test that sum to 1 "
                        "(e.g. 0.8,0.1,0.1)")
    return values    # type: ignore[return-value]


def find_vrs(inputs: Sequence[str]) -> tuple[list[Path], Path]:
    """The .vrs files of folders (recursive), glob patterns and files, sorted; and the root ids
    are relative to (the common folder of all of them)."""
    found: list[Path] = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            found += (p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == VRS_SUFFIX)
        elif path.is_file():
            found.append(path)
        elif any(c in text for c in "*?["):
            found += (Path(m) for m in glob.glob(text, recursive=True)
                      if Path(m).is_file() and m.lower().endswith(VRS_SUFFIX))
        else:
            raise DataError(f"{text}: no such file or folder")
    files = sorted({p.resolve() for p in found})
    if not files:
        raise DataError(f"{' '.join(inputs)}: no {VRS_SUFFIX} recordings")
    return files, Path(os.path.commonpath([str(f.parent) for f in files]))


def describe(path: Path, root: Path, seed: int, fractions: Sequence[float]) -> Recording:
    """The index row of one file; any reason it cannot be read makes a "corrupt" row."""
    from . import vrs

    rid = path.relative_to(root).with_suffix("").as_posix()
    size = path.stat().st_size
    split = split_for(rid, seed, fractions)
    try:
        provider, checked = vrs.open_provider(path)
        counts = _stream_counts(provider, path)
    except (vrs.VrsError, DataError, RuntimeError, OSError) as exc:
        return Recording(rid, str(path), size, "corrupt", _one_line(exc), split, "", 0, 0, 0, 0,
                         0, 0, 0.0, 0)
    damaged = sum(len(v) for v in checked.damaged.values())
    if not (counts["rgb_frames"] or counts["audio_records"]):
        return Recording(rid, str(path), size, "corrupt",
                         f"no records in {RGB_STREAM} (RGB) or {MIC_STREAM} (mics)", split,
                         counts["streams"], 0, 0, 0, 0, 0, 0, 0.0, damaged)
    return Recording(rid, str(path), size, "ok", "", split, damaged_records=damaged, **counts)


def _stream_counts(provider, path: Path) -> dict:
    """Streams, RGB frame count and size, audio records/frames/channels and duration."""
    from projectaria_tools.core.sensor_data import TimeDomain
    from projectaria_tools.core.stream_id import StreamId

    from .data import read_vrs_audio

    present = {str(sid): sid for sid in provider.get_all_streams()}
    streams = ", ".join(f"{s} {STREAM_NAMES.get(s, provider.get_label_from_stream_id(sid))}"
                        for s, sid in sorted(present.items()))
    counts = dict(streams=streams, rgb_frames=0, rgb_width=0, rgb_height=0, audio_records=0,
                  audio_frames=0, audio_channels=0, duration_s=0.0)
    spans = []
    if RGB_STREAM in present:
        sid = StreamId(RGB_STREAM)
        counts["rgb_frames"] = provider.get_num_data(sid)
        config = provider.get_image_configuration(sid)
        counts["rgb_width"], counts["rgb_height"] = config.image_width, config.image_height
    if MIC_STREAM in present and provider.get_num_data(StreamId(MIC_STREAM)):
        sid = StreamId(MIC_STREAM)
        records = provider.get_num_data(sid)
        first = read_vrs_audio(provider, path, 0, 1)   # Aria writes 4096 frames per record
        counts["audio_records"] = records
        counts["audio_channels"] = int(first.shape[1])
        counts["audio_frames"] = records * len(first)  # the layout dance.data.VrsAudio reads
    for label in (RGB_STREAM, MIC_STREAM):
        if label in present and provider.get_num_data(StreamId(label)):
            sid = StreamId(label)
            spans.append((provider.get_first_time_ns(sid, TimeDomain.RECORD_TIME),
                          provider.get_last_time_ns(sid, TimeDomain.RECORD_TIME)))
    if spans:
        counts["duration_s"] = (max(e for _, e in spans) - min(s for s, _ in spans)) / 1e9
    return counts


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def index_recordings(inputs: Sequence[str], seed: int = 0,
                     fractions: Sequence[float] = DEFAULT_FRACTIONS,
                     progress: bool = True) -> list[Recording]:
    """Describe every recording under `inputs` (sorted by id)."""
    from tqdm import tqdm

    files, root = find_vrs(inputs)
    rows = [describe(f, root, seed, fractions)
            for f in tqdm(files, desc="dance dataset index", unit="file", disable=not progress)]
    return sorted(rows, key=lambda r: r.id)


def write_index(rows: Sequence[Recording], out: Path, seed: int,
                fractions: Sequence[float]) -> None:
    """Parquet with the columns of Recording; the seed and fractions in its metadata."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([asdict(r) for r in rows])
    meta = {"dance_index": json.dumps({"version": INDEX_VERSION, "seed": seed,
                                       "fractions": list(fractions)})}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)


def load_index(path: str | Path, split: str | None = None, include_corrupt: bool = False
               ) -> list[Recording]:
    """The rows of an index written by `dance dataset index` (only status ok unless
    include_corrupt; only `split` when given); DataError naming the file on anything else."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if split is not None and split not in SPLITS:
        raise DataError(f"--split {split}: one of {', '.join(SPLITS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such index file (make one with `dance dataset index DIR -o "
                        f"{path.name}`)")
    if path.stat().st_size > MAX_INDEX_BYTES:
        raise DataError(f"{path}: {path.stat().st_size:,} bytes, over the {MAX_INDEX_BYTES:,} an "
                        "index may hold")
    try:
        schema = pq.read_schema(path)
        if not (schema.metadata or {}).get(b"dance_index"):
            raise DataError(f"{path}: a Parquet file, but not a dance index (no dance_index "
                            "metadata)")
        missing = [c for c in COLUMNS if c not in schema.names]
        if missing:
            raise DataError(f"{path}: index lacks column(s) {', '.join(missing)}")
        table = pq.read_table(path, columns=list(COLUMNS))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable index ({_one_line(exc)})") from None
    rows = []
    for number, record in enumerate(table.to_pylist()):
        try:
            row = Recording(**{c: _typed(c, record[c]) for c in COLUMNS})
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: row {number}: {exc}") from None
        if row.split not in SPLITS or row.status not in ("ok", "corrupt"):
            raise DataError(f"{path}: row {number} ({row.id}): split {row.split!r} / status "
                            f"{row.status!r} is not one an index holds")
        if (include_corrupt or row.ok) and (split is None or row.split == split):
            rows.append(row)
    return rows


_TYPES = {f.name: f.type for f in fields(Recording)}


def _typed(column: str, value):
    """A cell as its field's type; a null or a wrong type is a ValueError naming the column."""
    kind = {"str": str, "int": int, "float": float}[str(_TYPES[column])]
    if value is None or isinstance(value, bool) or not isinstance(value, (kind, int) if kind is float
                                                                 else kind):
        raise ValueError(f"column {column}: {value!r} is not a {kind.__name__}")
    if kind is int and value < 0:
        raise ValueError(f"column {column}: {value} is negative")
    return kind(value)
