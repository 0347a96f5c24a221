"""`dance split-info MODEL` (where a network can be cut, the tensor there and the head's MACs)
and `dance split-fit` (design an ECQ feature codec for one cut from training photos)."""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("split-info", help="layers a torchvision classifier can be split "
                              "at, with tensor shapes and head MACs")
    p.add_argument("model", help="torchvision classification model, e.g. mobilenet_v2")
    p.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    p.add_argument("--depth", type=int, default=2, help="list cuts down to modules this many "
                   "names deep (2: blocks such as features.7; 4: inside them, "
                   "features.14.conv.0)")
    p.set_defaults(func=_guard(cmd_split_info))

    p = subparsers.add_parser("split-fit", help="design an ECQ feature codec for a split point "
                              "from training photos (no retraining of the network)")
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--weights", required=True, help="the model's torchvision weights file")
    p.add_argument("--layer", required=True, help="split point (dance split-info lists them)")
    p.add_argument("--images", required=True, help="folder of training photos; its 'train' "
                   "split (dance.data.split_of) is used, the 'heldout' one left for evaluation")
    p.add_argument("--count", type=int, default=96, help="photos to take activations from")
    p.add_argument("--lambdas", default="0.01,0.02,0.05,0.1,0.2,0.4",
                   help="rate-distortion trade-offs, one operating point each")
    p.add_argument("-o", "--output", required=True, help="codec JSON file to write")
    p.set_defaults(func=_guard(cmd_split_fit))


def _guard(command):
    def run(args: argparse.Namespace) -> int:
        from dance.feature_codec import FeatureCodecError
        from perception.classifier import ClassifierWeightsError
        from perception.split import SplitError
        try:
            return command(args)
        except (SplitError, FeatureCodecError, ClassifierWeightsError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return run


def cmd_split_info(args: argparse.Namespace) -> int:
    import warnings

    from perception.classifier import load_image_classifier
    from perception.split import cut_points
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # random init: only shapes and MACs are read
        classifier = load_image_classifier(args.model, "random")
    if args.depth < 1:
        raise ValueError(f"--depth must be at least 1, got {args.depth}")
    points = cut_points(classifier.model, (3, args.size, args.size), depth=args.depth)
    total = points[-1].head_macs if points else 0
    print(f"{args.model} at {args.size}×{args.size}: {len(points)} split points; the head "
          f"runs on the device, the tensor travels, the tail runs on the server")
    print(f"{'layer':<16}{'tensor':>16}{'elements':>10}{'head MMACs':>12}{'head share':>12}")
    for p in points:
        elements = 1
        for n in p.shape:
            elements *= n
        print(f"{p.name:<16}{'×'.join(map(str, p.shape)):>16}{elements:>10,}"
              f"{p.head_macs / 1e6:>12.1f}{p.head_macs / max(total, 1):>12.1%}")
    return 0


def cmd_split_fit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dance.feature_codec import fit_ecq_codec
    from perception.classifier import load_image_classifier
    from perception.split import head_outputs, load_rgb, photos, split_model
    try:
        lambdas = [float(v) for v in args.lambdas.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--lambdas takes numbers like 0.05,0.1, got {args.lambdas!r}") from None
    if not lambdas or min(lambdas) <= 0:
        raise ValueError("--lambdas needs at least one positive value")
    classifier = load_image_classifier(args.model, args.weights)
    head, _ = split_model(classifier.model, args.layer)
    files = photos(args.images, "train")[:args.count]
    if not files:
        raise ValueError(f"{args.images}: no training photos (.png/.jpg) in this folder")
    frames = [load_rgb(p) for p in tqdm(files, desc="photos", unit="photo", file=sys.stderr)]
    activations = head_outputs(classifier, head, frames).numpy()
    with tqdm(total=len(lambdas), desc="designing ECQ", unit="point", file=sys.stderr) as bar:
        codec = fit_ecq_codec(args.model, args.layer, activations, lambdas, progress=bar)
    codec.save(args.output)
    print(f"{args.output}: {args.model} {args.layer} {'×'.join(map(str, codec.shape))}, clip "
          f"{codec.stats.activation} [{codec.stats.clip[0]:.2f}, {codec.stats.clip[1]:.2f}], "
          f"{len(frames)} photos")
    for i, p in enumerate(codec.points):
        print(f"  point {i}: λ {p.lam:g}, {len(p.levels)} levels, "
              f"{p.bits_per_element:.3f} bits/element on the design data")
    return 0
