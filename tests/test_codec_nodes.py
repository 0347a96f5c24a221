"""encode → decode runtime nodes on real packets (random-init tiny codecs)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from nodes.codec import Decode, Encode
from pipeline.packet import audio_packet, image_packet

from .dance_testing import TINY_AUDIO, TINY_IMAGE, tiny_checkpoint


def _bind(node):
    out = []
    node.attach(lambda port, packet: out.append((port, packet)), threading.Event())
    node.setup()
    return out


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("nodes")
    return tiny_checkpoint(d / "img.pt", TINY_IMAGE), tiny_checkpoint(d / "aud.pt", TINY_AUDIO)


def test_image_packets_round_trip(ckpts):
    image_ckpt, _ = ckpts
    enc, dec = Encode(checkpoint=str(image_ckpt)), Decode(checkpoint=str(image_ckpt))
    encoded, decoded = _bind(enc), _bind(dec)
    pixels = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    enc.handle("image", image_packet("camera-rgb", 123_000, 4, pixels, device_ts=7))
    port, packet = encoded[0]
    assert port == "encoded" and isinstance(packet.payload, bytes)
    assert packet.meta["kind"] == "image" and packet.meta["raw_bytes"] == pixels.nbytes
    assert packet.meta["codec"] == enc.codec.id
    assert (packet.stream, packet.timestamp_ns, packet.seq) == ("camera-rgb", 123_000, 4)
    dec.handle("encoded", packet)
    port, frame = decoded[0]
    assert port == "image" and frame.payload.shape == pixels.shape
    assert frame.payload.dtype == np.uint8
    assert frame.meta == {"height": 50, "width": 70, "channels": 3, "pixel_format": "rgb24",
                          "device_ts": 7}
    assert (frame.stream, frame.timestamp_ns, frame.seq) == ("camera-rgb", 123_000, 4)


def test_audio_stream_round_trip_keeps_filter_state(ckpts):
    _, audio_ckpt = ckpts
    enc, dec = Encode(checkpoint=str(audio_ckpt)), Decode(checkpoint=str(audio_ckpt))
    encoded, decoded = _bind(enc), _bind(dec)
    rng = np.random.default_rng(1)
    signal = (rng.normal(0, 1e6, (3 * 4096, 7)) + 4e7).astype(np.int32)
    for i in range(3):
        block = signal[i * 4096:(i + 1) * 4096]
        enc.handle("audio", audio_packet("mic", 1_000 + i * 85_333_333, i, block, 48000))
    # the node's session carried the DC filter state: same bytes as one streaming encoder
    session = enc.codec.audio_encoder(48000, blocks=True)
    expected = [session.encode(signal[i * 4096:(i + 1) * 4096]) for i in range(3)]
    assert [p.payload for _, p in encoded] == expected
    for _, packet in encoded:
        dec.handle("encoded", packet)
    assert [port for port, _ in decoded] == ["audio"] * 3
    for i, (_, packet) in enumerate(decoded):
        assert packet.payload.shape == (4096, 7) and packet.payload.dtype == np.int32
        assert packet.meta["sample_rate"] == 48000 and packet.seq == i
        assert packet.meta["first_sample_ns"] == 1_000 + i * 85_333_333


def test_wrong_port_for_codec_kind_fails_clearly(ckpts):
    _, audio_ckpt = ckpts
    enc = Encode(name="enc", checkpoint=str(audio_ckpt))
    _bind(enc)
    with pytest.raises(ValueError, match="node 'enc'.*audio codec"):
        enc.handle("image", image_packet("cam", 0, 0, np.zeros((8, 8, 3), np.uint8)))


@pytest.mark.parametrize("options", [{"precision": "bfloat16"}, {"engine": "onnxruntime"}])
def test_faster_encoder_options_decode_with_the_plain_decoder(ckpts, options):
    _, audio_ckpt = ckpts
    enc, dec = Encode(checkpoint=str(audio_ckpt), **options), Decode(checkpoint=str(audio_ckpt))
    encoded, decoded = _bind(enc), _bind(dec)
    block = np.random.default_rng(1).integers(-2**20, 2**20, (4096, 7), dtype=np.int32)
    enc.handle("audio", audio_packet("mic", 0, 0, block, 48000))
    dec.handle("encoded", encoded[0][1])
    assert decoded[0][1].payload.shape == (4096, 7)
