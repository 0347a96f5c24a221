"""Encoder + entropy coding throughput of the DANCE codecs on ONE CPU thread, beside WebP.

Images: MP/s on 1408×1408 RGB frames (the Aria camera): the full `Codec.compress` (preprocess,
encoder network, quantization, rANS, container) of `aria-image`, against WebP quality 1,
method 0 (PIL) in the same run. Audio: × real time for 7-channel 48 kHz int32 audio through the
streaming encoder (DC filter, companding, network, rANS, one container per block) of
`aria-audio` and `aria-audio-fast`, in the runtime's 4096-sample blocks and in 1 s blocks.
Each codec runs with every encoder engine: PyTorch float32, PyTorch bfloat16, ONNX Runtime
float32 (decoding is the same for all). Targets: images ≥ 30 MP/s, audio ≥ 100× real time.

Timing: CPU time of this thread (`time.thread_time`), best of `--repeats` rounds, all variants
interleaved round by round — so jobs on other cores do not count, and every ratio compares
figures taken under the same conditions. Uses the real AEA sample
(../shared/data/aea/recording.vrs) when present, else synthetic signals; the trained default
checkpoints when present (or `--checkpoint NAME=PATH`), else random-init weights (said in the
table: their latents are not sparse, so entropy coding is slower than a trained codec's).

    python benchmarks/codec_speed.py [--repeats 5] [--vrs PATH] [--checkpoint NAME=PATH ...]
                                     [--retain-freed-memory]

Stream mode (`--stream NAME_OR_PATH`, e.g. aria-audio-vr): only the runtime's path for one
audio checkpoint — 4096-sample blocks through `codec.audio_encoder(rate, blocks=True)` at a
`--ratio` target (reservoir carried, level search from the previous block's level), × real
time for each encoder engine, and where a block's time goes: preprocessing (notch + compand),
the encoder network (padding included), the level search as sizes from real entropy coding
and as the family's size estimates (`CodecModel.estimate_bytes`), the final coding + block,
and the entropy codings the codec path makes per block. Test signal: `--wav` files (7-channel
PCM), else runs/sim-heldout/*.wav, else the AEA sample, else synthetic.

    python benchmarks/codec_speed.py --stream aria-audio-vr --ratio 600 [--wav F.wav ...]
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dance.codec import load_codec, retain_freed_memory  # noqa: E402
from dance.models import build_model  # noqa: E402
from dance.zoo import (CheckpointError, load_config, resolve_checkpoint,  # noqa: E402
                       save_checkpoint)

DEFAULT_VRS = ROOT.parent / "shared" / "data" / "aea" / "recording.vrs"
SIDE, RATE = 1408, 48000
IMAGE_TARGET, AUDIO_TARGET = 30.0, 100.0
ENGINES = (("torch", "float32"), ("torch", "bfloat16"), ("onnxruntime", "float32"))
REFERENCE_AUDIO_GMAC = 1.4866  # aria-audio encoder, conv + GDN, per second of audio (dance inspect)


def checkpoint_or_random(name: str, given: dict[str, str], tmp: Path) -> tuple[Path, str]:
    """The checkpoint to time and how it was trained ("trained" or "RANDOM init")."""
    if name in given:
        return Path(given[name]), f"trained ({given[name]})"
    try:
        return resolve_checkpoint(name), "trained"
    except CheckpointError:
        torch.manual_seed(0)
        config = load_config(name)
        path = tmp / f"{name}.pt"
        save_checkpoint(path, build_model(config), config)
        return path, "RANDOM init"


def sample_data(vrs: Path) -> tuple[list[np.ndarray], np.ndarray, str]:
    if vrs.is_file():
        from dance.data import open_vrs, read_vrs_audio, read_vrs_frame
        provider = open_vrs(vrs)
        frames = [read_vrs_frame(provider, vrs, i) for i in range(4)]
        return frames, read_vrs_audio(provider, vrs), f"real AEA sample {vrs.name}"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    base = np.stack([xx // 6, yy // 6, (xx + yy) // 11], -1) % 256
    frames = [(base + rng.integers(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
              for _ in range(4)]
    t = np.arange(16384)[:, None]
    audio = (1e6 * np.sin(2 * np.pi * 440 * t / RATE + np.arange(7)) + 4e7
             + rng.normal(0, 1e5, (16384, 7))).astype(np.int32)
    return frames, audio, "synthetic signals (AEA sample not found)"


def race(jobs: dict[str, callable], repeats: int) -> dict[str, float]:
    """Best thread CPU time (s) of each job over `repeats` interleaved rounds (after a warm-up)."""
    for job in jobs.values():
        job()
    best = dict.fromkeys(jobs, float("inf"))
    for _ in range(repeats):
        for name, job in jobs.items():
            start = time.thread_time()
            job()
            best[name] = min(best[name], time.thread_time() - start)
    return best


def webp(frame: np.ndarray) -> int:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "WEBP", quality=1, method=0)
    return buf.tell()


def gemm_gmacs(dtype: torch.dtype, repeats: int) -> float:
    """Single-thread GEMM throughput (GMAC/s): what this core's kernels reach at best."""
    a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    seconds = race({"mm": lambda: torch.mm(a, b)}, repeats)["mm"]
    return 1024 ** 3 / seconds / 1e9


def audio_blocks(audio: np.ndarray, block: int) -> list[np.ndarray]:
    """At least ~2 s of the sample audio (tiled), cut into blocks."""
    tiled = np.concatenate([audio] * max(1, int(np.ceil(2 * RATE / len(audio)))))
    return [tiled[i:i + block] for i in range(0, len(tiled) - block + 1, block)]


def breakdown(codec, items: list, image: bool, repeats: int) -> dict[str, float]:
    """Seconds per item set spent in preprocessing, the encoder network and entropy coding."""
    if image:
        xs = [codec.preprocessor.forward(f, codec.stride, codec.input_pool) for f in items]
    else:
        stream = codec.preprocessor.stream()
        xs = [stream.forward(b) for b in items]
    from dance.codec import pad_to_multiple
    with torch.inference_mode():
        xs = [pad_to_multiple(x.to(codec.precision), codec.stride // codec.input_pool) for x in xs]
        outputs = [codec.encoder(x) for x in xs]
        outputs = [tuple(o.float() for o in (out if isinstance(out, tuple) else (out,)))
                   for out in outputs]

    def preprocess():
        if image:
            for f in items:
                codec.preprocessor.forward(f, codec.stride, codec.input_pool)
        else:
            s = codec.preprocessor.stream()
            for b in items:
                s.forward(b)

    def network():
        with torch.inference_mode():
            for x in xs:
                codec.encoder(x)

    def entropy():
        for out in outputs:
            codec.model.code(out, codec.levels - 1)
    return race({"preprocess": preprocess, "network": network, "entropy": entropy}, repeats)


def stream_audio(wavs: list[Path], vrs: Path) -> tuple[np.ndarray, str]:
    """frames×7 int32 audio for the stream benchmark and where it came from."""
    wavs = wavs or sorted((ROOT / "runs" / "sim-heldout").glob("*.wav"))[:1]
    if wavs:
        import soundfile
        audio = np.concatenate([soundfile.read(str(w), dtype="int32")[0] for w in wavs])
        return audio, ", ".join(w.name for w in wavs)
    _, audio, source = sample_data(vrs)
    return audio, source


def stream_speed(name: str, ratio: float, audio: np.ndarray, repeats: int,
                 max_blocks: int = 120) -> list[str]:
    """Table lines: 4096-block stream encoding of checkpoint `name` at `ratio`, per engine."""
    from dance import bitstream
    from dance.codec import pad_to_multiple, raw_bytes
    from dance.models import CodecModel
    from dance.targets import Target, choose_level
    block, target = 4096, Target(ratio=ratio)
    blocks = audio_blocks(audio, block)[:max_blocks]
    seconds = len(blocks) * block / RATE
    codecs = {engine: load_codec(name, engine=engine) for engine in ("torch", "onnxruntime")}
    jobs, stages, notes = {}, {}, {}
    for engine, codec in codecs.items():
        model, tag = codec.model, codec.hash_bytes[:bitstream.TAG_BYTES]
        # one real stream encode: the reservoir and hints each block saw, its level, codings
        coded = [0]
        plain_code = model.code

        def counting(outputs, level, plain_code=plain_code):
            coded[0] += 1
            return plain_code(outputs, level)
        model.code = counting
        try:
            encoder = codec.audio_encoder(RATE, blocks=True)
            seen, sizes = [], []
            for b in blocks:
                carry, hint = encoder.carry, encoder.level
                sizes.append(len(encoder.encode(b, target)))
                seen.append((carry, hint, encoder.level))
        finally:
            del model.code
        stream = codec.preprocessor.stream()
        xs = [stream.forward(b) for b in blocks]
        with torch.inference_mode():
            outputs = [(codec.encoder(pad_to_multiple(x, codec.stride)).float(),) for x in xs]

        def pack(outputs, level, strings=None):
            strings = strings if strings is not None else model.code(outputs, level)[0]
            return bitstream.Block("int32", tag, level, block, tuple(strings)).pack()

        def search(estimates: bool, codec=codec, outputs=outputs, seen=seen, model=model,
                   pack=pack):
            for b, out, (carry, hint, _) in zip(blocks, outputs, seen):
                packed: dict[int, bytes] = {}

                def size(k, out=out, packed=packed):
                    if k not in packed:
                        packed[k] = pack(out, k)
                    return len(packed[k])
                estimate = (lambda k, out=out: len(pack(out, k, [bytes(n) for n in
                                                                 model.estimate_bytes(out, k)]))
                            ) if estimates else None
                choose_level(target, codec.levels, size, raw_bytes(b), block / RATE, carry,
                             hint, estimate)

        def preprocess(codec=codec):
            s = codec.preprocessor.stream()
            for b in blocks:
                s.forward(b)

        def network(codec=codec, xs=xs):
            with torch.inference_mode():
                for x in xs:
                    codec.encoder(pad_to_multiple(x, codec.stride))

        def final(outputs=outputs, seen=seen, pack=pack):
            for out, (_, _, level) in zip(outputs, seen):
                pack(out, level)

        def encode(codec=codec):
            s = codec.audio_encoder(RATE, blocks=True)
            for b in blocks:
                s.encode(b, target)
        jobs[engine] = encode
        stages[engine] = {"preprocess": preprocess, "network": network,
                          "search (coded sizes)": lambda search=search: search(False),
                          "final coding + block": final}
        if type(model).estimate_bytes is not CodecModel.estimate_bytes:
            stages[engine]["search (estimates)"] = lambda search=search: search(True)
        notes[engine] = (coded[0] / len(blocks), raw_bytes(np.concatenate(blocks)) / sum(sizes))
    totals = race(jobs, repeats)
    parts = race({(e, k): f for e, fs in stages.items() for k, f in fs.items()}, repeats)
    lines = [f"{name}: {len(blocks)} blocks of {block} samples ({seconds:.1f} s), target "
             f"ratio {ratio:g}; 1 CPU thread (thread CPU time, best of {repeats} interleaved "
             "rounds)"]
    for engine, t in totals.items():
        codings, achieved = notes[engine]
        per_block = 1e3 * t / len(blocks)
        lines.append(f"  {engine:12} {seconds / t:7.1f} × RT  {per_block:6.3f} ms/block  "
                     f"≥{AUDIO_TARGET:.0f}: {'yes' if seconds / t >= AUDIO_TARGET else 'NO'}  "
                     f"ratio {achieved:.0f}:1  {codings:.2f} entropy codings/block")
        lines.append("    " + ", ".join(f"{k} {1e3 * v / len(blocks):.3f}"
                                        for (e, k), v in parts.items() if e == engine)
                     + " ms/block")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vrs", type=Path, default=DEFAULT_VRS)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="time this checkpoint for codec NAME (e.g. aria-audio-fast=runs/"
                             "aria-audio-fast/final.pt)")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="call dance.codec.retain_freed_memory() first (glibc keeps freed "
                             "blocks: no page faults on every frame's buffers)")
    parser.add_argument("--stream", metavar="NAME_OR_PATH",
                        help="only the 4096-block stream encoder of this audio checkpoint "
                             "(e.g. aria-audio-vr), at --ratio")
    parser.add_argument("--ratio", type=float, default=600.0,
                        help="stream mode: the Target(ratio=...) of every block (default 600)")
    parser.add_argument("--wav", type=Path, action="append", default=[],
                        help="stream mode: 7-channel PCM test signal (default: the first of "
                             "runs/sim-heldout/*.wav)")
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.checkpoint)
    torch.set_num_threads(1)
    allocator = "glibc default"
    if args.retain_freed_memory:
        allocator = "retain_freed_memory()" if retain_freed_memory() else "default (no mallopt)"
    if args.stream:
        audio, source = stream_audio(args.wav, args.vrs)
        print(f"data: {source}; torch {torch.__version__}; allocator: {allocator}")
        print("\n".join(stream_speed(args.stream, args.ratio, audio, args.repeats)))
        return 0
    frames, audio, source = sample_data(args.vrs)
    names = ("aria-image", "aria-audio", "aria-audio-fast")
    codecs, weights = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path, weights[name] = checkpoint_or_random(name, given, Path(tmp))
            for engine, precision in ENGINES:
                codecs[name, engine, precision] = load_codec(path, precision=precision,
                                                             engine=engine)

    # -- images: every variant and WebP, interleaved ----------------------------------------
    megapixels = len(frames) * frames[0].shape[0] * frames[0].shape[1] / 1e6
    jobs = {"WebP q1 m0 (PIL)": lambda: [webp(f) for f in frames]}
    for (name, engine, precision), codec in codecs.items():
        if codec.kind == "image":
            jobs[f"{name} {engine} {precision}"] = lambda c=codec: [c.compress(f) for f in frames]
    image_times = race(jobs, args.repeats)
    raw = frames[0].nbytes
    coded = {"WebP q1 m0 (PIL)": np.mean([webp(f) for f in frames])}
    for (name, engine, precision), codec in codecs.items():
        if codec.kind == "image":
            coded[f"{name} {engine} {precision}"] = np.mean([len(codec.compress(f))
                                                             for f in frames])

    # -- audio: every codec and engine, 4096-sample and 1 s blocks, interleaved --------------
    jobs, seconds = {}, {}
    for block in (4096, RATE):
        blocks = audio_blocks(audio, block)
        for (name, engine, precision), codec in codecs.items():
            if codec.kind == "audio":
                key = f"{name} {engine} {precision}, {block} blocks"
                seconds[key] = len(blocks) * block / RATE
                jobs[key] = lambda c=codec, b=blocks: [s.encode(x) for s in
                                                       [c.audio_encoder(RATE)] for x in b]
    audio_times = race(jobs, args.repeats)
    audio_ratio = {}
    for block in (4096, RATE):
        blocks = audio_blocks(audio, block)
        for (name, engine, precision), codec in codecs.items():
            if codec.kind == "audio":
                stream = codec.audio_encoder(RATE)
                audio_ratio[f"{name} {engine} {precision}, {block} blocks"] = (
                    sum(b.nbytes for b in blocks) / sum(len(stream.encode(b)) for b in blocks))

    # -- table ---------------------------------------------------------------------------------
    webp_speed = megapixels / image_times["WebP q1 m0 (PIL)"]
    print(f"data: {source}; 1 CPU thread (thread CPU time, best of {args.repeats} interleaved "
          f"rounds); torch {torch.__version__}; allocator: {allocator}")
    print(f"\n{'codec / encoder engine':52} {'speed':>9} {'unit':6} {'vs WebP':>8} "
          f"{'target':>12} {'raw/coded':>10}  weights")
    for key, t in image_times.items():
        speed = megapixels / t
        met = "" if key.startswith("WebP") else \
            f"≥{IMAGE_TARGET:.0f}: {'yes' if speed >= IMAGE_TARGET else 'NO'}"
        weight = "" if key.startswith("WebP") else weights[key.split()[0]]
        print(f"{key:52} {speed:9.1f} {'MP/s':6} {speed / webp_speed:7.2f}× {met:>12} "
              f"{raw / coded[key]:9.0f}:1  {weight}")
    for key, t in audio_times.items():
        speed = seconds[key] / t
        met = f"≥{AUDIO_TARGET:.0f}: {'yes' if speed >= AUDIO_TARGET else 'NO'}"
        print(f"{key:52} {speed:9.1f} {'× RT':6} {'—':>8} {met:>12} "
              f"{audio_ratio[key]:9.0f}:1  {weights[key.split()[0]]}")

    # -- where the time goes, and the ceiling for the reference audio encoder ------------------
    print("\nwhere the time goes (per frame / per second of audio, 4096-sample blocks):")
    for name in names:
        best = min((k for k in codecs if k[0] == name),
                   key=lambda k: image_times.get(f"{k[0]} {k[1]} {k[2]}") or
                   audio_times[f"{k[0]} {k[1]} {k[2]}, 4096 blocks"])
        codec = codecs[best]
        image = codec.kind == "image"
        items = frames if image else audio_blocks(audio, 4096)
        per = len(items) if image else len(items) * 4096 / RATE
        parts = breakdown(codec, items, image, args.repeats)
        print(f"  {' '.join(best):36} " + ", ".join(f"{part} {1e3 * t / per:.1f} ms"
                                                    for part, t in parts.items()))
    fp32, bf16 = gemm_gmacs(torch.float32, args.repeats), gemm_gmacs(torch.bfloat16, args.repeats)
    print(f"\nthis core's GEMM peak: {fp32:.0f} GMAC/s float32, {bf16:.0f} GMAC/s bfloat16. The "
          f"aria-audio encoder needs {REFERENCE_AUDIO_GMAC} GMAC per second of audio, so even at "
          f"GEMM peak one thread gives at most {fp32 / REFERENCE_AUDIO_GMAC:.0f}× (float32) / "
          f"{bf16 / REFERENCE_AUDIO_GMAC:.0f}× (bfloat16) real time for its network alone.")
    if any(w.startswith("RANDOM") for w in weights.values()):
        print("note: RANDOM-init weights give dense latents: slower entropy coding and far "
              "lower ratios than a trained codec's.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
