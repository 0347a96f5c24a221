"""The walloc family (seed 003): wavelet packet, bounded latent, the three lossless coders."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from dance.families.walloc import CODER_TAGS, tile_latent, untile_latent
from dance.models import build_model
from dance.wavelets import WaveletPacket

pywt = pytest.importorskip("pywt")


@pytest.mark.parametrize("dims,shape,levels", [(1, (2, 7, 256), 3), (2, (2, 3, 64, 32), 4),
                                               (3, (1, 2, 8, 16, 8), 2)])
@pytest.mark.parametrize("wavelet", ["bior4.4", "bior2.2"])
def test_packet_is_invertible_and_trades_resolution_for_channels(dims, shape, levels, wavelet):
    packet = WaveletPacket(dims, levels, wavelet)
    x = torch.randn(*shape, dtype=torch.float64)
    y = packet.analysis(x)
    assert y.shape == (shape[0], shape[1] * 2 ** (dims * levels),
                       *[n // 2 ** levels for n in shape[2:]])
    assert torch.allclose(packet.synthesis(y), x, atol=1e-9)


@pytest.mark.parametrize("wavelet", ["bior4.4", "bior2.2"])
def test_one_level_equals_pywavelets_periodized_dwt(wavelet):
    x = np.random.default_rng(0).standard_normal((16, 32))
    ours = WaveletPacket(2, 1, wavelet).analysis(torch.tensor(x)[None, None])[0].numpy()
    ll, (lh, hl, hh) = pywt.dwt2(x, wavelet, mode="periodization")
    # channel = 2·(band along rows) + band along columns
    for ours_band, theirs in zip(ours, (ll, hl, lh, hh)):
        np.testing.assert_allclose(ours_band, theirs, atol=1e-9)


def test_packet_gradients_are_the_adjoint():
    packet = WaveletPacket(2, 2)
    x = torch.randn(1, 2, 16, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(packet.analysis, (x,))
    y = packet.analysis(x.detach()).requires_grad_()
    assert torch.autograd.gradcheck(packet.synthesis, (y,))


def test_packet_refuses_sizes_that_do_not_divide():
    with pytest.raises(ValueError, match="multiples of 16"):
        WaveletPacket(2, 4).analysis(torch.zeros(1, 3, 40, 32))
    with pytest.raises(ValueError, match="not available"):
        WaveletPacket(2, 1, "sym5")


def _model(dims=2, lossless="auto", levels=3, gain=2.0):
    torch.manual_seed(0)
    model = build_model({"family": "walloc", "dims": dims, "in_channels": 3,
                         "wavelet_levels": 2, "latent_channels": 5,
                         "decoder": {"width": 16, "blocks": 1}, "lossless": lossless,
                         "rate": {"levels": levels, "step_min": 1.0, "step_max": 4.0}})
    with torch.no_grad():   # latents of a few units, as a trained model's
        model.encoder.projection.weight.mul_(gain)
    model.update()
    return model.eval()


def _smooth(shape):
    grid = torch.linspace(0, 1, shape[-1])
    x = 0.5 + 0.3 * torch.sin(6 * grid) * torch.cos(4 * torch.linspace(0, 1, shape[-2]))[:, None]
    return x.expand(*shape).clone()


def test_every_lossless_coder_decodes_to_the_same_image_and_auto_keeps_the_shortest():
    model = _model()
    x = _smooth((1, 3, 32, 48))
    with torch.inference_mode():
        outputs = (model.export_encoder()(x),)
    decoded, lengths = {}, {}
    for name in ("rans", "png", "webp"):
        model.lossless = name
        strings, shapes = model.code(outputs, 2)
        assert strings[0][0] == CODER_TAGS[name] and shapes == [(5, 8, 12)]
        lengths[name] = len(strings[0])
        decoded[name] = model.decompress(strings, shapes, 2)
    assert torch.equal(decoded["rans"], decoded["png"])
    assert torch.equal(decoded["rans"], decoded["webp"])
    model.lossless = "auto"
    strings, _ = model.code(outputs, 2)
    assert len(strings[0]) == min(lengths.values())


def test_auto_never_lets_rans_clip_a_symbol_outside_its_tables():
    model = _model(gain=12.0)       # latents beyond the untrained prior's support
    x = _smooth((1, 3, 32, 48))
    with torch.inference_mode():
        outputs = (model.export_encoder()(x),)
    strings, shapes = model.code(outputs, 2)
    assert strings[0][0] != CODER_TAGS["rans"]
    model.lossless = "png"
    assert torch.equal(model.decompress(strings, shapes, 2),
                       model.decompress(*model.code(outputs, 2), 2))


def test_a_coarser_level_costs_fewer_bytes():
    model = _model(lossless="rans")
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        outputs = (model.export_encoder()(x),)
    sizes = [len(model.code(outputs, level)[0][0]) for level in range(3)]
    assert sizes[0] < sizes[2]


def test_tiling_round_trips_any_channel_count():
    for shape in [(5, 4, 6), (3, 2, 2), (7, 10), (4, 2, 3, 5)]:
        symbols = np.random.default_rng(1).integers(-128, 128, shape)
        assert np.array_equal(untile_latent(tile_latent(symbols), shape), symbols)


def test_hostile_strings_are_one_value_error():
    model = _model()
    x = torch.rand(1, 3, 32, 32)
    strings, shapes = model.compress(x, 1)["strings"], [(5, 8, 8)]
    from PIL import Image
    wrong = io.BytesIO()
    Image.new("RGB", (9, 16)).save(wrong, format="PNG")
    huge = io.BytesIO()
    Image.new("RGB", (1, 1)).save(huge, format="PNG")
    for bad in [b"", b"\x07abc", bytes([CODER_TAGS["png"]]) + b"not a png",
                bytes([CODER_TAGS["png"]]) + wrong.getvalue(),
                bytes([CODER_TAGS["webp"]]) + huge.getvalue()]:
        with pytest.raises(ValueError, match="walloc string|entropy"):
            model.decompress([bad], shapes, 1)
    assert model.decompress(strings, shapes, 1).shape == (1, 3, 32, 32)


def test_audio_latents_code_with_png_and_rans():
    torch.manual_seed(0)
    model = build_model({"family": "walloc", "dims": 1, "in_channels": 7, "wavelet_levels": 3,
                         "latent_channels": 6, "decoder": {"width": 16, "blocks": 1}})
    model.update()
    model.eval()
    x = 0.5 + 0.1 * torch.randn(1, 7, 512)
    strings = model.compress(x, 0)
    assert strings["shapes"] == [(6, 64)]
    assert model.decompress(strings["strings"], strings["shapes"], 0).shape == (1, 7, 512)


@pytest.mark.parametrize("dims,channels,ratio,bits", [(2, 3, 150, 8), (1, 7, 600, 24),
                                                      (2, 3, 600, 8), (3, 1, 100, 8)])
def test_heuristic_sizes_the_element_reduction_from_the_ratio(dims, channels, ratio, bits):
    from dance.heuristics import WALLOC_LATENT_BITS, WALLOC_MIN_KEPT, size_model
    config = size_model(dims, channels, target_ratio=ratio, family="walloc", sample_bits=bits)
    subbands = channels * 2 ** (dims * config["wavelet_levels"])
    reduction = subbands / config["latent_channels"]
    wanted = ratio * WALLOC_LATENT_BITS / bits
    assert abs(reduction / wanted - 1) < 0.25               # up to rounding the channel count
    assert subbands / channels >= WALLOC_MIN_KEPT * wanted   # enough levels ...
    assert subbands / channels / 2 ** dims < WALLOC_MIN_KEPT * wanted   # ... and no more
    model = build_model(config)
    assert model.string_shapes((model.stride * 2,) * dims)[0][0] == config["latent_channels"]
    if (dims, ratio) == (2, 150):
        assert (config["wavelet_levels"], config["latent_channels"]) == (4, 12)
