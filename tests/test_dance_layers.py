"""N-D layers, reference architectures (params/MACs from the real modules), heuristics."""
from __future__ import annotations

import pytest
import torch

from dance.analysis import count_params, model_report
from dance.heuristics import encoder_macs_per_sample, size_model
from dance.layers import (GDN, AttentionBlock, PixelShuffle, ResidualBlock,
                          ResidualBlockUpsample, conv)
from dance.families.dance import DanceAutoencoder
from dance.models import MODELS, CodecModel, build_model, register_model
from dance.zoo import load_config

from .dance_testing import TINY_AUDIO, TINY_IMAGE


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("channels", [1, 5])
def test_blocks_any_rank_and_channels(dim, channels):
    x = torch.randn(2, channels, *[12] * dim)
    assert conv(dim, channels, 6, 5, 2)(x).shape == (2, 6, *[6] * dim)
    assert GDN(channels)(x).shape == x.shape
    assert ResidualBlock(dim, channels, 4)(x).shape == (2, 4, *[12] * dim)
    assert AttentionBlock(dim, channels)(x).shape == x.shape
    for mode in ("subpel", "transposed"):
        for factor in (2, 3):
            up = ResidualBlockUpsample(dim, channels, 3, factor, mode)(x)
            assert up.shape == (2, 3, *[12 * factor] * dim)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_pixel_shuffle_matches_torch_and_is_a_permutation(dim):
    x = torch.arange(2 * 3 * 4 ** dim * 5 ** dim, dtype=torch.float32)
    x = x.reshape(2, 3 * 4 ** dim, *[5] * dim)
    out = PixelShuffle(dim, 4)(x)
    assert out.shape == (2, 3, *[20] * dim)
    assert torch.equal(out.flatten().sort().values, x.flatten().sort().values)
    if dim == 2:
        assert torch.equal(out, torch.nn.functional.pixel_shuffle(x, 4))


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_gdn_formula_and_inverse(dim):
    torch.manual_seed(0)
    gdn, igdn = GDN(4), GDN(4, inverse=True)
    with torch.no_grad():  # a non-diagonal gamma, shared by both
        gdn.gamma.copy_(gdn.gamma_reparam.init(0.1 * torch.eye(4) + 0.05 * torch.rand(4, 4)))
        igdn.load_state_dict(gdn.state_dict())
    x = torch.randn(2, 4, *[6] * dim)
    beta, gamma = gdn.effective_params()
    norm = torch.einsum("ij,bj...->bi...", gamma, x * x) + beta.reshape(1, 4, *[1] * dim)
    assert torch.allclose(gdn(x), x / torch.sqrt(norm), atol=1e-6)
    assert torch.allclose(igdn(x), x * torch.sqrt(norm), atol=1e-6)
    # GDN is invertible (fixed-point iteration of IGDN's formula converges for small gamma)
    y = gdn(x)
    estimate = y
    for _ in range(60):
        n = torch.einsum("ij,bj...->bi...", gamma, estimate ** 2) + beta.reshape(1, 4, *[1] * dim)
        estimate = y * torch.sqrt(n)
    assert torch.allclose(estimate, x, atol=1e-4)
    assert count_params(gdn) == 4 + 16


def test_aria_image_reference_counts_from_real_modules():
    report = model_report(build_model(load_config("aria-image-v1")))
    assert report["encoder_params"] == 285_160
    assert report["encoder_macs_per_sample"] == pytest.approx(506.25, abs=1e-9)
    assert report["stride"] == 32


def test_default_aria_image_fits_the_paper_encoder_budget_at_1408():
    # what the glasses run (g_a and the hyper-analysis h_a), counted from the modules on a
    # whole 1408² frame, within the paper's 285,160 parameters and 506.25 MACs per pixel
    config = load_config("aria-image")
    model = build_model(config)
    report = model_report(model, probe_stride_multiple=1408 // model.stride)
    assert report["encoder_params"] <= 285_160
    assert report["encoder_macs_per_sample"] <= 506.25
    assert 1408 % report["stride"] == 0                      # whole frames tile without padding
    assert config["encoder"]["pool"] == size_model(2, 3, target_ratio=800)["encoder"]["pool"]


def test_aria_audio_reference_counts_from_real_modules():
    model = build_model(load_config("aria-audio"))
    report = model_report(model)
    assert report["encoder_params"] == 331_264
    assert report["stride"] == 120
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == \
        [(7, 128, 3, 2), (128, 128, 5, 3), (128, 128, 5, 4), (128, 128, 7, 5)]


@pytest.mark.parametrize("name", ["aria-image", "aria-image-v1", "aria-audio"])
def test_default_checkpoints_fit_size_budget(name):
    # shipped in git: each default's float32 weights stay well under GitHub's 50 MB warning
    assert count_params(build_model(load_config(name))) * 4 < 32e6


@pytest.mark.parametrize("name,dims,channels,ratio", [("aria-image-v1", 2, 3, 783),
                                                      ("aria-audio", 1, 7, 601)])
def test_heuristics_reproduce_reference_configs(name, dims, channels, ratio):
    reference = load_config(name)
    sized = size_model(dims, channels, target_ratio=ratio, input_reduction=1)  # paper's layout
    for key, value in sized.items():
        assert reference[key] == value, key
    assert size_model(dims, channels, input_reduction=1) == sized  # reference ratios: defaults


def test_heuristics_spend_high_ratios_on_a_reduced_image():
    # 783:1 on images: a 4x reduction (783 / 16 = 49:1 left), the same overall stride of 32
    # with one conv stage fewer; at 200:1 only 2x; audio is never reduced
    auto = size_model(2, 3, target_ratio=783)
    assert auto["encoder"]["pool"] == 4 and auto["encoder"]["strides"] == [2, 2, 2]
    assert build_model(auto).stride == 32
    assert size_model(2, 3, target_ratio=200)["encoder"]["pool"] == 2
    assert size_model(2, 3, target_ratio=60, mac_budget=4000)["encoder"]["pool"] == 1
    assert size_model(1, 7, target_ratio=601) == size_model(1, 7, target_ratio=601,
                                                           input_reduction=1)
    # the reduction frees MACs: the widest ramp fits with room to spare
    assert model_report(build_model(auto))["encoder_macs_per_sample"] <= 512
    hyper = size_model(2, 3, family="hyperprior", levels=32)
    assert hyper["hyper"] == {"channels": 64} and hyper["rate"]["levels"] == 32
    with pytest.raises(ValueError, match="power of two"):
        size_model(2, 3, input_reduction=3)


def test_heuristics_rules_respond_to_inputs():
    base = size_model(2, 3, input_reduction=1)
    # a tighter MAC budget narrows the encoder; the formula agrees with the real modules
    narrow = size_model(2, 3, mac_budget=300, input_reduction=1)
    assert sum(narrow["encoder"]["widths"]) < sum(base["encoder"]["widths"])
    enc = narrow["encoder"]
    macs = encoder_macs_per_sample(2, 3, narrow["latent_channels"], enc["pool"], enc["strides"],
                                   enc["kernels"], enc["widths"])
    assert macs <= 300
    assert model_report(build_model(narrow))["encoder_macs_per_sample"] == pytest.approx(macs)
    # a lower target ratio downsamples less; a higher one more
    assert build_model(size_model(2, 3, target_ratio=100, mac_budget=4000)).stride < 32
    assert build_model(size_model(1, 7, target_ratio=3000)).stride > 120
    # high lambda widens the latent; 3-D and odd channel counts are supported
    assert size_model(2, 3, lmbda=0.1)["latent_channels"] > base["latent_channels"]
    vol = build_model(size_model(3, 5, target_ratio=200, mac_budget=20000))
    assert vol(torch.rand(1, 5, *[vol.stride] * 3))["x_hat"].shape == (1, 5, *[vol.stride] * 3)
    with pytest.raises(ValueError, match="budget"):
        size_model(2, 3, mac_budget=10)
    with pytest.raises(ValueError):
        size_model(4, 3)


@pytest.mark.parametrize("config", [TINY_IMAGE, TINY_AUDIO])
def test_model_follows_compressai_conventions(config):
    model = build_model(config)
    shape = (2, config["in_channels"], *[model.stride * 2] * config["dims"])
    out = model(torch.rand(shape))
    assert out["x_hat"].shape == shape
    assert out["likelihoods"]["y"].shape == (2, config["latent_channels"],
                                             *[2] * config["dims"])
    assert model.aux_loss().item() > 0
    model.update(force=True)
    assert model.entropy_state()["quantized_cdf"].dtype == torch.int32


def test_registry_is_open_to_other_families():
    @register_model("test-identity")
    class Identity(CodecModel):
        @classmethod
        def from_config(cls, config):
            return cls()
    try:
        assert isinstance(build_model({"family": "test-identity"}), Identity)
        assert Identity.family == "test-identity"
        assert isinstance(build_model(TINY_IMAGE), DanceAutoencoder)
        with pytest.raises(ValueError, match="unknown model family"):
            build_model({"family": "nope"})
        with pytest.raises(ValueError, match="cannot be imported"):
            build_model({"family": "no_such_module:Codec"})
        with pytest.raises(TypeError, match="CodecModel"):
            register_model("test-plain")(torch.nn.Module)
    finally:
        MODELS.pop("test-identity")
