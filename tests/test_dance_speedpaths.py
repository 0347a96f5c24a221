"""The encoder's speed paths give streams the one decoder reads: ONNX Runtime and bfloat16
encoders, the cheaper padding, and the entropy coder's guard against CompressAI's unchecked
output buffer. Also the arithmetic behind `aria-audio-fast` (docs/codecs.md)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dance import bitstream
from dance.analysis import model_report
from dance.codec import pad_to_multiple
from dance.heuristics import size_model
from dance.models import build_model
from dance.codec import load_codec
from dance.zoo import load_config

from .dance_testing import TINY_AUDIO, TINY_IMAGE, sample_audio, sample_image, tiny_checkpoint

RATE = 48000


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    return {"image": tiny_checkpoint(folder / "tiny-image.pt", TINY_IMAGE, seed=1),
            "audio": tiny_checkpoint(folder / "tiny-audio.pt", TINY_AUDIO, seed=1)}


def _symbols(codec, data: bytes) -> torch.Tensor:
    container = bitstream.unpack(data)
    return codec.model.entropy_bottleneck.decode(container.strings[0], container.latent_shape,
                                                 container.level)


@pytest.mark.parametrize("kind", ["image", "audio"])
def test_onnxruntime_encoder_streams_decode_like_pytorch_ones(checkpoints, kind):
    plain = load_codec(checkpoints[kind])
    fast = load_codec(checkpoints[kind], engine="onnxruntime")
    assert fast.id == plain.id
    signal = sample_image(96, 136) if kind == "image" else sample_audio(4096)
    a, b = plain.compress(signal, RATE), fast.compress(signal, RATE)
    # same latents up to float rounding: a symbol may flip only at an exact .5 boundary
    sa, sb = _symbols(plain, a), _symbols(plain, b)
    assert sa.shape == sb.shape
    assert (sa != sb).float().mean() <= 1e-3
    decoded = plain.decompress(b)  # the PyTorch decoder reads the ORT encoder's stream
    assert decoded.shape == signal.shape and decoded.dtype == signal.dtype
    if torch.equal(sa, sb):
        assert a == b and np.array_equal(decoded, plain.decompress(a))


def test_onnxruntime_streaming_audio_keeps_filter_state(checkpoints):
    codec = load_codec(checkpoints["audio"], engine="onnxruntime")
    audio = sample_audio(3 * 4096)
    stream = codec.audio_encoder(RATE)
    blocks = [stream.encode(audio[i:i + 4096]) for i in range(0, len(audio), 4096)]
    plain = load_codec(checkpoints["audio"])
    whole = plain.audio_encoder(RATE)
    reference = [whole.encode(audio[i:i + 4096]) for i in range(0, len(audio), 4096)]
    for ours, theirs in zip(blocks, reference):
        assert (_symbols(plain, ours) != _symbols(plain, theirs)).float().mean() <= 1e-3


def test_engine_and_precision_are_checked(checkpoints):
    with pytest.raises(ValueError, match="float32 on the CPU"):
        load_codec(checkpoints["image"], precision="bfloat16", engine="onnxruntime")
    with pytest.raises(ValueError, match="engine must be one of"):
        load_codec(checkpoints["image"], engine="tensorrt")


@pytest.mark.parametrize("shape, multiple", [((1, 7, 4000), 120), ((2, 3, 75, 101), 16),
                                             ((1, 2, 5, 6, 7), 4), ((1, 7, 240), 120)])
def test_padding_replicates_the_edge_like_f_pad(shape, multiple):
    x = torch.randn(*shape)
    pads = [p for size in reversed(shape[2:]) for p in (0, -size % multiple)]
    expected = F.pad(x, pads, mode="replicate") if any(pads) else x
    assert torch.equal(pad_to_multiple(x, multiple), expected)


def test_fast_audio_config_is_the_heuristic_at_its_budget():
    config, sized = load_config("aria-audio-fast"), size_model(1, 7, target_ratio=601,
                                                               mac_budget=2048)
    assert all(config[key] == sized[key] for key in sized)
    fast = model_report(build_model(config))
    reference = model_report(build_model(load_config("aria-audio")))
    assert fast["encoder_macs_per_sample"] <= 2048
    # the docs' arithmetic, from the real modules: the reference encoder needs ~1.49 GMAC per
    # second of 48 kHz audio (conv + GDN), so 100× real time needs ~149 GMAC/s on one thread
    per_second = RATE * (reference["encoder_macs_per_sample"]
                         + reference["encoder_norm_macs_per_sample"])
    assert per_second == pytest.approx(1.4866e9, rel=1e-3)
    fast_per_second = RATE * (fast["encoder_macs_per_sample"] + fast["encoder_norm_macs_per_sample"])
    assert per_second / fast_per_second > 20
