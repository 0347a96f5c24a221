"""Split computing with a real network: cutting torchvision classifiers (perception/split.py),
the ECQ and uniform+zstd feature codecs (dance/feature_codec.py), `dance split-info` /
`split-fit`, and the split_head -> split_tail nodes. MobileNetV2's real weights and the training
photos come from ../shared (skipped with the reason when absent); the rest runs on random init."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from dance.feature_codec import (EcqFeatureCodec, FeatureCodecError, FeatureStats,
                                 UniformZstdCodec, design_ecq, fit_ecq_codec)
from perception.classifier import load_image_classifier
from perception.split import SplitError, cut_points, split_model
from pipeline.packet import image_packet
from pipeline.testing import NodeHarness

from .conftest import SHARED, dance
from .dance_testing import sample_image

WEIGHTS = SHARED / "models" / "mobilenet_v2-b0353104.pth"
PHOTOS = SHARED / "data" / "train" / "images"


def _random(model: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_image_classifier(model, "random")


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    return _random("mobilenet_v2")


# -- cutting -----------------------------------------------------------------------------------
@pytest.mark.parametrize("model, layer", [("mobilenet_v2", "features.3"),
                                          ("mobilenet_v2", "features.14"),
                                          ("resnet18", "layer2.1")])
def test_head_then_tail_is_the_whole_model(model, layer):
    torch.manual_seed(1)
    net = _random(model).model
    head, tail = split_model(net, layer)
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        torch.testing.assert_close(tail(head(x)), net(x), rtol=0, atol=0)
        assert head(x).shape[0] == 2


def test_cuts_that_a_skip_connection_crosses_or_that_do_not_exist_are_refused(mobilenet):
    resnet = _random("resnet18").model
    with pytest.raises(SplitError, match="'layer1.0.conv1' is not a valid cut.*skip connection"):
        split_model(resnet, "layer1.0.conv1")          # inside a residual block
    head, tail = split_model(mobilenet.model, "features.14.conv.0")    # inside a plain block
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert head(x).shape[1] == 576
        torch.testing.assert_close(tail(head(x)), mobilenet.model(x), rtol=0, atol=0)
    with pytest.raises(SplitError, match="no layer 'features.99'.*split-info"):
        split_model(mobilenet.model, "features.99")


def test_cut_points_list_shapes_and_growing_head_macs(mobilenet):
    points = {p.name: p for p in cut_points(mobilenet.model)}
    assert points["features.7"].shape == (64, 14, 14)
    assert points["features.14"].shape == (160, 7, 7)
    macs = [p.head_macs for p in points.values()]
    assert macs == sorted(macs)
    assert 295e6 < points["classifier.1"].head_macs < 305e6   # MobileNetV2: 0.30 GMACs


# -- ECQ ---------------------------------------------------------------------------------------
def test_ecq_trades_levels_for_rate_and_pins_clipped_mass():
    rng = np.random.default_rng(0)
    x = np.clip(rng.laplace(0, 1, 200_000), -3, 3)
    rates, errors = [], []
    for lam in (0.01, 0.1, 0.5):
        levels, probs = design_ecq(x, lam, (-3.0, 3.0))
        assert np.all(np.diff(levels) > 0) and np.isclose(probs.sum(), 1)
        cells = np.argmin((x[:, None] - levels) ** 2 - lam * np.log2(probs), axis=1)
        rates.append(-(probs * np.log2(probs)).sum())
        errors.append(np.mean((x - levels[cells]) ** 2))
    assert rates == sorted(rates, reverse=True) and errors == sorted(errors)
    assert errors[0] < 0.01 and rates[-1] < 1.5
    piled = np.clip(x, -1.0, 1.0)                    # 18% of the values on each clip value

    def cost(levels, probs, lam):
        j = (piled[:, None] - levels) ** 2 - lam * np.log2(probs)
        return j.min(axis=1).mean()

    for lam in (0.005, 0.05):                        # pinning the outer levels only if it wins
        free = design_ecq(piled, lam, (-1.0, 1.0), pin=False)
        best = design_ecq(piled, lam, (-1.0, 1.0))
        assert cost(*best, lam) <= cost(*free, lam) + 1e-12


@pytest.fixture(scope="module")
def codec():
    rng = np.random.default_rng(0)
    acts = rng.normal(2.0, 3.0, (20, 8, 6, 6)) * np.arange(1, 9)[None, :, None, None]
    return fit_ecq_codec("mobilenet_v2", "features.x", acts, [0.02, 0.2, 50.0])


def test_codec_roundtrip_is_the_quantised_tensor_at_about_its_entropy(codec):
    assert len(codec.points) == 2                      # λ = 50 leaves one level: dropped
    assert codec.stats.activation == "signed"
    features = np.random.default_rng(1).normal(2.0, 3.0, (8, 6, 6)) * np.arange(1, 9)[:, None, None]
    for point in range(2):
        data = codec.compress(features, point)
        decoded = codec.decompress(data)
        expected = codec.stats.restore(
            codec.points[point].levels[codec.quantise(features, point)].reshape(8, 6, 6))
        np.testing.assert_array_equal(decoded, expected)
        bits = codec.points[point].bits_per_element * features.size
        assert len(data) - 12 < bits / 8 * 1.6 + 8
    assert len(codec.compress(features, 1)) < len(codec.compress(features, 0))
    error = np.abs(codec.decompress(codec.compress(features, 0)) - features) / \
        np.arange(1, 9)[:, None, None]
    assert np.median(error) < 1.0


def test_hostile_payloads_and_files_are_one_line_errors(codec, tmp_path):
    features = np.zeros((8, 6, 6))
    data = codec.compress(features, 0)
    other = fit_ecq_codec("mobilenet_v2", "features.y", np.ones((2, 8, 6, 6)) * [[[[0.5]]]] +
                          np.random.default_rng(2).random((2, 8, 6, 6)), [0.05])
    for bad, match in ((data[:5], "shorter than"), (b"XX" + data[2:], "not a version-1"),
                       (other.compress(features, 0), "another feature codec"),
                       (data[:9] + b"\x05" + data[10:], "does not fit"),
                       (data + b"\x01\x02\x03\x04" * 50, "more data"),
                       (data[:-1], "not whole")):
        with pytest.raises(FeatureCodecError, match=match):
            codec.decompress(bad)
    with pytest.raises(FeatureCodecError, match="shape"):
        codec.compress(np.zeros((8, 6, 5)), 0)
    path = tmp_path / "codec.json"
    codec.save(path)
    assert EcqFeatureCodec.load(path).tag == codec.tag
    (tmp_path / "bad.json").write_text(json.dumps({"format": "dance-feature-codec"}))
    for name in ("bad.json", "missing.json"):
        with pytest.raises(FeatureCodecError, match=name):
            EcqFeatureCodec.load(tmp_path / name)


def test_uniform_zstd_error_is_within_half_a_step():
    pytest.importorskip("zstandard", reason="zstandard is not installed (pip install -e "
                                            "'.[perception]')")
    rng = np.random.default_rng(3)
    acts = rng.normal(0, 1, (10, 4, 5, 5))
    stats = FeatureStats.fit(acts)
    for bits in (2, 4, 8):
        codec = UniformZstdCodec(stats, bits)
        x = rng.normal(0, 1, (4, 5, 5))
        y = codec.decompress(codec.compress(x), x.shape)
        step = (stats.clip[1] - stats.clip[0]) / (2 ** bits - 1) * stats.std.max()
        inside = np.abs(stats.normalise(x)) < min(-stats.clip[0], stats.clip[1])
        assert np.abs(y - x)[inside].max() <= step / 2 + 1e-5
    rectified = FeatureStats.fit(np.clip(acts, 0, 6))
    assert rectified.activation == "rectified" and rectified.clip[0] == 0.0
    assert (rectified.normalise(np.zeros((4, 5, 5))) == 0).all()    # zeros stay on the clip


# -- CLI and nodes -----------------------------------------------------------------------------
def test_split_info_lists_the_cuts():
    result = dance("split-info", "mobilenet_v2")
    assert result.returncode == 0, result.stderr
    assert "features.7" in result.stdout and "64×14×14" in result.stdout
    result = dance("split-info", "no_such_net")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown torchvision")


def test_split_head_to_split_tail_nodes(mobilenet, tmp_path):
    head, _ = split_model(mobilenet.model, "features.14")
    frames = [sample_image(120, 160, seed=i) for i in range(3)]
    from perception.split import head_outputs
    acts = head_outputs(mobilenet, head, frames).numpy()
    path = tmp_path / "codec.json"
    fit_ecq_codec("mobilenet_v2", "features.14", acts, [0.01, 0.1]).save(path)
    from nodes.split import SplitHead, SplitTail
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NodeHarness(SplitHead(name="head", codec=str(path), weights="random")) as h:
            for i, frame in enumerate(frames):
                h.send("image", image_packet("camera-rgb", i * 10**9, i, frame))
        sent = h.outputs["encoded"]
        assert len(sent) == 3 and all(p.meta["layer"] == "features.14" for p in sent)
        with NodeHarness(SplitTail(name="tail", codec=str(path), weights="random")) as t:
            for packet in sent:
                t.send("encoded", packet)
            t.send("encoded", sent[0].replace(payload=b"DF garbage"))
        labels = t.outputs["predictions"]
    assert [p.seq for p in labels] == [0, 1, 2] and t.node.counters["rejected"] == 1
    assert all(len(p.payload["top_k"]) == 5 for p in labels)
    with pytest.raises(ValueError, match="node 'head'.*no such feature codec file"):
        with NodeHarness(SplitHead(name="head", codec=str(tmp_path / "none.json"))):
            pass


def test_real_mobilenet_keeps_labels_through_ecq_on_held_out_photos(tmp_path):
    if not WEIGHTS.exists() or not PHOTOS.is_dir():
        pytest.skip(f"needs {WEIGHTS} and {PHOTOS} (../shared beside the repo)")
    out = tmp_path / "ecq.json"
    result = dance("split-fit", "--weights", WEIGHTS, "--layer", "features.14", "--images",
                   PHOTOS, "--count", "24", "--lambdas", "0.005,0.3", "-o", out, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    codec = EcqFeatureCodec.load(out)
    classifier = load_image_classifier("mobilenet_v2", str(WEIGHTS))
    head, tail = split_model(classifier.model, "features.14")
    from perception.split import head_outputs, load_rgb, photos
    frames = [load_rgb(p) for p in photos(PHOTOS, "heldout")[:8]]
    features = head_outputs(classifier, head, frames)
    with torch.inference_mode():
        reference = tail(features).argmax(1)
        agree = []
        for point in range(len(codec.points)):
            decoded = torch.from_numpy(np.stack([codec.decompress(codec.compress(f, point))
                                                 for f in features.numpy()]))
            agree.append(int((tail(decoded).argmax(1) == reference).sum()))
    assert agree[0] >= 7                    # ~4 bits/element: nearly lossless for the labels
    assert agree[-1] <= agree[0]


def test_split_graph_validates_and_its_shipped_codec_fits_mobilenet_v2():
    if not WEIGHTS.is_file():  # validate checks that the weights file exists
        pytest.skip(f"MobileNetV2 weights not found at {WEIGHTS}")
    result = dance("validate", "graphs/aea_split.yaml")
    assert result.returncode == 0, result.stderr
    from pathlib import Path
    codec = EcqFeatureCodec.load(Path(__file__).parents[1] / "dance" / "checkpoints" /
                                 "mobilenet_v2-features.14-ecq.json")
    assert (codec.model, codec.layer, codec.shape) == ("mobilenet_v2", "features.14", (160, 7, 7))
    bits = [p.bits_per_element for p in codec.points]
    assert bits == sorted(bits, reverse=True) and bits[-1] < 1.0


# -- the cs family (seed 004) ------------------------------------------------------------------
def test_cs_family_codes_what_it_trains_and_reloads_from_its_checkpoint(tmp_path):
    from dance.models import build_model
    from dance.zoo import load_checkpoint, model_from_checkpoint, save_checkpoint
    from perception.distill import cs_config, distill
    torch.manual_seed(0)
    features = torch.randn(64, 8, 4, 4)
    tail = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(128, 10)).requires_grad_(False)
    teacher = tail(features)
    model = build_model(cs_config(8, 3, levels=4))
    assert model.family == "cs" and model.string_shapes((4, 4)) == [(3, 4, 4)]
    history = distill(model, tail, features, teacher, steps=150, batch=16, lr=3e-3)
    assert history[-1]["kl"] < 0.7 * history[0]["kl"]       # the tail agrees more after training
    x = features[:1]
    sizes = []
    for level in range(model.levels):
        coded = model.compress(x, level)
        decoded = model.decompress(coded["strings"], coded["shapes"], level)
        model.eval()
        with torch.inference_mode():
            expected = model(x, level)["x_hat"]
        torch.testing.assert_close(decoded, expected, rtol=1e-4, atol=1e-4)
        sizes.append(len(coded["strings"][0]))
    assert sizes[-1] >= sizes[0]                              # the top level spends the most
    path = tmp_path / "cs.pt"
    save_checkpoint(path, model, {**cs_config(8, 3, levels=4), "name": "t"})
    again = model_from_checkpoint(load_checkpoint(path))
    assert again.compress(x, 2)["strings"] == model.compress(x, 2)["strings"]
