"""Delay-compensated coding (dance.align): delays measured, channels lined up and restored."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dance import align, bitstream
from dance.bitstream import BitstreamError
from dance.codec import load_codec
from dance.targets import Target

from .dance_testing import TINY_AUDIO, sample_audio, tiny_checkpoint

RATE = 48_000
DELAYS = np.array([0, 5, -3, 9, 2, -7, 4])
ALIGNED_AUDIO = {**TINY_AUDIO, "name": "tiny-audio-aligned", "align": {"max_shift": 26},
                 "rate": {"levels": 16, "step_min": 0.05, "step_max": 2.0}}


def _delayed(rng, delays, frames):
    """One broadband source reaching channel c `delays[c]` samples late, and its own noise."""
    pad = 40
    source = rng.standard_normal(frames + 2 * pad)
    x = np.stack([source[pad - d:pad - d + frames] for d in delays], 1)
    return x + 0.05 * rng.standard_normal(x.shape)


def test_channel_delays_recovers_the_geometry_up_to_a_common_offset():
    block = _delayed(np.random.default_rng(0), DELAYS, 4096)
    found = align.channel_delays(block, 26, RATE)
    assert np.array_equal(found - found[0], DELAYS - DELAYS[0])
    assert np.array_equal(align.channel_delays(np.zeros((4096, 7)), 26, RATE), np.zeros(7))


def test_align_lines_the_channels_up_and_unalign_restores_every_sample():
    x = torch.from_numpy(_delayed(np.random.default_rng(1), DELAYS, 3 * 4096).T[None].copy())
    delays = align.segment_delays(x, 26, RATE)
    assert delays.shape == (3, 7)
    lined = align.align(x, delays, 26)
    assert lined.shape[-1] == 3 * 4096 + 52
    core = lined[0, :, 100:4000]
    assert torch.allclose(core, core[:1].expand_as(core), atol=0.5)   # channels now in phase
    assert torch.equal(align.unalign(lined, delays, 26, x.shape[-1]), x)


def test_delays_string_is_checked():
    delays = np.array([[1, -2, 3]])
    assert np.array_equal(align.unpack_delays(align.pack_delays(delays), 1, 3, 26), delays)
    with pytest.raises(ValueError, match="holds 2 bytes"):
        align.unpack_delays(b"\x00\x01", 1, 3, 26)
    with pytest.raises(ValueError, match="over the codec's 26"):
        align.unpack_delays(bytes([0, 100, 0]), 1, 3, 26)


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    return load_codec(tiny_checkpoint(tmp_path_factory.mktemp("al") / "a.pt", ALIGNED_AUDIO))


def test_aligned_codec_round_trips_files_and_stream_blocks(codec):
    audio = sample_audio(3 * 4096 + 100)
    whole = codec.compress(audio, 48000)
    container = bitstream.unpack(whole)
    assert container.string_shapes[-1] == (4, 7)                     # ceil(12388 / 4096) sets
    assert codec.decompress(whole).shape == audio.shape
    encoder = codec.audio_encoder(48000, blocks=True)
    blocks = [encoder.encode(audio[i:i + 4096], Target(level=10)) for i in range(0, len(audio), 4096)]
    decoded = np.concatenate([codec.decompress(b) for b in blocks])
    assert decoded.shape == audio.shape and decoded.dtype == np.int32


def test_aligned_block_with_a_forged_delay_is_refused(codec):
    block = bitstream.unpack_block(codec.audio_encoder(48000, blocks=True).encode(sample_audio(4096)))
    forged = bitstream.Block(block.dtype, block.codec_tag, block.level, block.frames,
                             (*block.strings[:-1], bytes([99] * 7))).pack()
    with pytest.raises(BitstreamError, match="over the codec's"):
        codec.decompress(forged)
    short = bitstream.Block(block.dtype, block.codec_tag, block.level, block.frames,
                            block.strings[:-1]).pack()
    with pytest.raises(BitstreamError, match="strings"):
        codec.decompress(short)
