"""Feature codecs of a split MobileNetV2: bits per element and bytes per image against top-1
agreement with the unsplit model, per split point, beside uniform+zstd and resize+WebP of the
model's 224×224 input crop at the same bytes.

Photos: the codecs are designed on the 'train' split of ../shared/data/train/images
(dance.data.split_of) and scored on its 'heldout' split plus the 24 Kodak images, which no codec
saw. Agreement = the split model's top-1 on decoded features equals the unsplit model's top-1
on the original photo (no labels needed). One table (a row per codec and setting) and a PNG.

    python benchmarks/split_features.py [--layers features.7 features.14] [--train 96]
        [--lambdas 0.01,0.03,0.1,0.3] [--bits 2,3,4,5] [--cs CKPT] [--out runs/split_features.png]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from baselines import image as image_baseline  # noqa: E402
from dance.feature_codec import UniformZstdCodec, fit_ecq_codec  # noqa: E402
from perception.classifier import load_image_classifier  # noqa: E402
from perception.split import head_outputs, load_rgb, photos, split_model  # noqa: E402

SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "models" / "mobilenet_v2-b0353104.pth"
PHOTOS = SHARED / "data" / "train" / "images"
KODAK = SHARED / "data" / "eval" / "kodak"


def model_input_pixels(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """The 224×224 uint8 crop the model sees (its normalised input undone): the strongest
    resize+WebP baseline codes exactly these pixels."""
    pixels = (x * std[:, None, None] + mean[:, None, None]).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(1, 2, 0).numpy()


def normalise(pixels: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float() / 255
    return (x - mean[:, None, None]) / std[:, None, None]


def cs_rows(path: Path, layer: str, tail, features: torch.Tensor,
            reference: np.ndarray) -> list[dict]:
    """Rows of a cs checkpoint made for `layer` (none for other layers): bytes are its string
    plus 2 bytes (the level and a tag would travel with it)."""
    from dance.zoo import load_checkpoint, model_from_checkpoint
    ckpt = load_checkpoint(path)
    if ckpt["extra"].get("split", {}).get("layer") != layer:
        return []
    model = model_from_checkpoint(ckpt)
    elements = int(np.prod(features.shape[1:]))
    rows = []
    for level in range(model.levels):
        sizes, decoded = [], []
        for f in features:
            coded = model.compress(f[None], level)
            sizes.append(sum(map(len, coded["strings"])) + 2)
            decoded.append(model.decompress(coded["strings"], coded["shapes"], level)[0])
        agree = float(np.mean(top1(tail, torch.stack(decoded)) == reference))
        rows.append({"codec": "cs", "setting": f"m {model.measurements}, level {level}",
                     "layer": layer, "bits_per_element": 8 * float(np.mean(sizes)) / elements,
                     "bytes": float(np.mean(sizes)), "agreement": agree})
    return rows


def top1(tail, features: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return tail(features).argmax(1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=["features.7", "features.14"])
    parser.add_argument("--train", type=int, default=96, help="design photos")
    parser.add_argument("--lambdas", default="0.01,0.03,0.1,0.3")
    parser.add_argument("--bits", default="2,3,4,5", help="uniform+zstd bit depths")
    parser.add_argument("--cs", type=Path, action="append", default=[], metavar="CKPT",
                        help="a cs-family checkpoint (python -m perception.distill) of one of "
                             "--layers: a row per level")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "split_features.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for needed in (WEIGHTS, PHOTOS):
        if not needed.exists():
            sys.exit(f"error: {needed} not found (needs ../shared beside the repo)")
    from tqdm import tqdm
    classifier = load_image_classifier("mobilenet_v2", str(WEIGHTS))
    train = [load_rgb(p) for p in photos(PHOTOS, "train")[:args.train]]
    tests = photos(PHOTOS, "heldout") + sorted(KODAK.glob("*.png"))
    test_frames = [load_rgb(p) for p in tests]
    inputs = torch.stack([classifier.prepare(f) for f in test_frames])
    with torch.inference_mode():
        reference = classifier.model(inputs).argmax(1).numpy()
    print(f"MobileNetV2, {len(train)} design photos, {len(tests)} test photos "
          f"({len(tests) - len(list(KODAK.glob('*.png')))} held-out + Kodak)")
    rows = []
    for layer in args.layers:
        head, tail = split_model(classifier.model, layer)
        with tqdm(total=1, desc=f"{layer}: activations", file=sys.stderr) as bar:
            design = head_outputs(classifier, head, train).numpy()
            bar.update()
        lambdas = [float(v) for v in args.lambdas.split(",")]
        with tqdm(total=len(lambdas), desc=f"{layer}: ECQ design", file=sys.stderr) as bar:
            codec = fit_ecq_codec("mobilenet_v2", layer, design, lambdas, progress=bar)
        features = head_outputs(classifier, head, test_frames)
        elements = int(np.prod(features.shape[1:]))
        settings = [("ecq", f"λ {p.lam:g}", i) for i, p in enumerate(codec.points)] + \
            [("uniform+zstd", f"{b} bits", b) for b in map(int, args.bits.split(","))]
        for name, setting, knob in tqdm(settings, desc=f"{layer}: coding", file=sys.stderr):
            coder = codec if name == "ecq" else UniformZstdCodec(codec.stats, knob)
            sizes, decoded = [], []
            for f in features.numpy():
                data = coder.compress(f, knob) if name == "ecq" else coder.compress(f)
                sizes.append(len(data))
                decoded.append(coder.decompress(data) if name == "ecq"
                               else coder.decompress(data, f.shape))
            agree = float(np.mean(top1(tail, torch.from_numpy(np.stack(decoded))) == reference))
            rows.append({"codec": name, "setting": setting, "layer": layer,
                         "bits_per_element": 8 * float(np.mean(sizes)) / elements,
                         "bytes": float(np.mean(sizes)), "agreement": agree})
        for path in args.cs:
            rows += cs_rows(path, layer, tail, features, reference)
    mean = torch.tensor(classifier.preprocess.mean)
    std = torch.tensor(classifier.preprocess.std)
    crops = [model_input_pixels(x, mean, std) for x in inputs]
    for budget in sorted({round(r["bytes"]) for r in rows if r["codec"] == "ecq"}):
        decoded = []
        for crop in tqdm(crops, desc=f"rr+webp {budget} B", file=sys.stderr):
            fit = image_baseline.fit_budget(crop, "webp", budget)    # None: nothing fits
            decoded.append(image_baseline.decode(fit.data) if fit else None)
        fits = [d is not None for d in decoded]
        x = torch.stack([normalise(d, mean, std) for d in decoded if d is not None])
        with torch.inference_mode():
            agree = (classifier.model(x).argmax(1).numpy() == reference[fits])
        rows.append({"codec": "rr+webp", "setting": f"≤ {budget} B ({sum(fits)} fit)",
                     "layer": "input", "bits_per_element": None, "bytes": float(budget),
                     "agreement": float(agree.sum() / len(tests))})
    print(f"{'codec':<14}{'setting':<20}{'split':<13}{'bits/element':>13}{'bytes/image':>13}"
          f"{'top-1 agreement':>17}")
    for r in rows:
        bits = f"{r['bits_per_element']:.3f}" if r["bits_per_element"] is not None else "—"
        print(f"{r['codec']:<14}{r['setting']:<20}{r['layer']:<13}{bits:>13}"
              f"{r['bytes']:>13.0f}{100 * r['agreement']:>16.1f}%")
    plot(rows, args.out)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"plot: {args.out}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = sorted({(r["codec"], r["layer"]) for r in rows})
    for codec, layer in groups:
        pts = sorted((r["bytes"], 100 * r["agreement"]) for r in rows
                     if r["codec"] == codec and r["layer"] == layer)
        ax.plot(*zip(*pts), marker="o", label=f"{codec} @ {layer}")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image")
    ax.set_ylabel("top-1 agreement with unsplit MobileNetV2 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
