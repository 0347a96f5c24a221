"""Frames per second of the clip_zero_shot node's classifier on CPU, on Aria-sized frames.

Random-init weights (speed does not depend on them): the tiny test config and ViT-B-32 at 224².
Time per frame is split into preprocessing (PIL resize/crop/normalise of the 1408² frame, done
per frame) and the model (image tower + the 13-label head, batched).

    python benchmarks/clip_speed.py [--models dance-tiny-clip ViT-B-32] [--batches 1 8]
                                    [--frames 16] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from perception.clip import load_classifier  # noqa: E402
from tests.dance_testing import sample_image  # noqa: E402


def best_of(rounds: int, work) -> float:
    """Smallest wall time of `rounds` calls (the box is shared; the minimum is the least noisy)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dance-tiny-clip", "ViT-B-32"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--frames", type=int, default=16, help="frames per measurement")
    parser.add_argument("--size", type=int, default=1408, help="input frame side in pixels")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = [sample_image(args.size, args.size, seed=i) for i in range(args.frames)]
    print(f"{args.frames} frames of {args.size}²×3, {args.threads} torch thread(s), "
          f"best of {args.rounds}")
    print(f"{'model':<18}{'params':>10}{'input':>7}{'batch':>7}{'frames/s':>10}"
          f"{'preprocess ms':>15}{'model ms':>10}")
    for name in args.models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            classifier = load_classifier(name, "random")
        params = sum(p.numel() for p in classifier.model.visual.parameters())
        side = classifier.model.visual.image_size
        side = side[0] if isinstance(side, (tuple, list)) else side
        from PIL import Image
        prep = best_of(args.rounds, lambda: [classifier.preprocess(Image.fromarray(f))
                                             for f in frames]) / len(frames)
        for batch in args.batches:
            chunks = [frames[i:i + batch] for i in range(0, len(frames), batch)]
            total = best_of(args.rounds, lambda: [classifier.classify(c) for c in chunks])
            per_frame = total / len(frames)
            print(f"{name:<18}{params:>10,}{side:>6}²{batch:>7}{1 / per_frame:>10.1f}"
                  f"{prep * 1000:>15.2f}{(per_frame - prep) * 1000:>10.2f}")


if __name__ == "__main__":
    main()
