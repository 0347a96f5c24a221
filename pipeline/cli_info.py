"""`dance info FILE [--json]`: what a .dnc container, a .rec recording, a .vrs recording or a
codec checkpoint holds, read from the file alone (like ffprobe or `ros2 bag info`).

The kind comes from the file's first bytes (`dance.filekind`), not its name. Every reader used
here checks sizes before allocating; a file it cannot read is one `error:` line, exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dance.filekind import file_kind


class InfoError(Exception):
    """A file `dance info` cannot describe: printed as one line."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a .dnc, .rec, .vrs or checkpoint file",
                       description="What a file holds: a .dnc container (codec, shape, level, "
                       "bytes), a .rec recording (streams, packets, duration), a .vrs recording "
                       "(streams, records, duration) or a codec checkpoint (codec, family, "
                       "parameters).")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        if not path.is_file():
            raise InfoError(f"{path}: no such file")
        kind = file_kind(path)
        describe = _READERS.get(kind) if kind is not None else None
        if describe is None:
            raise InfoError(f"{path}: not a .dnc, .rec, .vrs or checkpoint file (unknown "
                            "first bytes)")
        info = {"file": str(path), "kind": kind, "bytes": path.stat().st_size, **describe(path)}
    except InfoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:   # the readers' own errors name the file
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"error: {path}: {text}" if str(path) not in str(text) else f"error: {text}",
              file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2) if args.json else _text(info))
    return 0


def _text(info: dict) -> str:
    """key: value lines; lists of dicts (streams, strings) as one indented line each."""
    lines, width = [], max(map(len, info)) + 2
    for key, value in info.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{key}:")
            lines += ["  " + "  ".join(f"{k} {_value(v)}" for k, v in item.items())
                      for item in value]
        else:
            lines.append(f"{key + ':':<{width}}{_value(value)}")
    return "\n".join(lines)


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, tuple)) and not value:
        return "-"
    if isinstance(value, (list, tuple)):
        return "×".join(map(str, value)) if all(isinstance(v, int) for v in value) \
            else ", ".join(map(str, value))
    return str(value)


def _container(path: Path) -> dict:
    from dance.bitstream import BitstreamError, unpack

    data = path.read_bytes()
    try:
        c = unpack(data)
    except BitstreamError as exc:
        raise InfoError(f"{path}: {exc}") from None
    raw = 1
    for s in c.shape:
        raw *= s
    raw *= 1 if c.dtype == "uint8" else 4
    info = {"version": c.version, "signal": c.kind, "dtype": c.dtype, "shape": list(c.shape),
            "codec": f"{c.codec_name}@{c.codec_hash.hex()}", "family": c.family,
            "level": c.level}
    if c.kind == "audio" and c.sample_rate:
        info |= {"sample_rate": c.sample_rate, "duration_s": round(c.shape[0] / c.sample_rate, 6)}
    return info | {"raw_bytes": raw, "ratio": round(raw / len(data), 3), "strings": [
        {"shape": list(shape), "bytes": len(s)} for s, shape in zip(c.strings, c.string_shapes)]}


def _block(path: Path) -> dict:
    from dance.bitstream import BitstreamError, unpack_block

    try:
        b = unpack_block(path.read_bytes())
    except BitstreamError as exc:
        raise InfoError(f"{path}: {exc}") from None
    return {"version": 3, "signal": "audio", "dtype": b.dtype, "frames": b.frames,
            "codec_tag": b.codec_tag.hex(), "level": b.level,
            "strings": [{"bytes": len(s)} for s in b.strings],
            "note": "a stream block names no codec: decode it with -c CHECKPOINT"}


def _recording(path: Path) -> dict:
    from .recordfile import RecordReader

    reader = RecordReader(path)
    streams: dict[str, dict] = {}
    for packet in reader:
        entry = streams.get(packet.stream)
        if entry is None:
            entry = streams[packet.stream] = {"stream": packet.stream, "packets": 0, "bytes": 0,
                                              "payload": _payload_kind(packet.payload),
                                              "first_ns": packet.timestamp_ns}
        entry["packets"] += 1
        entry["bytes"] += packet.nbytes
        entry["last_ns"] = packet.timestamp_ns
    for entry in streams.values():
        span = (entry["last_ns"] - entry["first_ns"]) / 1e9
        entry["duration_s"] = round(span, 6)
        entry["rate_hz"] = round((entry["packets"] - 1) / span, 3) if span > 0 else None
    firsts = [e["first_ns"] for e in streams.values()]
    lasts = [e["last_ns"] for e in streams.values()]
    return {"packets": reader.count,
            "closed_cleanly": reader.complete, "trailing_bytes": reader.trailing_bytes,
            "duration_s": round((max(lasts) - min(firsts)) / 1e9, 6) if streams else 0.0,
            "streams": list(streams.values())}


def _payload_kind(payload) -> str:
    import numpy as np
    if isinstance(payload, np.ndarray):
        return f"{payload.dtype} {'×'.join(map(str, payload.shape))}"
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return "bytes"
    return "dict"


def _vrs(path: Path) -> dict:
    """Streams of a VRS file through projectaria-tools, its native log kept off the terminal."""
    from projectaria_tools.core.sensor_data import TimeDomain

    from dance.cli_files import _open_recording
    from dance.data import DataError
    from dance.vrs import scan

    checked = scan(path)        # the file's structure, before projectaria-tools reads it
    try:
        provider = _open_recording(path).provider(path)
    except DataError as exc:
        raise InfoError(str(exc)) from None
    streams = []
    for sid in sorted(provider.get_all_streams(), key=str):
        count = provider.get_num_data(sid)
        entry = {"stream": str(sid), "label": provider.get_label_from_stream_id(sid),
                 "records": count}
        if count:
            first = provider.get_first_time_ns(sid, TimeDomain.DEVICE_TIME)
            last = provider.get_last_time_ns(sid, TimeDomain.DEVICE_TIME)
            span = (last - first) / 1e9
            entry |= {"duration_s": round(span, 6),
                      "rate_hz": round((count - 1) / span, 3) if span > 0 else None}
        streams.append(entry)
    spans = [s["duration_s"] for s in streams if "duration_s" in s]
    return {"records": sum(s["records"] for s in streams),
            "duration_s": max(spans) if spans else 0.0,
            "damaged": checked.summary() or "none", "streams": streams}


def _checkpoint(path: Path) -> dict:
    """The codec a checkpoint holds, from its config and tensors (no model is built)."""
    from dance.zoo import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise InfoError(str(exc)) from None
    config = ckpt["config"]
    try:
        tensors = sum(int(t.numel()) for t in ckpt["state_dict"].values())
        rate = config.get("rate") or {}
        return {"codec": f"{config.get('name', path.stem)}@{ckpt['hash'][:16]}",
                "family": str(config.get("family", "dance")), "signal": config.get("kind"),
                "dims": config.get("dims"), "in_channels": config.get("in_channels"),
                "latent_channels": config.get("latent_channels"),
                "levels": int(rate.get("levels", 1)), "network_elements": tensors,
                "checkpoint_version": ckpt.get("version"),
                "extra": sorted(map(str, ckpt.get("extra") or {}))}
    except (AttributeError, TypeError, ValueError) as exc:
        raise InfoError(f"{path}: malformed checkpoint config ({exc})") from None


_READERS = {"dnc": _container, "block": _block, "rec": _recording, "vrs": _vrs,
            "checkpoint": _checkpoint}
