"""Codec subcommands of the `dance` CLI: inspect, encode, decode, export, train, eval.

`register(subparsers)` adds them to the runtime's parser (pipeline/cli.py); each handler returns
an exit code and reports bad input as one `error: ...` line on stderr (exit 2).
Compression ratios: "raw" = uncompressed sample bytes (H·W·C for images, frames·channels·4 for
int32 audio) / .dnc bytes — the figure the paper reports; "file" = input file bytes / .dnc bytes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
AUDIO_SUFFIXES = (".wav", ".flac")


class CliError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("inspect", help="parameters and MACs of a codec checkpoint or "
                              "config (counted from the real modules)")
    p.add_argument("codec", metavar="CKPT_OR_CONFIG",
                   help="checkpoint file, config YAML, or zoo name (aria-image, aria-audio)")
    p.set_defaults(func=_guard(cmd_inspect))

    p = subparsers.add_parser("encode", help="compress an image or audio file to .dnc")
    p.add_argument("input", help="input .png/.jpg or .wav/.flac")
    p.add_argument("-c", "--codec", required=True, metavar="CKPT",
                   help="checkpoint file or zoo name")
    p.add_argument("-o", "--output", required=True, help="output .dnc file")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                   help="encoder arithmetic (bfloat16: faster on CPUs with AVX512-BF16; the "
                        "same decoder reads it)")
    p.add_argument("--engine", default="torch", choices=("torch", "onnxruntime"),
                   help="who runs the encoder network (onnxruntime: CPU float32 only)")
    p.set_defaults(func=_guard(cmd_encode))

    p = subparsers.add_parser("decode", help="decompress a .dnc file to .png or .wav/.flac")
    p.add_argument("input", help="input .dnc file")
    p.add_argument("-o", "--output", required=True, help="output .png or .wav/.flac")
    p.add_argument("-c", "--codec", metavar="CKPT",
                   help="checkpoint file (default: the zoo codec named in the stream)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_guard(cmd_decode))

    p = subparsers.add_parser("export", help="write the encoder alone as TorchScript or ONNX")
    p.add_argument("codec", metavar="CKPT", help="checkpoint file or zoo name")
    p.add_argument("--format", required=True, choices=("torchscript", "onnx"))
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=_guard(cmd_export))

    p = subparsers.add_parser("train", help="train a codec from a YAML config")
    p.add_argument("--config", required=True, help="training config YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, repeatable")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    p.set_defaults(func=cmd_train)

    from evaluation import register as register_eval
    p = subparsers.add_parser("eval", help="codecs against baselines on your data (the "
                              "paper's tables)")
    register_eval(p.add_subparsers(dest="kind", required=True, metavar="KIND"))


def _guard(handler):
    """Turn the errors bad input can cause into one line on stderr and exit code 2."""
    def run(args: argparse.Namespace) -> int:
        # imported here: `dance run` / `validate` must not pay for torch at start-up
        from .bitstream import BitstreamError
        from .preprocess import PreprocessError
        from .zoo import CheckpointError
        try:
            return handler(args)
        except (CliError, BitstreamError, CheckpointError, PreprocessError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    run.__doc__ = handler.__doc__
    return run


# -- inspect -----------------------------------------------------------------------------------
def cmd_inspect(args: argparse.Namespace) -> int:
    from . import zoo
    from .analysis import model_report
    from .models import build_model

    source = str(args.codec)
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or (not path.is_file() and
                                            not (zoo.CHECKPOINT_DIR / f"{source}.pt").is_file()):
        config = zoo.load_config(source)
        model = build_model(config)
        origin = f"config {path if path.is_file() else zoo.CONFIG_DIR / (source + '.yaml')} " \
                 "(architecture only, not trained)"
    else:
        ckpt_path = zoo.resolve_checkpoint(source)
        ckpt = zoo.load_checkpoint(ckpt_path)
        config, model = ckpt["config"], zoo.model_from_checkpoint(ckpt)
        origin = f"checkpoint {ckpt_path} (hash {ckpt['hash'][:16]})"
    r = model_report(model)
    unit = {1: "frame", 2: "pixel", 3: "voxel"}[r["dims"]]
    print(f"codec     {config.get('name', path.stem)} — {origin}")
    print(f"signal    {r['dims']}-D, {r['in_channels']} channels, stride {r['stride']} per axis, "
          f"{r['latent_channels']} latent channels")
    for part in ("encoder", "decoder"):
        print(f"{part:9} {r[part + '_params']:>10,} params  "
              f"{r[part + '_macs_per_sample']:>12,.2f} conv MACs per input {unit} "
              f"(+{r[part + '_norm_macs_per_sample']:,.2f} in GDN)")
    print(f"entropy   {r['entropy_params']:>10,} params")
    return 0


# -- encode / decode ---------------------------------------------------------------------------
def cmd_encode(args: argparse.Namespace) -> int:
    from .zoo import load_codec

    src, dst = Path(args.input), Path(args.output)
    try:
        codec = load_codec(args.codec, device=args.device, precision=args.precision,
                           engine=args.engine)
    except ValueError as exc:   # an engine/precision/device combination it cannot run
        raise CliError(str(exc)) from None
    array, sample_rate = _read(src, codec)
    data = codec.compress(array, sample_rate=sample_rate)
    dst.write_bytes(data)
    raw = array.shape[0] * int(np.prod(array.shape[1:])) * (1 if array.dtype == np.uint8 else 4)
    file_bytes = src.stat().st_size
    shape = "×".join(str(s) for s in array.shape)
    print(f"{src}: {shape} {array.dtype} ({raw:,} raw bytes, file {file_bytes:,} bytes) -> "
          f"{dst}: {len(data):,} bytes [{codec.id}]")
    print(f"compression ratio {raw / len(data):.1f}:1 (raw bytes / .dnc), "
          f"{file_bytes / len(data):.1f}:1 (input file bytes / .dnc)")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from .bitstream import unpack
    from .zoo import load_codec

    src, dst = Path(args.input), Path(args.output)
    data = src.read_bytes()
    container = unpack(data)
    codec = load_codec(args.codec or container.codec_name, device=args.device)
    array, container = codec.decode(data)
    _write(dst, array, container.kind, container.sample_rate)
    raw = array.size * (1 if array.dtype == np.uint8 else 4)
    shape = "×".join(str(s) for s in array.shape)
    print(f"{src}: {len(data):,} bytes [{codec.id}] -> {dst}: {shape} {array.dtype} "
          f"({raw:,} raw bytes, file {dst.stat().st_size:,} bytes); "
          f"compression ratio {raw / len(data):.1f}:1 (raw bytes / .dnc)")
    return 0


def _read(path: Path, codec) -> tuple[np.ndarray, int]:
    suffix = path.suffix.lower()
    if codec.kind == "image":
        if suffix not in IMAGE_SUFFIXES:
            raise CliError(f"{path}: codec '{codec.name}' encodes images "
                           f"({', '.join(IMAGE_SUFFIXES)}), got '{suffix}'")
        from PIL import Image, UnidentifiedImageError
        mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(codec.preprocessor.channels)
        if mode is None:
            raise CliError(f"codec '{codec.name}' takes {codec.preprocessor.channels}-channel "
                           "images, which image files cannot hold")
        try:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert(mode))
        except UnidentifiedImageError:
            raise CliError(f"{path}: not a readable image") from None
        return (pixels[..., None] if pixels.ndim == 2 else pixels), 0
    if suffix not in AUDIO_SUFFIXES:
        raise CliError(f"{path}: codec '{codec.name}' encodes audio (.wav, .flac), "
                       f"got '{suffix}'")
    import soundfile as sf
    try:
        samples, rate = sf.read(str(path), dtype="int32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise CliError(f"{path}: not a readable audio file ({exc})") from None
    return samples, int(rate)


def _write(path: Path, array: np.ndarray, kind: str, sample_rate: int) -> None:
    suffix = path.suffix.lower()
    if kind == "image":
        if suffix not in IMAGE_SUFFIXES:
            raise CliError(f"{path}: the stream holds an image; write .png (or another image "
                           "format)")
        from PIL import Image
        Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(path)
        return
    if suffix not in AUDIO_SUFFIXES:
        raise CliError(f"{path}: the stream holds audio; write .wav or .flac")
    import soundfile as sf
    subtype = "PCM_32" if suffix == ".wav" else "PCM_24"
    sf.write(str(path), array, sample_rate or 48000, subtype=subtype)


# -- export / train ----------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_encoder
    out = export_encoder(args.codec, args.format, args.output)
    print(f"wrote {args.format} encoder to {out} ({out.stat().st_size:,} bytes)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from . import train  # heavy (datasets, tensorboard): only imported for training
    return train.main(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dance", description="DANCE codec commands")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
