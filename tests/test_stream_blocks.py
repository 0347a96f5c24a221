"""Stream blocks (bitstream version 3) and the stream encoder's rate reservoir."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from dance import bitstream
from dance.bitstream import BitstreamError
from dance.codec import load_codec
from dance.targets import Target
from nodes.codec import Decode, Encode
from pipeline.packet import audio_packet

from .dance_testing import TINY_AUDIO, sample_audio, tiny_checkpoint

VR_AUDIO = {**TINY_AUDIO, "name": "tiny-audio-vr",
            "rate": {"levels": 48, "step_min": 0.02, "step_max": 4.0}}


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    path = tiny_checkpoint(tmp_path_factory.mktemp("blocks") / "vr.pt", VR_AUDIO)
    return load_codec(path)


def test_block_decodes_like_the_container_of_the_same_block(codec):
    audio = sample_audio(4096)
    block = codec.audio_encoder(48000, blocks=True).encode(audio, Target(level=30))
    container = codec.audio_encoder(48000).encode(audio, Target(level=30))
    assert bitstream.is_block(block) and not bitstream.is_block(container)
    assert len(container) - len(block) >= 30           # name, hash, family, shapes not repeated
    assert np.array_equal(codec.decompress(block), codec.decompress(container))
    parsed = bitstream.unpack_block(block)
    assert (parsed.frames, parsed.level, parsed.dtype) == (4096, 30, "int32")


def test_damaged_or_foreign_blocks_are_refused(codec):
    block = bytearray(codec.audio_encoder(48000, blocks=True).encode(sample_audio(4096)))
    flipped = bytes(block[:-6]) + bytes([block[-6] ^ 0x10]) + bytes(block[-5:])
    with pytest.raises(BitstreamError, match="CRC|corrupt"):
        codec.decompress(flipped)
    with pytest.raises(BitstreamError, match="truncated"):
        codec.decompress(bytes(block[:9]))
    foreign = bytearray(block)
    foreign[4:6] = bytes(b ^ 0xFF for b in foreign[4:6])            # another codec's tag
    body = bytes(foreign[:-2])
    import zlib
    foreign = body + (zlib.crc32(body) & 0xFFFF).to_bytes(2, "little")
    with pytest.raises(BitstreamError, match="another|hash"):
        codec.decompress(foreign)
    huge = bitstream.Block("int32", codec.hash_bytes[:2], 0, 1 << 26, (b"\0",)).pack()
    with pytest.raises(BitstreamError, match="over the"):
        codec.decompress(huge)                                        # refused before allocating


def test_reservoir_lands_the_stream_on_the_ratio(codec):
    audio = np.concatenate([sample_audio(4096, seed=s) * (1 + s % 3) for s in range(24)])
    sizes = [len(codec.audio_encoder(48000, blocks=True).encode(audio[:4096], Target(level=k)))
             for k in (0, codec.levels - 1)]
    raw = 4096 * 7 * 4
    ratio = raw / np.sqrt(sizes[0] * sizes[1])           # a target inside the codec's range
    encoder = codec.audio_encoder(48000, blocks=True)
    coded = [encoder.encode(audio[i:i + 4096], Target(ratio=ratio))
             for i in range(0, len(audio), 4096)]
    achieved = audio.size * 4 / sum(map(len, coded))
    assert abs(achieved / ratio - 1) < 0.03
    assert len({bitstream.unpack_block(c).level for c in coded}) > 1   # levels move per block


def test_decode_node_takes_blocks_by_the_packet_codec_meta(codec, tmp_path):
    path = tmp_path / "vr.pt"
    tiny_checkpoint(path, VR_AUDIO)
    enc, dec = Encode(checkpoint=str(path)), Decode(checkpoint=str(path))
    encoded, decoded = [], []
    for node, sink in ((enc, encoded), (dec, decoded)):
        node.attach(lambda port, packet, sink=sink: sink.append((port, packet)), threading.Event())
        node.setup()
    audio = sample_audio(2 * 4096)
    for i in range(2):
        enc.handle("audio", audio_packet("mic", i, i, audio[i * 4096:(i + 1) * 4096], 48000))
    assert all(bitstream.is_block(p.payload) for _, p in encoded)
    for _, packet in encoded:
        dec.handle("encoded", packet)
    assert [p.payload.shape for _, p in decoded] == [(4096, 7)] * 2
    no_meta = encoded[0][1].replace(meta={})
    by_name = Decode()
    by_name.attach(lambda port, packet: None, threading.Event())
    by_name.setup()
    by_name.handle("encoded", no_meta)                  # a block names no codec: counted
    assert by_name.counters["rejected"] == 1
