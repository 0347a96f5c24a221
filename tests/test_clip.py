"""CLIP zero-shot classifier: the real open_clip code path with the tiny random-init config."""
import warnings

import numpy as np
import pytest
import torch

from perception.clip import (DEFAULT_LABELS, TINY_MODEL, ClipWeightsError, Prediction,
                             load_classifier)
from tests.dance_testing import sample_image


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_classifier(TINY_MODEL, "random")


def frames(n: int) -> list[np.ndarray]:
    return [sample_image(120 + 7 * i, 96 + 5 * i, seed=i) for i in range(n)]


def test_default_labels_are_the_papers_thirteen_classes():
    assert len(DEFAULT_LABELS) == 13 and "board game" in DEFAULT_LABELS


def test_predictions_are_consistent(tiny):
    preds = tiny.classify(frames(3))
    assert len(preds) == 3 and all(isinstance(p, Prediction) for p in preds)
    for p in preds:
        assert p.probs.shape == (13,) and p.probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert p.index == int(np.argmax(p.probs)) and p.label == tiny.labels[p.index]
        assert np.isfinite(p.max_logit)
    assert tiny.classify([]) == []


def test_a_batch_equals_frames_one_by_one(tiny):
    batch = tiny.classify(frames(4))
    single = [tiny.classify([f])[0] for f in frames(4)]
    for b, s in zip(batch, single):
        assert b.index == s.index
        np.testing.assert_allclose(b.probs, s.probs, atol=1e-5)
        assert b.max_logit == pytest.approx(s.max_logit, abs=1e-4)


def test_grey_frames_and_bad_frames(tiny):
    grey = sample_image()[:, :, 0]
    assert tiny.classify([grey])[0].index == tiny.classify([np.repeat(grey[:, :, None], 3, 2)])[0].index
    with pytest.raises(ValueError, match="uint8"):
        tiny.classify([grey.astype(np.float32)])
    with pytest.raises(ValueError, match="shape"):
        tiny.classify([np.zeros((8, 8, 4), np.uint8)])


def test_weights_file_round_trip_and_custom_labels(tiny, tmp_path):
    path = tmp_path / "tiny.bin"
    torch.save(tiny.model.state_dict(), path)
    again = load_classifier(TINY_MODEL, str(path), labels=DEFAULT_LABELS)
    for a, b in zip(tiny.classify(frames(2)), again.classify(frames(2))):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
    two = load_classifier(TINY_MODEL, str(path), labels=["cat", "dog"], template="a {} photo")
    assert two.labels == ["cat", "dog"] and two.classify(frames(1))[0].probs.shape == (2,)


def test_random_init_warns():
    with pytest.warns(UserWarning, match="meaningless"):
        load_classifier(TINY_MODEL, "random")


@pytest.mark.parametrize("weights, says", [
    ("/nonexistent/clip.safetensors", "not found"),
    ("no_such_tag", "neither a file nor a pretrained tag"),
])
def test_missing_weights_say_how_to_provide_them(weights, says):
    with pytest.raises(ClipWeightsError) as info:
        load_classifier(TINY_MODEL, weights)
    message = str(info.value)
    assert says in message and "\n" not in message and "open_clip_model.safetensors" in message


def test_uncached_tag_is_not_downloaded(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ClipWeightsError, match="'laion2b_s34b_b79k' of ViT-B-32 is not in the local cache"):
        load_classifier("ViT-B-32", "laion2b_s34b_b79k")
    with pytest.raises(ClipWeightsError, match="no local weights for CLIP ViT-B-32"):
        load_classifier("ViT-B-32", None)


def test_cached_tag_is_found_in_the_hub_and_url_caches(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from perception.clip import _cached_checkpoint
    hub = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HOME", str(tmp_path))
    repo = hub / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    weights = repo / "snapshots" / "abc123" / "open_clip_model.safetensors"
    weights.write_bytes(b"x")
    assert _cached_checkpoint({"hf_hub": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K/"}) == str(weights)
    (tmp_path / ".cache" / "clip").mkdir(parents=True)
    (tmp_path / ".cache" / "clip" / "ViT-B-32.pt").write_bytes(b"x")
    assert _cached_checkpoint({"url": "https://example/abc/ViT-B-32.pt"}).endswith("clip/ViT-B-32.pt")
    assert _cached_checkpoint({"hf_hub": "org/other/"}) is None
