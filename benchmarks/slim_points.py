"""The operating-point table of a codec (made for the slimmable family): per level, the mean
container bytes of real compresses, the encoder network's time on one thread and the PSNR of the
decoded frames; and what switching levels per frame costs. With --out, the table goes into a
copy of the checkpoint under extra["points"] (extra is not hashed: the copy keeps the hash, so
it decodes every container the original wrote).

    python benchmarks/slim_points.py runs/slim-image/final.pt \\
        --data ../shared/data/aea/recording.vrs --out runs/slim-image/final-points.pt
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dance import data, zoo  # noqa: E402
from dance.codec import Codec, pad_to_multiple, raw_bytes  # noqa: E402
from dance.targets import Target  # noqa: E402
from evaluation.image_quality import psnr  # noqa: E402


def network_input(codec: Codec, frame: np.ndarray) -> torch.Tensor:
    """The tensor `Codec.compress` hands its encoder for `frame` (preprocessed, pooled, padded)."""
    x = codec.preprocessor.forward(frame, multiple=codec.stride, pool=codec.input_pool)
    x = pad_to_multiple(x.to(codec.device, codec.precision), codec.stride // codec.input_pool)
    return x.contiguous(memory_format=torch.channels_last)


def encoder_ms(codec: Codec, x: torch.Tensor, level: int, repeats: int = 3) -> float:
    """Best of `repeats` runs of the encoder that `level` runs, on one thread, in ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encoder = codec.encoder_at(level)
        times = []
        with torch.inference_mode():
            encoder(x)
            for _ in range(repeats):
                start = time.perf_counter()
                encoder(x)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 1000 * min(times)


def measure_points(codec: Codec, frames: list[np.ndarray]) -> list[dict]:
    """One row per level: members and bit depth (slimmable), mean bytes, ratio, encoder ms on
    one thread (median over frames), mean PSNR; plain numbers, storable in a checkpoint."""
    point = getattr(codec.model, "point", None)
    bit_depths = getattr(codec.model, "bit_depths", None)
    rows = []
    for level in tqdm(range(codec.levels), desc="operating points", unit="level"):
        sizes, quality, times = [], [], []
        for frame in frames:
            stream = codec.compress(frame, target=Target(level=level))
            sizes.append(len(stream))
            quality.append(psnr(frame, codec.decompress(stream)))
            times.append(encoder_ms(codec, network_input(codec, frame), level))
        row = {"level": level}
        if point is not None:
            members, depth = point(level)
            row.update(members=int(members), bit_depth=int(bit_depths[depth]))
        mean_bytes = float(np.mean(sizes))
        row.update(bytes=mean_bytes, ratio=float(np.mean([raw_bytes(f) for f in frames])) / mean_bytes,
                   encoder_ms=float(statistics.median(times)), psnr_db=float(np.mean(quality)))
        rows.append(row)
    return rows


def switch_cost(codec: Codec, frame: np.ndarray, levels: tuple[int, int],
                rounds: int = 4) -> dict:
    """What changing the level between frames costs: the first use of a level (its encoder
    part is built then, once), the lookup afterwards, and per level the median compress time
    of a frame that follows one at the other level against one that follows the same level
    (rounds of a a a b b b a b a b a b, so both see the same load on the machine)."""
    start = time.perf_counter()
    for level in levels:
        codec.encoder_at(level)
    first_ms = 1000 * (time.perf_counter() - start) / len(levels)
    start = time.perf_counter()
    for _ in range(1000):
        codec.encoder_at(levels[0])
        codec.encoder_at(levels[1])
    lookup_us = 1e6 * (time.perf_counter() - start) / 2000
    a, b = levels
    times: dict[tuple[bool, int], list[float]] = {}
    previous = None
    codec.compress(frame, target=Target(level=a))             # warm up
    for _ in range(rounds):
        for level in (a, a, a, b, b, b, a, b, a, b, a, b):
            start = time.perf_counter()
            codec.compress(frame, target=Target(level=level))
            elapsed = 1000 * (time.perf_counter() - start)
            if previous is not None:
                times.setdefault((previous != level, level), []).append(elapsed)
            previous = level
    same = {level: statistics.median(times[(False, level)]) for level in levels}
    switched = {level: statistics.median(times[(True, level)]) for level in levels}
    return {"first_use_ms": first_ms, "lookup_us": lookup_us,
            "compress_ms_same_level": float(np.mean(list(same.values()))),
            "compress_ms_after_switch": float(np.mean(list(switched.values()))),
            "switch_overhead_ms": float(np.mean([switched[k] - same[k] for k in levels]))}


def read_frames(source: Path, frames: str | None, crop: int | None) -> list[np.ndarray]:
    """RGB frames of a VRS recording (a `--frames` slice of them) or the images of a folder,
    centre-cropped to `crop` when given."""
    start, _, stop = (frames or ":").partition(":")
    chosen = slice(int(start) if start else None, int(stop) if stop else None)
    if source.suffix == ".vrs":
        provider = data.open_vrs(source)
        indices = range(data.vrs_frame_count(source))[chosen]
        images = [data.read_vrs_frame(provider, source, i) for i in indices]
    else:
        images = [data.read_image(f) for f in data.find_recordings([source], data.IMAGE_SUFFIXES)[chosen]]
    if not images:
        raise data.DataError(f"{source}: no frames (frames {frames or 'all'})")
    if crop:
        images = [np.ascontiguousarray(im[(im.shape[0] - min(crop, im.shape[0])) // 2:][:crop,
                                          (im.shape[1] - min(crop, im.shape[1])) // 2:][:, :crop])
                  for im in images]
    return images


def write_points(ckpt: dict, rows: list[dict], switch: dict, out: Path) -> None:
    """A copy of `ckpt` with the table in extra["points"] (and the switch cost): same hash."""
    extra = {**(ckpt.get("extra") or {}), "points": rows, "switch": switch}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({**ckpt, "extra": extra}, tmp)
    os.replace(tmp, out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="checkpoint file or zoo name")
    parser.add_argument("--data", type=Path, required=True, help=".vrs recording or image folder")
    parser.add_argument("--frames", help="START:STOP, a slice of the frames (default: all)")
    parser.add_argument("--crop", type=int, help="centre crop of N×N pixels (quicker runs)")
    parser.add_argument("--out", type=Path, help="write a copy of the checkpoint with the table")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the whole compresses (the encoder column: 1)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, args.threads))
    try:
        ckpt = zoo.load_checkpoint(zoo.resolve_checkpoint(args.checkpoint))
        codec = Codec.from_checkpoint(ckpt)
        frames = read_frames(args.data, args.frames, args.crop)
    except (zoo.CheckpointError, data.DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    switch = switch_cost(codec, frames[0], (0, codec.levels - 1))
    rows = measure_points(codec, frames)
    size = "x".join(map(str, frames[0].shape[:2]))
    print(f"{codec.id}: {len(frames)} frame(s) of {size} from {args.data}")
    print("level  members  bits      bytes    ratio  encoder ms (1 thread)  PSNR dB")
    for row in rows:
        print(f"{row['level']:5d}  {row.get('members', '-'):>7}  {row.get('bit_depth', '-'):>4}  "
              f"{row['bytes']:9.0f}  {row['ratio']:7.1f}  {row['encoder_ms']:21.2f}  "
              f"{row['psnr_db']:7.2f}")
    print(f"switching levels: first use {switch['first_use_ms']:.2f} ms per level (once), then "
          f"{switch['lookup_us']:.2f} us per switch; compress {switch['compress_ms_after_switch']:.1f}"
          f" ms after a switch vs {switch['compress_ms_same_level']:.1f} ms at the same level "
          f"({switch['switch_overhead_ms']:+.2f} ms per frame, medians)")
    if args.out:
        write_points(ckpt, rows, switch, args.out)
        print(f"wrote {args.out} (hash {ckpt['hash'][:12]}, extra['points'])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
