"""Train a compressed-sensing bottleneck (the "cs" codec family) for a split point by
distillation from the unsplit network (seed 004): the tail of the frozen network reads the
decoded tensor, and the loss is the KL divergence of its logits from the unsplit network's
(temperature T), plus a feature MSE (relative to the features' variance), plus λ·bits per
element, with λ and the quantisation step drawn per batch over the codec's levels
(variable rate, as `dance train` does).

    python -m perception.distill --weights ../shared/models/mobilenet_v2-b0353104.pth \\
        --layer features.14 --measurements 48 --steps 1500 -o runs/cs-f14.pt

Training data: activations of random crops and flips of the 'train' photos
(dance.data.split_of), computed once by the frozen head. The checkpoint is a dance codec
checkpoint (dance.zoo) whose `extra` names the model and layer it belongs to.
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from dance.models import build_model, geometric


def augmented_views(frames: list, views: int, seed: int = 0) -> list:
    """`views` random crops (half to full size) with random flips of each frame, uint8."""
    rng = np.random.default_rng(seed)
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        for _ in range(views):
            scale = rng.uniform(0.5, 1.0)
            ch, cw = int(h * scale), int(w * scale)
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            view = frame[top:top + ch, left:left + cw]
            out.append(np.ascontiguousarray(view[:, ::-1] if rng.random() < 0.5 else view))
    return out


def cs_config(in_channels: int, measurements: int, levels: int = 8, step_min: float = 0.02,
              step_max: float = 0.5, width: int | None = None) -> dict:
    """A cs-family config. The steps are in measurement units: a fresh 1×1 measurement of
    unit-variance features has a standard deviation near 0.6, so 0.02 gives ~6 bits per
    measurement at the top level and 0.5 ~1.5 at the bottom."""
    return {"family": "cs", "dims": 2, "in_channels": in_channels,
            "measurements": measurements,
            "decoder": {"width": width or in_channels, "kernel": 3},
            "rate": {"levels": levels, "step_min": step_min, "step_max": step_max}}


def distill(model, tail, features: torch.Tensor, teacher: torch.Tensor, steps: int,
            lmbda: tuple[float, float] = (0.002, 0.2), beta: float = 0.1,
            temperature: float = 2.0, batch: int = 32, lr: float = 1e-3, seed: int = 0,
            progress=None) -> list[dict]:
    """Train `model` (a cs CodecModel) in place; the metrics every 50 steps."""
    gen = torch.Generator().manual_seed(seed)
    groups = model.parameter_groups()
    optimizer = torch.optim.Adam(groups["network"] + groups["entropy"], lr=lr)
    aux_optimizer = torch.optim.Adam(groups["aux"], lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    variance = features.var()
    elements = features[0].numel()
    history = []
    for step in range(steps):
        idx = torch.randint(len(features), (batch,), generator=gen)
        x, target = features[idx], teacher[idx]
        level = float(torch.rand((), generator=gen)) * (model.levels - 1)
        out = model(x, level)
        logits = tail(out["x_hat"])
        kl = F.kl_div(F.log_softmax(logits / temperature, -1),
                      F.log_softmax(target / temperature, -1), log_target=True,
                      reduction="batchmean") * temperature ** 2
        mse = F.mse_loss(out["x_hat"], x) / variance
        bits = -torch.log2(out["likelihoods"]["y"]).sum() / (batch * elements)
        lam = geometric(model.levels - 1 - level, model.levels, *lmbda)   # top level: least λ
        loss = kl + beta * mse + lam * bits
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        aux_optimizer.zero_grad(set_to_none=True)
        model.aux_loss().backward()
        aux_optimizer.step()
        kl, mse, bits = float(kl.detach()), float(mse.detach()), float(bits.detach())
        if step % 50 == 0 or step == steps - 1:
            history.append({"step": step, "kl": kl, "mse": mse, "bits_per_element": bits,
                            "level": level})
        if progress is not None:
            progress.update()
            progress.set_postfix(kl=f"{kl:.3f}", bpe=f"{bits:.2f}")
    model.update(force=True)
    return history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perception.distill",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--layer", required=True)
    parser.add_argument("--images", default="../shared/data/train/images")
    parser.add_argument("--measurements", type=int, default=48, help="m per position")
    parser.add_argument("--levels", type=int, default=8)
    parser.add_argument("--step-min", type=float, default=0.02,
                        help="quantisation step of the top level (measurement units)")
    parser.add_argument("--step-max", type=float, default=0.5, help="step of level 0")
    parser.add_argument("--width", type=int, default=0, help="decoder width (default: C)")
    parser.add_argument("--views", type=int, default=6, help="random crops per photo")
    parser.add_argument("--beta", type=float, default=0.1,
                        help="weight of the feature MSE beside the logits' KL")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    from tqdm import tqdm

    from dance.zoo import save_checkpoint
    from perception.classifier import ClassifierWeightsError, load_image_classifier
    from perception.split import SplitError, head_outputs, load_rgb, photos, split_model
    torch.set_num_threads(args.threads)
    try:
        classifier = load_image_classifier(args.model, args.weights)
        head, tail = split_model(classifier.model, args.layer)
    except (ClassifierWeightsError, SplitError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = photos(args.images, "train")
    if not files:
        print(f"error: {args.images}: no training photos", file=sys.stderr)
        return 2
    frames = augmented_views([load_rgb(p) for p in files], args.views)
    with tqdm(total=1, desc="activations", file=sys.stderr) as bar:
        features = head_outputs(classifier, head, frames)
        with torch.inference_mode():
            teacher = tail(features)
        bar.update()
    features, teacher = features.clone(), teacher.clone()
    tail.requires_grad_(False)
    torch.manual_seed(0)
    config = cs_config(features.shape[1], args.measurements, args.levels, args.step_min,
                       args.step_max, args.width or None)
    model = build_model(config)
    with tqdm(total=args.steps, desc="distilling", file=sys.stderr) as bar:
        history = distill(model, tail, features, teacher, args.steps, beta=args.beta,
                          progress=bar)
    name = f"{args.model}-{args.layer}-cs"
    digest = save_checkpoint(args.output, model, {**config, "name": name},
                             {"split": {"model": args.model, "layer": args.layer,
                                        "shape": list(features.shape[1:])},
                              "history": history, "photos": len(files), "views": args.views})
    print(f"{args.output}: {name} ({math.prod(features.shape[1:]):,} elements -> "
          f"{args.measurements}×{features.shape[2]}×{features.shape[3]} measurements), "
          f"hash {digest[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
