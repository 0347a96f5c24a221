"""Codec subcommands of the `dance` CLI: inspect, encode, decode, extract, export, train, eval.

`register(subparsers)` adds them to the runtime's parser (pipeline/cli.py); each handler returns
an exit code and reports bad input as one `error: ...` line on stderr (exit 2).
Compression ratios: "raw" = uncompressed sample bytes (H·W·C for images, frames·channels·4 for
int32 audio) / .dnc bytes — the figure the paper reports; "file" = input file bytes / .dnc bytes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_files import CliError, cmd_decode, cmd_encode, cmd_extract

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("inspect", help="parameters and MACs of a codec checkpoint or "
                              "config (counted from the real modules)")
    p.add_argument("codec", metavar="CKPT_OR_CONFIG",
                   help="checkpoint file, config YAML, or zoo name (aria-image, aria-audio)")
    p.set_defaults(func=_guard(cmd_inspect))

    p = subparsers.add_parser(
        "encode", help="compress images, audio or VRS recordings to .dnc",
        description="Compress each input to a .dnc container. Inputs: image files, WAV/FLAC "
                    "files, .vrs recordings (RGB frames for an image codec, the mics for an "
                    "audio codec), folders, glob patterns (quote them), or - for stdin; or the "
                    "recordings of a dataset index (--index), one task per recording.")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image (.png, .jpg, ...), audio (.wav, .flac), .vrs, folder, pattern or -")
    p.add_argument("-c", "--codec", required=True, metavar="CKPT",
                   help="checkpoint file or zoo name")
    p.add_argument("-o", "--output", required=True,
                   help="output .dnc file, - (stdout), or a folder: <stem>.dnc per input "
                        "(<stem>-NNNNN.dnc per VRS frame or block); needed for several inputs; "
                        "with --index a folder: <id>/<stem>-NNNNN.dnc per recording")
    rate = p.add_argument_group("rate (give at most one; default: the codec's top level)")
    rate.add_argument("--ratio", metavar="N", help="aim at N:1 (raw bytes / .dnc bytes)")
    rate.add_argument("--bytes", metavar="B", help="at most B bytes per container")
    rate.add_argument("--bitrate", dest="kbps", metavar="KBPS",
                      help="aim at KBPS kilobits per second of signal (audio codecs)")
    rate.add_argument("--level", metavar="L",
                      help="operating point L, 0 = fewest bytes (`dance inspect` shows levels)")
    p.add_argument("--frames", metavar="START:STOP",
                   help=".vrs inputs, image codec: only these RGB frames (python slice, e.g. 0:4)")
    p.add_argument("--block", metavar="N",
                   help=".vrs inputs, audio codec: N audio frames per container, coded by one "
                        "streaming encoder (default: one container for the whole audio)")
    p.add_argument("--json", metavar="FILE",
                   help="also write a JSON summary of every container (- for stdout)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                   help="encoder arithmetic (bfloat16: faster on CPUs with AVX512-BF16; the "
                        "same decoder reads it)")
    p.add_argument("--engine", default="torch", choices=("torch", "onnxruntime"),
                   help="who runs the encoder network (onnxruntime: CPU float32 only)")
    _add_index_flags(p)
    p.set_defaults(func=_guard(cmd_encode))

    p = subparsers.add_parser("decode", help="decompress .dnc files to .png or .wav/.flac")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=".dnc file, folder of .dnc files, glob pattern, or - (stdin)")
    p.add_argument("-o", "--output", required=True,
                   help="output .png or .wav/.flac, - (stdout: PNG or WAV), or a folder "
                        "(<stem>.png / <stem>.wav per input; needed for several inputs)")
    p.add_argument("-c", "--codec", metavar="CKPT",
                   help="checkpoint file (default: the zoo codec named in each stream)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_guard(cmd_decode))

    p = subparsers.add_parser("extract", help="write the RGB frames (PNG) and mic audio (WAV) "
                              "of a VRS recording (or of each recording of an --index)")
    p.add_argument("recording", nargs="?", metavar="REC.vrs")
    p.add_argument("--images", metavar="DIR", help="write RGB frames as DIR/frame-NNNNN.png "
                   "(with --index: DIR/<id>/frame-NNNNN.png)")
    p.add_argument("--audio", metavar="OUT.wav",
                   help="write the 7 mic channels as int32 48 kHz WAV (or 24-bit FLAC); with "
                        "--index a folder: OUT/<id>.wav")
    p.add_argument("--frames", metavar="START:STOP",
                   help="only these RGB frames (python slice, e.g. 0:4)")
    _add_index_flags(p)
    p.set_defaults(func=_guard(cmd_extract))

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

    p = subparsers.add_parser("dataset", help="the dataset manifest every --index job reads")
    sub = p.add_subparsers(dest="dataset_command", required=True, metavar="COMMAND")
    q = sub.add_parser("index", help="list recordings (streams, counts, split) as Parquet",
                       description="Index every .vrs under the inputs: streams, frame and audio "
                                   "counts, duration and a train/val/test split by recording. "
                                   "Unreadable files are listed as corrupt with the reason.")
    q.add_argument("inputs", nargs="+", metavar="DIR|GLOB|FILE")
    q.add_argument("-o", "--output", required=True, metavar="INDEX.parquet")
    q.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    q.add_argument("--split", default="0.8,0.1,0.1", metavar="TRAIN,VAL,TEST",
                   help="fractions of recordings per split (default 0.8,0.1,0.1)")
    q.set_defaults(func=_guard(cmd_dataset_index))

    from evaluation import register as register_eval
    p = subparsers.add_parser("eval", help="codecs against baselines on your data (the "
                              "paper's tables)")
    register_eval(p.add_subparsers(dest="kind", required=True, metavar="KIND"))


def _add_index_flags(p: argparse.ArgumentParser) -> None:
    """The flags of a dataset-scale job: one task per recording of `dance dataset index`."""
    job = p.add_argument_group("dataset-scale job (one task per recording; rerun to resume)")
    job.add_argument("--index", metavar="INDEX.parquet",
                     help="the recordings of this index (`dance dataset index`), instead of inputs")
    job.add_argument("--split", metavar="S", help="only the recordings of split S (train, val, test)")
    job.add_argument("--workers", metavar="N",
                     help="processes on this machine (default: all cores; 1: in this process)")
    job.add_argument("--ray", metavar="auto|ADDRESS", help="run the tasks on a Ray cluster")
    job.add_argument("--state", metavar="DIR",
                     help="where finished tasks are kept (default runs/jobs/<kind>-<fingerprint>)")


def _guard(handler):
    """Turn the errors bad input can cause into one line on stderr and exit code 2."""
    def run(args: argparse.Namespace) -> int:
        # imported here: `dance run` / `validate` must not pay for torch at start-up
        from .batch import BatchError
        from .bitstream import BitstreamError
        from .data import DataError
        from .preprocess import PreprocessError
        from .zoo import CheckpointError
        try:
            return handler(args)
        except (CliError, BatchError, BitstreamError, CheckpointError, DataError,
                PreprocessError) as exc:
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

    source = str(args.codec)
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or (not path.is_file() and
                                            not (zoo.CHECKPOINT_DIR / f"{source}.pt").is_file()):
        config = zoo.load_config(source)
        model = _build_checked(config, source)
        origin = f"config {path if path.is_file() else zoo.CONFIG_DIR / (source + '.yaml')} " \
                 "(architecture only, not trained)"
    else:
        ckpt_path = zoo.resolve_checkpoint(source)
        _check_is_checkpoint(ckpt_path)
        ckpt = zoo.load_checkpoint(ckpt_path)
        model = zoo.model_from_checkpoint(ckpt)   # built under the allocation budget
        config = ckpt["config"]
        origin = f"checkpoint {ckpt_path} (hash {ckpt['hash'][:16]})"
    _check_probe(model, source)
    try:
        r = model_report(model)
    except (RuntimeError, ValueError) as exc:   # e.g. kernels larger than the probe
        raise CliError(f"{source}: cannot run this codec on a probe input ({exc})") from None
    unit = {1: "frame", 2: "pixel", 3: "voxel"}.get(r["dims"], "sample")
    print(f"codec     {config.get('name', path.stem)} — {origin}")
    print(f"signal    {r['dims']}-D, {r['in_channels']} channels, stride {r['stride']} per axis, "
          f"{r['latent_channels']} latent channels")
    for part in ("encoder", "decoder"):
        print(f"{part:9} {r[part + '_params']:>10,} params  "
              f"{r[part + '_macs_per_sample']:>12,.2f} conv MACs per input {unit} "
              f"(+{r[part + '_norm_macs_per_sample']:,.2f} in GDN)")
    print(f"entropy   {r['entropy_params']:>10,} params")
    return 0


def _check_is_checkpoint(path: Path) -> None:
    """A .dnc, .rec or VRS file named as a checkpoint: say what it is (`dance info` reads it)."""
    from .filekind import KINDS, file_kind

    kind = file_kind(path)
    if kind not in (None, "checkpoint"):
        raise CliError(f"{path}: {KINDS[kind]}, not a codec checkpoint (`dance info {path}` "
                       "describes it)")


def _build_checked(config: dict, source: str):
    """build_model under the allocation budget; a config it cannot build is one CliError."""
    from .models import build_model
    from .sizeguard import allocation_limit

    try:
        with allocation_limit(what=f"{source}: the model this config describes"):
            return build_model(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CliError(f"{source}: not a buildable codec config ({exc})") from None


def _check_probe(model, source: str) -> None:
    """model_report runs the model on a probe of 4 strides per axis: refuse a probe (input
    or widest layer at full resolution) over the allocation budget."""
    from .sizeguard import MAX_PROBE_ELEMENTS

    positions = (int(model.stride) * 4) ** int(model.dims)
    widest = max([int(model.in_channels), *(max(p.shape[:2]) for p in model.parameters()
                                             if p.dim() >= 2)])
    if positions * widest > MAX_PROBE_ELEMENTS:
        raise CliError(f"{source}: measuring this codec needs a probe of {positions:,} positions "
                       f"× {widest:,} channels, over {MAX_PROBE_ELEMENTS:,} elements (stride "
                       f"{model.stride}, {model.dims}-D)")


# -- dataset index -----------------------------------------------------------------------------
def cmd_dataset_index(args: argparse.Namespace) -> int:
    from .dataset import SPLITS, index_recordings, parse_fractions, write_index

    fractions = parse_fractions(args.split)
    rows = index_recordings(args.inputs, args.seed, fractions)
    write_index(rows, Path(args.output), args.seed, fractions)
    ok = [r for r in rows if r.ok]
    for r in rows:
        if not r.ok:
            print(f"corrupt: {r.id}: {r.error}", file=sys.stderr)
    per_split = ", ".join(f"{sum(r.split == s for r in ok)} {s}" for s in SPLITS)
    seconds = sum(r.duration_s for r in ok)
    span = f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.1f} s"
    print(f"{args.output}: {len(rows)} recordings ({len(ok)} ok, {len(rows) - len(ok)} corrupt; "
          f"{per_split}); {sum(r.rgb_frames for r in ok):,} RGB frames, "
          f"{sum(r.audio_frames for r in ok):,} audio frames, {span}")
    return 0


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
