"""RR+JPEG / RR+WebP / RR+AVIF / JPEG / WebP / AVIF baselines: budgets on real Aria frames,
container checks, nodes, and a graph that switches between DANCE and a baseline by one line."""
from __future__ import annotations

import io
import json
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

import baselines.image
from baselines.image import (HEADER, MAGIC, BaselineError, ImageBaseline, budget_for_ratio,
                             decode, encode, fit_budget, read_header)
from dance import data
from evaluation.image_quality import ms_ssim, ms_ssim_window, psnr
from nodes.image_baselines import ImageBaselineDecode, ImageBaselineEncode
from pipeline.packet import image_packet
from pipeline.testing import feed

from .conftest import dance
from .dance_testing import TINY_IMAGE, sample_image, tiny_checkpoint


@pytest.fixture(scope="module")
def aria_frames():
    from .conftest import AEA_VRS
    if not AEA_VRS.exists():
        pytest.skip(f"sample AEA recording not found at {AEA_VRS}")
    provider = data.open_vrs(AEA_VRS)
    return [data.read_vrs_frame(provider, AEA_VRS, i) for i in (0, 5)]


def _payload_size(container: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(read_header(container)[3])) as picture:
        return picture.size


@pytest.mark.parametrize("method", ["rr_jpeg", "rr_webp"])
def test_budget_met_on_aria_frames_and_never_exceeded(aria_frames, method):
    first, second = aria_frames
    by_ratio = ImageBaseline(method, ratio=800).encode(first)
    budget = budget_for_ratio(first.shape, 800)
    assert budget == first.nbytes // 800
    by_bytes = ImageBaseline(method, budget_bytes=3000).encode(second)
    for frame, encoding, limit in ((first, by_ratio, budget), (second, by_bytes, 3000)):
        assert 0.85 * limit <= len(encoding.data) <= limit  # uses the budget, never exceeds it
        assert encoding.scale > 1  # 1408² frames need a reduction at these sizes
        decoded = decode(encoding.data)
        assert decoded.shape == frame.shape and decoded.dtype == np.uint8
        assert psnr(frame, decoded) == pytest.approx(encoding.psnr)
        assert encoding.psnr > 30


def test_search_beats_the_papers_fixed_8x_reduction(aria_frames):
    frame = aria_frames[0]
    searched = ImageBaseline("rr_jpeg", ratio=800).encode(frame)
    fixed = ImageBaseline("rr_jpeg", ratio=800, scale=8).encode(frame)
    assert _payload_size(fixed.data) == (176, 176) and fixed.scale == 8
    assert len(fixed.data) <= budget_for_ratio(frame.shape, 800)
    assert searched.psnr >= fixed.psnr


def test_plain_quality_orders_bytes_and_psnr():
    image = sample_image(120, 160)
    low, high = (encode(image, "webp", q) for q in (10, 90))
    assert len(low.data) < len(high.data)
    assert psnr(image, decode(low.data)) < psnr(image, decode(high.data))
    assert _payload_size(high.data) == (160, 120)
    jpeg = ImageBaseline("jpeg", quality=75)
    assert jpeg.id == "jpeg@q75" and decode(jpeg.compress(image)).shape == image.shape


def test_budget_below_the_smallest_encoding_is_refused():
    with pytest.raises(BaselineError, match=r"no jpeg encoding fits 100 bytes: the smallest is"):
        ImageBaseline("rr_jpeg", budget_bytes=100).compress(sample_image(64, 64))


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "rr_jpeg", "quality": 50}, "rr_jpeg needs exactly one of budget_bytes or ratio"),
    ({"method": "webp", "quality": 50, "ratio": 10.0}, "webp needs exactly one of quality"),
    ({"method": "jpeg", "quality": 0}, "jpeg quality must be 1..100"),
    ({"method": "jpeg", "quality": 50, "scale": 2.0}, "scale .* applies to rr_jpeg / rr_webp"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageBaseline(kwargs.pop("method"), **kwargs)


def test_garbage_and_truncated_containers_fail_clearly():
    container = encode(sample_image(), "jpeg", 50).data
    assert container[:3] == MAGIC and len(container) > HEADER.size
    with pytest.raises(BaselineError, match="not an image baseline container"):
        decode(np.random.default_rng(0).bytes(300))
    with pytest.raises(BaselineError, match="not an image baseline container"):
        decode(container[:HEADER.size - 1])
    with pytest.raises(BaselineError, match="truncated or corrupt"):
        decode(container[:-10])
    forged = bytearray(container)
    forged[3] = 9
    with pytest.raises(BaselineError, match="version 9 is not supported"):
        decode(bytes(forged))
    garbage = b"\xff\xd8" + bytes(200)  # a JPEG start marker, then nothing decodable
    wrapped = HEADER.pack(MAGIC, 1, 1, 75, 101, zlib.crc32(garbage)) + garbage
    with pytest.raises(BaselineError, match="cannot decode the jpeg payload"):
        decode(wrapped)


def test_avif_round_trip_at_a_quality():
    image = sample_image(120, 160)
    low, high = (encode(image, "avif", q) for q in (10, 80))
    assert low.data[4] == 3 and read_header(high.data)[0] == "avif"  # format byte 3
    assert len(low.data) < len(high.data)
    for encoding in (low, high):
        decoded = decode(encoding.data)
        assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert psnr(image, decode(low.data)) < psnr(image, decode(high.data))
    assert _payload_size(high.data) == (160, 120)
    avif = ImageBaseline("avif", quality=50)
    assert avif.id == "avif@q50" and avif.decompress(avif.compress(image)).shape == image.shape


def test_avif_budget_is_never_exceeded():
    image = sample_image(96, 128)
    for budget in (600, 2500):
        fit = fit_budget(image, "avif", budget)
        assert 0.7 * budget <= len(fit.data) <= budget, (budget, len(fit.data))
        decoded = decode(fit.data)
        assert decoded.shape == image.shape
        assert psnr(image, decoded) == pytest.approx(fit.psnr)
    by_ratio = ImageBaseline("rr_avif", ratio=60)
    assert by_ratio.id == "rr_avif@60:1"
    assert len(by_ratio.compress(image)) <= budget_for_ratio(image.shape, 60)
    with pytest.raises(BaselineError, match=r"no avif encoding fits 100 bytes"):
        fit_budget(image, "avif", 100)


def test_corrupt_avif_containers_fail_clearly():
    container = encode(sample_image(), "avif", 50).data
    _, height, width, payload = read_header(container)
    with pytest.raises(BaselineError, match="truncated or corrupt"):
        decode(container[:-10])
    jpeg_payload = read_header(encode(sample_image(), "jpeg", 50).data)[3]
    for bad in (payload[:-20], payload[:len(payload) // 2], payload[:40], jpeg_payload):
        wrapped = HEADER.pack(MAGIC, 1, 3, height, width, zlib.crc32(bad)) + bad  # CRC fine
        with pytest.raises(BaselineError, match="cannot decode the avif payload"):
            decode(wrapped)


def test_avif_missing_from_pillow_is_a_clear_error(monkeypatch):
    container = encode(sample_image(), "avif", 50).data
    monkeypatch.setattr(baselines.image, "_avif_available", lambda: False)
    for attempt in (lambda: ImageBaseline("rr_avif", ratio=100),
                    lambda: fit_budget(sample_image(), "avif", 2000),
                    lambda: decode(container)):
        with pytest.raises(BaselineError, match=r"AVIF is not available: Pillow .* without "
                                                r"libavif"):
            attempt()
    assert decode(encode(sample_image(), "webp", 50).data).shape == sample_image().shape


def test_ms_ssim_rule_for_small_frames():
    assert [ms_ssim_window(s, 500) for s in (1408, 161, 160, 129, 97, 65, 33, 32)] == \
        [11, 11, 9, 9, 7, 5, 3, None]
    image = sample_image(100, 120)
    noisy = np.clip(image + np.random.default_rng(1).normal(0, 8, image.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    assert ms_ssim(image, image) == pytest.approx(1.0, abs=1e-6)
    assert 0.5 < ms_ssim(image, noisy) < 0.999
    assert np.isnan(ms_ssim(image[:32], noisy[:32]))
    assert psnr(image, image) == float("inf")


def test_nodes_round_trip_with_codec_meta(aria_frames):
    frame = aria_frames[0]
    packet = image_packet("camera-rgb", 123_000, 4, frame, device_ts=7)
    [(port, encoded)] = feed(ImageBaselineEncode(method="rr_webp", budget_bytes=4000), "image",
                             [packet])
    assert port == "encoded" and isinstance(encoded.payload, bytes)
    assert len(encoded.payload) <= 4000
    assert encoded.meta["codec"] == "rr_webp@4000B" and encoded.meta["kind"] == "image"
    assert encoded.meta["raw_bytes"] == frame.nbytes
    [(port, decoded)] = feed(ImageBaselineDecode(), "encoded", [encoded])
    assert port == "image" and decoded.payload.shape == frame.shape
    assert decoded.meta == packet.meta
    assert (decoded.stream, decoded.timestamp_ns, decoded.seq) == ("camera-rgb", 123_000, 4)


def test_decode_node_names_itself_on_garbage():
    packet = image_packet("cam", 0, 3, sample_image()).replace(payload=b"\x00" * 64)
    with pytest.raises(ValueError, match=r"node 'server': packet cam#3: not an image baseline"):
        feed(ImageBaselineDecode(name="server"), "encoded", [packet])


def test_encode_node_names_itself_on_bad_settings():
    node = ImageBaselineEncode(name="glasses_codec", method="rr_jpeg", quality=30)
    node.attach(lambda port, packet: None, threading.Event())
    with pytest.raises(ValueError, match="node 'glasses_codec': rr_jpeg needs exactly one"):
        node.setup()


GRAPH = """\
nodes:
  - {{name: vrs, type: aria_vrs, params: {{path: {vrs}, mic: false, speed: 0, end_s: 0.1}}}}
  - {encoder}
  - {{name: decode, type: image_baseline_decode, params: {{checkpoint: {ckpt}}}}}
  - {{name: sent, type: stats}}
  - {{name: decoded, type: stats}}
edges:
  - vrs.image -> encode.image
  - encode.encoded -> sent.packets
  - encode.encoded -> decode.encoded
  - decode.image -> decoded.packets
"""


def test_graph_switches_codec_by_one_line(tmp_path, aea_vrs):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt", TINY_IMAGE)
    encoders = {
        "dance": f"{{name: encode, type: encode, params: {{checkpoint: {ckpt}}}}}",
        "rr_webp": "{name: encode, type: image_baseline_encode, "
                   "params: {method: rr_webp, ratio: 1000, scale: 8}}",
    }
    graphs = {k: GRAPH.format(vrs=aea_vrs, ckpt=ckpt, encoder=v) for k, v in encoders.items()}
    changed = [a for a, b in zip(*(g.splitlines() for g in graphs.values())) if a != b]
    assert len(changed) == 1
    ratios = {}
    for name, text in graphs.items():
        (tmp_path / f"{name}.yaml").write_text(text)
        report = tmp_path / f"{name}.json"
        result = dance("run", tmp_path / f"{name}.yaml", "--report", report)
        assert result.returncode == 0, result.stderr
        nodes = json.loads(report.read_text())["nodes"]
        sent = nodes["sent"]["streams"]["camera-rgb"]
        decoded = nodes["decoded"]["streams"]["camera-rgb"]
        assert decoded["packets"] == sent["packets"] >= 2
        assert decoded["shape"] == [1408, 1408, 3] and decoded["dtype"] == "uint8"
        ratios[name] = sent["compression_ratio"]
    assert ratios["rr_webp"] >= 1000


def test_decode_node_is_the_dance_decoder_without_its_audio_port():
    from nodes.codec import Decode
    assert issubclass(ImageBaselineDecode, Decode)
    assert set(Decode.outputs) == {"image", "audio"} and set(ImageBaselineDecode.outputs) == {"image"}
