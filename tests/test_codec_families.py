"""The codec-model contract: a family from outside dance/, the hyperprior family, variable
rate and targets, version-1 containers, crafted containers."""
from __future__ import annotations

import struct
import threading
import zlib

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dance import bitstream
from dance.bitstream import BitstreamError
from dance.codec import load_codec, load_codec_for
from dance.models import build_model
from dance.export import export_encoder
from dance.targets import Target, TargetError
from nodes.codec import Encode
from pipeline.packet import Packet, image_packet

from .conftest import ROOT, dance
from .dance_testing import TINY_AUDIO, TINY_IMAGE, sample_audio, sample_image, tiny_checkpoint

V1 = ROOT / "tests" / "data" / "v1"
RATE = {"levels": 16, "step_min": 0.25, "step_max": 8.0}
TOY = {"name": "toy", "kind": "image", "family": "tests.toy_family:ToyLinear", "dims": 2,
       "in_channels": 3, "latent_channels": 8, "factor": 4, "rate": RATE,
       "preprocess": {"type": "image"}}
TINY_HYPER = {**TINY_IMAGE, "name": "tiny-hyper", "family": "hyperprior", "rate": RATE,
              "hyper": {"channels": 8}}


@pytest.fixture(scope="module")
def vr_image(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("vr") / "vr.pt",
                           {**TINY_IMAGE, "name": "tiny-image-vr", "rate": RATE})


def test_a_family_outside_dance_trains_encodes_decodes_and_exports(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(sample_image(48, 64, seed=i)).save(images / f"{i}.png")
    config = {"model": TOY, "data": {"sources": [str(images)], "crop": 32}, "steps": 1,
              "batch_size": 2, "out": str(tmp_path / "run"), "final": str(tmp_path / "toy.pt"),
              "threads": 1, "val_every": 1, "checkpoint_every": 1, "log_every": 1,
              "lmbda": [1.0, 100.0]}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    trained = dance("train", "--config", tmp_path / "train.yaml")
    assert trained.returncode == 0, trained.stderr[-2000:]
    codec = load_codec(tmp_path / "toy.pt")
    assert codec.model.family == "toy-linear" and codec.levels == 16
    pixels = sample_image(30, 41, seed=5)
    low, high = (codec.compress(pixels, target=Target(level=k)) for k in (0, 15))
    assert len(low) < len(high)
    assert bitstream.unpack(low).family == "toy-linear" and bitstream.unpack(low).level == 0
    (tmp_path / "high.dnc").write_bytes(high)
    decoded = dance("decode", tmp_path / "high.dnc", "-c", tmp_path / "toy.pt",
                    "-o", tmp_path / "out.png")   # another process imports the family by name
    assert decoded.returncode == 0, decoded.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), codec.decompress(high))
    onnx = export_encoder(tmp_path / "toy.pt", "onnx", tmp_path / "toy.onnx")
    import onnxruntime
    x = torch.rand(1, 3, 16, 16)
    got = onnxruntime.InferenceSession(str(onnx)).run(None, {"x": x.numpy()})[0]
    with torch.inference_mode():
        assert np.allclose(got, codec.model.export_encoder()(x).numpy(), atol=1e-5)


def test_hyperprior_family_codes_two_strings_at_every_level(tmp_path):
    codec = load_codec(tiny_checkpoint(tmp_path / "hyper.pt", TINY_HYPER))
    pixels = sample_image(70, 90)
    sizes = []
    for level in (0, 5, 10, 15):
        data = codec.compress(pixels, target=Target(level=level))
        container = bitstream.unpack(data)
        assert container.family == "hyperprior" and len(container.strings) == 2
        assert container.string_shapes == ((16, 1, 1), (8, 1, 1)) or \
            container.string_shapes[1][0] == 8
        out = codec.decompress(data)
        assert out.shape == pixels.shape and np.array_equal(out, codec.decompress(data))
        sizes.append(len(data))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    # the z string is the same at every level: coded once per item
    strings = [bitstream.unpack(codec.compress(pixels, target=Target(level=k))).strings[1]
               for k in (0, 15)]
    assert strings[0] == strings[1]


def test_hyperprior_stride_and_kernel_are_configurable(tmp_path):
    # one stride-2 3x3 conv in h_a: half the default stride, fewer device-side parameters
    default = build_model(TINY_HYPER)
    small_config = {**TINY_HYPER, "hyper": {"channels": 8, "stride": 2, "kernel": 3}}
    small = build_model(small_config)
    assert small.stride * 2 == default.stride
    assert sum(p.numel() for p in small.h_a.parameters()) < sum(p.numel() for p in default.h_a.parameters())
    assert small.string_shapes((small.stride * 3, small.stride * 2))[1][1:] == (3, 2)
    codec = load_codec(tiny_checkpoint(tmp_path / "h2.pt", small_config))
    pixels = sample_image(70, 90)
    assert codec.decompress(codec.compress(pixels)).shape == pixels.shape
    for stride in (1, 3, 6):
        with pytest.raises(ValueError, match="hyper.stride"):
            build_model({**TINY_HYPER, "hyper": {"channels": 8, "stride": stride}})


def test_mean_correction_restores_each_channel_mean_for_six_bytes(tmp_path):
    config = {**TINY_HYPER, "name": "tiny-mean"}
    plain = load_codec(tiny_checkpoint(tmp_path / "plain.pt", config))
    fixed = load_codec(tiny_checkpoint(tmp_path / "mean.pt", {**config, "mean_correction": True}))
    pixels = (sample_image(70, 90) // 2 + 60).astype(np.uint8)       # no clipping at 0 / 255
    a, b = plain.compress(pixels), fixed.compress(pixels)
    assert len(b) == len(a) + 6 + 3                       # 3 x uint16, its length and shape
    container = bitstream.unpack(b)
    assert len(container.strings) == 3 and container.string_shapes[-1] == (3,)
    wanted = pixels.reshape(-1, 3).mean(0)
    assert np.abs(fixed.decompress(b).reshape(-1, 3).mean(0) - wanted).max() < 0.6
    assert np.abs(plain.decompress(a).reshape(-1, 3).mean(0) - wanted).max() > 1   # random init: biased
    bad = bitstream.Container(container.kind, container.dtype, container.codec_name,
                              container.codec_hash, container.shape,
                              (*container.strings[:2], b"\x00" * 5), container.string_shapes,
                              family=container.family, level=container.level)
    with pytest.raises(BitstreamError, match="channel-mean"):
        fixed.decompress(bad.pack())
    missing = bitstream.Container(container.kind, container.dtype, container.codec_name,
                                  container.codec_hash, container.shape, container.strings[:2],
                                  container.string_shapes[:2], family=container.family,
                                  level=container.level)
    with pytest.raises(BitstreamError, match="string shapes"):
        fixed.decompress(missing.pack())                             # no mean string


def test_targets_meet_budgets_and_ratios(vr_image):
    codec = load_codec(vr_image)
    pixels = sample_image(200, 260, seed=2)
    sizes = [len(codec.compress(pixels, target=Target(level=k))) for k in range(codec.levels)]
    assert sizes[0] < sizes[-1]
    for budget in (sizes[0], (sizes[3] + sizes[4]) // 2, sizes[-1] + 100):
        data = codec.compress(pixels, target=Target(bytes=budget))
        assert len(data) <= budget
        level = bitstream.unpack(data).level
        assert level == codec.levels - 1 or sizes[level + 1] > budget
    wanted = (sizes[5] + sizes[9]) / 2
    data = codec.compress(pixels, target=Target(ratio=pixels.size / wanted))
    assert abs(len(data) - wanted) <= max(abs(s - wanted) for s in sizes[5:10])
    assert abs(len(data) - wanted) == min(abs(s - wanted) for s in sizes)
    with pytest.raises(TargetError, match="smallest container"):
        codec.compress(pixels, target=Target(bytes=sizes[0] - 1))
    with pytest.raises(TargetError, match="out of range"):
        codec.compress(pixels, target=Target(level=codec.levels))
    with pytest.raises(ValueError, match="one target"):
        Target(ratio=10, bytes=100)


def test_audio_kbps_target_counts_the_signal_duration(tmp_path):
    codec = load_codec(tiny_checkpoint(tmp_path / "a.pt", {**TINY_AUDIO, "rate": RATE}))
    audio = sample_audio(48000)
    low = codec.compress(audio, 48000, Target(kbps=0.001))
    high = codec.compress(audio, 48000, Target(kbps=1e6))
    assert bitstream.unpack(low).level == 0 and bitstream.unpack(high).level == 15


def test_encode_node_follows_control_messages(vr_image):
    node = Encode(checkpoint=str(vr_image), level=2)
    out = []
    node.attach(lambda port, packet: out.append(packet), threading.Event())
    node.setup()
    pixels = sample_image(64, 64)
    node.handle("image", image_packet("rgb", 0, 0, pixels))
    node.handle("control", image_packet("ctl", 0, 0, pixels))           # not a dict: rejected
    node.handle("control", Packet("ctl", 0, 0, {"ratio": "fast"}))  # unparsable: rejected
    node.handle("control", Packet("ctl", 0, 0, {"level": 12}))
    node.handle("image", image_packet("rgb", 1, 1, pixels))
    assert [bitstream.unpack(p.payload).level for p in out] == [2, 12]
    assert node.counters["control_accepted"] == 1 and node.counters["control_rejected"] == 2


def test_decode_node_counts_containers_it_cannot_decode(vr_image):
    from nodes.codec import Decode
    node = Decode(checkpoint=str(vr_image))
    out = []
    node.attach(lambda port, packet: out.append(packet), threading.Event())
    node.setup()
    good = load_codec(vr_image).compress(sample_image(32, 32))
    for payload in (b"DNC\x02junk", good[:-1], good):
        node.handle("encoded", Packet("rgb", 0, 0, payload, {}))
    assert len(out) == 1 and node.counters["rejected"] == 2
    # without a checkpoint it finds each stream's codec by name and hash; a codec that is not
    # installed anywhere is a counted reject too, not a crash
    c = bitstream.unpack(good)
    stranger = bitstream.Container(c.kind, c.dtype, "not-installed", c.codec_hash, c.shape,
                                   c.strings, c.string_shapes, family=c.family, level=c.level)
    v1 = (V1 / "aria-image.dnc").read_bytes()
    node = Decode()
    node.attach(lambda port, packet: out.append(packet), threading.Event())
    node.setup()
    for payload in (stranger.pack(), stranger.pack(), v1):
        node.handle("encoded", Packet("rgb", 0, 0, payload, {}))
    assert len(out) == 2 and node.counters["rejected"] == 2
    assert np.array_equal(out[-1].payload, np.asarray(Image.open(V1 / "aria-image-decoded.png")))


def test_version_1_containers_decode_bit_identically():
    # written by the first aria-image, now installed as aria-image-v1.pt: found by name and hash
    v1 = bitstream.unpack((V1 / "aria-image.dnc").read_bytes())
    image = load_codec_for(v1.codec_name, v1.codec_hash).decompress((V1 / "aria-image.dnc").read_bytes())
    assert np.array_equal(image, np.asarray(Image.open(V1 / "aria-image-decoded.png")))
    audio = load_codec("aria-audio-fast").decompress((V1 / "aria-audio-fast.dnc").read_bytes())
    # the strings decode to the same latent; the float synthesis after it may round one count
    # differently on another CPU (AVX-512/AMX kernels) or thread count
    expected = np.load(V1 / "aria-audio-fast-decoded.npy")
    assert audio.shape == expected.shape
    assert np.abs(audio.astype(np.int64) - expected).max() <= 1
    assert bitstream.unpack((V1 / "aria-image.dnc").read_bytes()).version == 1


def _resealed(data: bytes) -> bytes:
    """`data` (without its CRC) with a valid CRC appended: what a crafted container looks like."""
    return data + struct.pack("<I", zlib.crc32(data))


def _version_1(c: bitstream.Container, payload: bytes) -> bytes:
    """A version-1 container (the old layout) with `payload`."""
    name = c.codec_name.encode()
    out = b"DNC\x01" + bytes([bitstream.KINDS.index(c.kind), bitstream.DTYPES.index(c.dtype),
                               len(name)]) + name + c.codec_hash
    for shape in (c.shape, c.latent_shape):
        out += bitstream.varint(len(shape)) + b"".join(bitstream.varint(s) for s in shape)
    out += bitstream.varint(c.sample_rate) + bitstream.varint(len(payload)) + payload
    return _resealed(out)


def _expect_clean_rejection(codec, data: bytes) -> None:
    try:
        codec.decompress(data)
    except BitstreamError:
        pass


def test_crafted_containers_are_one_error_never_a_crash(vr_image):
    codec = load_codec(vr_image)
    data = codec.compress(sample_image(40, 50))
    body = data[:-4]
    header_end = len(body) - len(bitstream.unpack(data).strings[0])
    for i in range(4, header_end):          # every header byte, every value, CRC valid
        for value in (0, 1, 2, 0x7F, 0x80, 0xFF):
            crafted = bytearray(body)
            crafted[i] = value
            _expect_clean_rejection(codec, _resealed(bytes(crafted)))
    rng = np.random.default_rng(0)
    container = bitstream.unpack(data)
    for n in (0, 1, 4, 7, 8, 42, 400):      # any payload, CRC valid
        payload = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        crafted = bitstream.Container(container.kind, container.dtype, container.codec_name,
                                      container.codec_hash, container.shape, (payload,),
                                      container.string_shapes, family=container.family,
                                      level=container.level)
        _expect_clean_rejection(codec, crafted.pack())
    # version 1 of a real codec, valid CRC, garbage payloads (a 42-byte one crashed the C++
    # rANS decoder before): one error each
    aria, v1 = load_codec("aria-image-v1"), bitstream.unpack((V1 / "aria-image.dnc").read_bytes())
    assert np.array_equal(aria.decompress(_version_1(v1, v1.strings[0])),
                          np.asarray(Image.open(V1 / "aria-image-decoded.png")))
    for payload in (b"", b"\xff" * 8, rng.integers(0, 256, 13, dtype=np.uint8).tobytes(),
                    b"\x00" * 4 + b"\xff" * 12, b"\xff" * 4 + b"\x00" * 8):
        with pytest.raises(BitstreamError):
            aria.decompress(_version_1(v1, payload))
    # declared sizes far beyond the data or any maximum: refused before allocating
    huge = bitstream.Container("image", "uint8", codec.name, codec.hash_bytes,
                               (1 << 26, 1 << 26, 3), (b"\0\0\0\0",), ((16, 1 << 20, 1 << 20),),
                               family="dance").pack()
    with pytest.raises(BitstreamError, match="more than"):
        codec.decompress(huge)


def test_items_over_the_decoding_limit_are_refused_both_ways(vr_image):
    small = load_codec(vr_image)
    pixels = sample_image(64, 64)
    data = small.compress(pixels)
    small.max_elements = pixels.size - 1
    with pytest.raises(BitstreamError, match="elements this decoder accepts"):
        small.decompress(data)
    with pytest.raises(ValueError, match="encode it in blocks"):
        small.compress(pixels)


def test_a_container_of_another_checkpoint_names_it(vr_image, tmp_path):
    other = load_codec(tiny_checkpoint(tmp_path / "other.pt",
                                       {**TINY_IMAGE, "name": "tiny-image-vr", "rate": RATE},
                                       seed=7))
    data = other.compress(sample_image(32, 32))
    with pytest.raises(BitstreamError, match=rf"{other.id}.*-c"):
        load_codec(vr_image).decompress(data)
