"""Frames per second of the classify node's torchvision classifier on CPU, on 1408×1408 Aria frames.

Frames: the RGB frames of the AEA sample recording (../shared/data/aea/recording.vrs) when it is
there, else synthetic 1408² frames. Weights: --weights (default: torchvision's MobileNetV2 file in
../shared/models), else random init (speed does not depend on the weights). Time per frame is split
into preprocessing (resize of the full frame to 256, centre crop 224, normalise; per frame) and the
model (batched). Best of --repeats rounds, the box being shared.

    python benchmarks/classify_speed.py [--model mobilenet_v2] [--weights PATH] [--batches 1 8]
                                        [--frames 8] [--threads 1] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.clip_speed import best_of  # noqa: E402
from perception.classifier import load_image_classifier  # noqa: E402
from tests.dance_testing import sample_image  # noqa: E402

AEA_VRS = ROOT.parent / "shared" / "data" / "aea" / "recording.vrs"
WEIGHTS = ROOT.parent / "shared" / "models" / "mobilenet_v2-b0353104.pth"


def load_frames(count: int, size: int) -> tuple[list, str]:
    """`count` frames: the sample recording's (cycled), else synthetic ones."""
    if AEA_VRS.is_file() and size == 1408:
        from dance import data
        provider = data.open_vrs(AEA_VRS)
        available = data.vrs_frame_count(AEA_VRS)
        frames = [data.read_vrs_frame(provider, AEA_VRS, i) for i in range(min(count, available))]
        return [frames[i % len(frames)] for i in range(count)], f"{AEA_VRS.name} RGB"
    return [sample_image(size, size, seed=i) for i in range(count)], "synthetic"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--weights", default=str(WEIGHTS),
                        help="weights file; 'random' or a missing file: random init")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--frames", type=int, default=8, help="frames per measurement")
    parser.add_argument("--size", type=int, default=1408, help="frame side in pixels")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the best is shown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = args.weights if args.weights != "random" and Path(args.weights).is_file() \
        else "random"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier = load_image_classifier(args.model, weights, batch=max(args.batches))
    frames, source = load_frames(args.frames, args.size)
    params = sum(p.numel() for p in classifier.model.parameters())
    print(f"{classifier.description}: {params:,} params")
    print(f"{args.frames} frames of {args.size}²×3 ({source}), {args.threads} torch thread(s), "
          f"best of {args.repeats}")
    prep = best_of(args.repeats, lambda: [classifier.prepare(f) for f in frames]) / len(frames)
    print(f"{'batch':>5}{'frames/s':>10}{'preprocess ms':>15}{'model ms':>10}")
    for batch in args.batches:
        classifier.batch = batch
        classifier.classify(frames[:batch])  # warm-up: first-call allocations
        per_frame = best_of(args.repeats, lambda: classifier.classify(frames)) / len(frames)
        print(f"{batch:>5}{1 / per_frame:>10.1f}{prep * 1000:>15.2f}"
              f"{(per_frame - prep) * 1000:>10.2f}")


if __name__ == "__main__":
    main()
