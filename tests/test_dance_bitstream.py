"""Entropy coding, containers, checkpoints, codec round trips, preprocessing, export."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from dance import bitstream
from dance.bitstream import BitstreamError
from dance.codec import load_codec
from dance.families.convnets import frozen
from dance.preprocess import AudioPreprocessor, PreprocessError
from dance.zoo import CheckpointError, load_checkpoint, model_from_checkpoint, resolve_checkpoint

from .conftest import ROOT
from .dance_testing import TINY_AUDIO, TINY_IMAGE, sample_audio, sample_image, tiny_checkpoint


@pytest.fixture(scope="module")
def image_ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-image.pt", TINY_IMAGE)


@pytest.fixture(scope="module")
def audio_ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-audio.pt", TINY_AUDIO)


def test_entropy_coder_round_trip_is_exact(image_ckpt):
    prior = load_codec(image_ckpt).model.entropy_bottleneck
    y = torch.randn(16, 5, 7) * 2  # inside the untrained tables' support (±10)
    payload = prior.code(y, 0)
    decoded = prior.decode(payload, (16, 5, 7), 0)
    symbols, _ = prior.symbols(y, 0)
    assert torch.equal(decoded, prior.dequantize(torch.from_numpy(symbols).reshape(16, 5, 7), 0))
    assert prior.code(decoded, 0) == payload
    # values far outside a table's support are clamped to its ends, never an error
    far = prior.decode(prior.code(torch.full((16, 2, 2), 1000.0), 0), (16, 2, 2), 0)
    top = prior.tables.offset + prior.tables.cdf_length - 2
    assert torch.equal(far - prior.stored_medians[:, None, None],
                       top[:, None, None].float().expand(16, 2, 2))


def test_checkpoint_is_plain_and_verified(image_ckpt, tmp_path):
    ckpt = torch.load(image_ckpt, weights_only=True)
    assert ckpt["entropy"]["quantized_cdf"].dtype == torch.int32
    assert ckpt["entropy"]["medians"].dtype == torch.float32
    assert len(ckpt["hash"]) == 64 and ckpt["config"]["name"] == "tiny-image"
    damaged = tmp_path / "damaged.pt"
    key = next(k for k in ckpt["state_dict"] if k.endswith("weight"))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 1
    torch.save(ckpt, damaged)
    with pytest.raises(CheckpointError, match="hash"):
        load_checkpoint(damaged)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_missing_default_checkpoint_says_how_to_train(monkeypatch, tmp_path):
    import dance.zoo as zoo
    monkeypatch.setattr(zoo, "CHECKPOINT_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="dance train --config"):
        resolve_checkpoint("aria-image")
    with pytest.raises(CheckpointError, match="neither a checkpoint file nor a zoo codec"):
        resolve_checkpoint("no-such-codec")


def test_image_round_trip_any_size_and_deterministic(image_ckpt):
    codec = load_codec(image_ckpt)
    pixels = sample_image()
    data = codec.compress(pixels)
    out, container = codec.decode(data)
    assert out.shape == pixels.shape and out.dtype == np.uint8
    assert container.latent_shape == (16, 3, 4) and container.shape == pixels.shape
    assert container.codec_name == "tiny-image" and codec.id.startswith("tiny-image@")
    assert np.array_equal(codec.decompress(data), out)       # decode twice: identical
    assert codec.compress(pixels) == data                    # encode twice: identical
    assert len(data) < pixels.nbytes


def test_decode_in_another_process_is_identical(image_ckpt, tmp_path):
    codec = load_codec(image_ckpt)
    data = codec.compress(sample_image(64, 96, seed=3))
    (tmp_path / "x.dnc").write_bytes(data)
    script = ("import sys, numpy as np; from dance.codec import load_codec; "
              "c = load_codec(sys.argv[1]); "
              "np.save(sys.argv[3], c.decompress(open(sys.argv[2], 'rb').read()))")
    subprocess.run([sys.executable, "-W", "ignore", "-c", script, str(image_ckpt),
                    str(tmp_path / "x.dnc"), str(tmp_path / "other.npy")], cwd=ROOT, check=True,
                   timeout=120)
    assert np.array_equal(np.load(tmp_path / "other.npy"), codec.decompress(data))


def test_corrupt_truncated_and_foreign_streams_are_rejected(image_ckpt, audio_ckpt, tmp_path):
    codec = load_codec(image_ckpt)
    data = codec.compress(sample_image())
    for i in range(len(data)):  # every single flipped byte is caught
        damaged = bytearray(data)
        damaged[i] ^= 0x41
        with pytest.raises(BitstreamError):
            codec.decompress(bytes(damaged))
    for n in (0, 3, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(BitstreamError):
            codec.decompress(data[:n])
    with pytest.raises(BitstreamError, match="unexpected bytes"):
        codec.decompress(data + b"\0")
    other = tiny_checkpoint(tmp_path / "other.pt", TINY_IMAGE, seed=1)  # same name, new weights
    with pytest.raises(BitstreamError, match="encoded with codec tiny-image@"):
        load_codec(other).decompress(data)
    with pytest.raises(BitstreamError, match="encoded with codec"):
        load_codec(audio_ckpt).decompress(data)
    wrong_version = bytearray(data)
    wrong_version[3] = 9
    with pytest.raises(BitstreamError, match="version 9"):
        codec.decompress(bytes(wrong_version))


def test_container_layout_round_trips():
    c = bitstream.Container("audio", "int32", "aria-audio", bytes(range(8)), (4096, 7),
                            (b"\x01\x02\x03", b"\x04"), ((128, 35), (64, 9)), 48000,
                            "hyperprior", 17)
    data = c.pack()
    assert data[:4] == b"DNC\x02"
    assert bitstream.unpack(data) == c
    # magic+version, kind/dtype/name length, name, hash, family, level, shape, rate, count,
    # 2 × (shape, length, bytes), crc
    assert len(data) == 4 + 3 + 10 + 8 + 11 + 1 + 4 + 3 + 1 + (4 + 1 + 3) + (3 + 1 + 1) + 4


def test_audio_round_trip_and_streaming_blocks(audio_ckpt):
    codec = load_codec(audio_ckpt)
    samples = sample_audio()
    data = codec.compress(samples, sample_rate=48000)
    out, container = codec.decode(data)
    assert out.shape == samples.shape and out.dtype == np.int32
    assert container.sample_rate == 48000 and container.latent_shape == (16, 25)
    assert np.array_equal(codec.decompress(data), out)
    # float input is full scale ±1 and comes back as float
    floats = samples.astype(np.float64) / 2 ** 31
    back = codec.decompress(codec.compress(floats))
    assert back.dtype == np.float64 and back.shape == samples.shape
    # streaming: each block is its own container; the filter state carries across blocks
    encoder = codec.audio_encoder(48000)
    blocks = [encoder.encode(samples[i:i + 1000]) for i in range(0, 3000, 1000)]
    assert [codec.decompress(b).shape for b in blocks] == [(1000, 7)] * 3
    with pytest.raises(PreprocessError, match="frames×7"):
        codec.compress(samples[:, :5])


@pytest.mark.parametrize("block", [1, 333, 4096])
def test_audio_preprocessing_blockwise_equals_whole(block):
    pre = AudioPreprocessor(7)
    samples = sample_audio(10000)
    whole = pre.forward(samples)
    stream = pre.stream()
    parts = torch.cat([stream.forward(samples[i:i + block]) for i in range(0, 10000, block)],
                      dim=2)
    assert torch.equal(parts, whole)
    # companded values stay in [-1, 1]; the DC offsets (up to 4.6e7) and drift are gone
    assert whole.abs().max() <= 1
    counts = pre.inverse(whole, "float64") * 2 ** 31
    assert np.abs(counts[5000:].mean(axis=0)).max() < 0.05 * 1e6
    assert counts[5000:].std(axis=0).min() > 0.6e6  # the 1e6-amplitude tone is kept


def test_audio_companding_and_scaling_invert():
    pre = AudioPreprocessor(7)
    counts = np.random.default_rng(1).normal(0, 2e6, (500, 7))
    restored = pre.inverse(pre.compand(counts / 2 ** 31), "int32")
    # exact up to float32 precision of the companded tensor and rounding to integer counts
    assert np.abs(restored - counts).max() <= 1e-6 * np.abs(counts).max() + 1


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("which", ["image", "audio"])
def test_exported_encoder_gives_pytorch_latents(fmt, which, image_ckpt, audio_ckpt, tmp_path):
    from dance.export import export_encoder
    ckpt = image_ckpt if which == "image" else audio_ckpt
    out = export_encoder(ckpt, fmt, tmp_path / f"enc.{fmt}")
    model = model_from_checkpoint(load_checkpoint(ckpt))
    x = torch.rand(1, model.in_channels, *[model.stride * 3] * model.dims)
    with torch.inference_mode():
        reference = frozen(model.encoder)(x).numpy()
        fused = model.export_encoder()(x).numpy()
    if fmt == "torchscript":
        got = torch.jit.load(str(out))(x).detach().numpy()
    else:
        import onnxruntime
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(None, {"x": x.numpy()})[0]
    assert got.shape == reference.shape
    assert np.allclose(got, reference, atol=1e-5)
    assert np.allclose(got, fused, atol=1e-5)


def test_image_pooling_in_preprocessing_matches_avgpool():
    from dance.preprocess import ImagePreprocessor
    pixels = sample_image(64, 96)
    pre = ImagePreprocessor()
    full = pre.forward(pixels)
    pooled = pre.forward(pixels, multiple=32, pool=2)
    assert torch.allclose(pooled, torch.nn.functional.avg_pool2d(full, 2), atol=1e-6)
    padded = pre.forward(sample_image(70, 90), multiple=32)
    assert padded.shape == (1, 3, 96, 96)
    assert torch.equal(padded[..., 70:, :90], padded[..., 69:70, :90].expand(1, 3, 26, 90))


def test_bfloat16_encoder_gives_decodable_streams(image_ckpt):
    fp32, bf16 = load_codec(image_ckpt), load_codec(image_ckpt, precision="bfloat16")
    pixels = sample_image()
    a, b = fp32.compress(pixels), bf16.compress(pixels)
    assert fp32.decompress(b).shape == pixels.shape  # any encoder precision, one decoder
    prior = fp32.model.entropy_bottleneck
    ya, yb = (prior.decode(c.strings[0], c.latent_shape, c.level)
              for c in map(bitstream.unpack, (a, b)))
    assert (ya != yb).float().mean() < 0.05  # bf16 flips few rounding decisions


def test_a_containers_codec_name_is_a_name_never_a_path(tmp_path):
    import shutil

    from dance.codec import load_codec, load_codec_for
    from dance.zoo import CHECKPOINT_DIR, CheckpointError
    real = load_codec("aria-audio-fast")
    copy = tmp_path / "planted.pt"
    shutil.copy(CHECKPOINT_DIR / "aria-audio-fast.pt", copy)
    for name in (str(copy), f"../../{copy}", "../checkpoints/aria-audio-fast"):
        with pytest.raises(CheckpointError, match="no installed checkpoint"):
            load_codec_for(name, real.hash_bytes)
    assert load_codec_for("aria-audio-fast", real.hash_bytes).hash_bytes == real.hash_bytes
