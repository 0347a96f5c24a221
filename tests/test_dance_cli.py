"""`dance inspect/encode/decode/export` through the real CLI parser (pipeline/cli.py)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from pipeline.cli import main

from .conftest import dance
from .dance_testing import TINY_AUDIO, TINY_IMAGE, tiny_checkpoint


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    return tiny_checkpoint(d / "img.pt", TINY_IMAGE), tiny_checkpoint(d / "aud.pt", TINY_AUDIO)


def _ratio(text: str, label: str) -> float:
    return float(re.search(rf"([\d.]+):1 \({label}", text).group(1))


def test_inspect_reference_configs(capsys):
    assert main(["inspect", "aria-image"]) == 0
    out = capsys.readouterr().out
    assert "285,160 params" in out and "506.25 conv MACs per input pixel" in out
    assert main(["inspect", "aria-audio"]) == 0
    assert "331,264 params" in capsys.readouterr().out


def test_png_round_trip(ckpts, tmp_path, capsys):
    image_ckpt, _ = ckpts
    rng = np.random.default_rng(0)
    pixels = (np.mgrid[0:90, 0:70][0][..., None] * [1, 2, 3] % 256
              + rng.integers(0, 9, (90, 70, 3))).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    assert main(["encode", "-c", str(image_ckpt), str(tmp_path / "in.png"),
                 "-o", str(tmp_path / "x.dnc")]) == 0
    out = capsys.readouterr().out
    size = (tmp_path / "x.dnc").stat().st_size
    assert _ratio(out, "raw") == pytest.approx(90 * 70 * 3 / size, rel=1e-3)
    assert _ratio(out, "input file") == pytest.approx((tmp_path / "in.png").stat().st_size / size,
                                                      rel=1e-3)
    assert main(["decode", str(tmp_path / "x.dnc"), "-c", str(image_ckpt),
                 "-o", str(tmp_path / "out.png")]) == 0
    decoded = np.asarray(Image.open(tmp_path / "out.png"))
    assert decoded.shape == pixels.shape and decoded.dtype == np.uint8
    assert main(["decode", str(tmp_path / "x.dnc"), "-c", str(image_ckpt),
                 "-o", str(tmp_path / "again.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), decoded)


def test_encode_precision_and_engine_flags_feed_the_same_decoder(ckpts, tmp_path, capsys):
    image_ckpt, _ = ckpts
    pixels = (np.mgrid[0:64, 0:64][1][..., None] * [3, 2, 1] % 256).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    decoded = {}
    for flags in ([], ["--precision", "bfloat16"], ["--engine", "onnxruntime"]):
        name = "-".join(flags) or "default"
        assert main(["encode", "-c", str(image_ckpt), str(tmp_path / "in.png"),
                     "-o", str(tmp_path / f"{name}.dnc"), *flags]) == 0
        assert main(["decode", str(tmp_path / f"{name}.dnc"), "-c", str(image_ckpt),
                     "-o", str(tmp_path / f"{name}.png")]) == 0
        decoded[name] = np.asarray(Image.open(tmp_path / f"{name}.png")).astype(float)
    reference = decoded.pop("default")
    for name, image in decoded.items():     # other arithmetic, (almost) the same symbols
        assert np.abs(image - reference).mean() < 2.0, name
    assert main(["encode", "-c", str(image_ckpt), str(tmp_path / "in.png"), "-o",
                 str(tmp_path / "x.dnc"), "--engine", "onnxruntime", "--precision",
                 "bfloat16"]) == 2
    assert "onnxruntime" in capsys.readouterr().err


def test_seven_channel_wav_round_trip(ckpts, tmp_path, capsys):
    _, audio_ckpt = ckpts
    rng = np.random.default_rng(1)
    t = np.arange(4800)[:, None]
    samples = (1e6 * np.sin(2 * np.pi * 300 * t / 48000 + np.arange(7)) + 4e7
               + rng.normal(0, 1e4, (4800, 7))).astype(np.int32)
    sf.write(tmp_path / "in.wav", samples, 48000, subtype="PCM_32")
    assert main(["encode", "-c", str(audio_ckpt), str(tmp_path / "in.wav"),
                 "-o", str(tmp_path / "a.dnc")]) == 0
    out = capsys.readouterr().out
    size = (tmp_path / "a.dnc").stat().st_size
    assert _ratio(out, "raw") == pytest.approx(4800 * 7 * 4 / size, rel=1e-3)
    assert main(["decode", str(tmp_path / "a.dnc"), "-c", str(audio_ckpt),
                 "-o", str(tmp_path / "out.wav")]) == 0
    decoded, rate = sf.read(tmp_path / "out.wav", dtype="int32", always_2d=True)
    assert rate == 48000 and decoded.shape == samples.shape


def test_bad_inputs_give_one_error_line(ckpts, tmp_path, capsys):
    image_ckpt, audio_ckpt = ckpts
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "in.png")
    assert main(["encode", "-c", str(image_ckpt), str(tmp_path / "in.png"),
                 "-o", str(tmp_path / "x.dnc")]) == 0
    data = (tmp_path / "x.dnc").read_bytes()
    (tmp_path / "flip.dnc").write_bytes(data[:20] + bytes([data[20] ^ 1]) + data[21:])
    (tmp_path / "cut.dnc").write_bytes(data[:-5])
    capsys.readouterr()
    for argv in (["decode", str(tmp_path / "flip.dnc"), "-c", str(image_ckpt), "-o", "o.png"],
                 ["decode", str(tmp_path / "cut.dnc"), "-c", str(image_ckpt), "-o", "o.png"],
                 ["decode", str(tmp_path / "x.dnc"), "-c", str(audio_ckpt), "-o", "o.wav"],
                 ["encode", "-c", str(audio_ckpt), str(tmp_path / "in.png"), "-o", "o.dnc"],
                 ["encode", "-c", str(image_ckpt), str(tmp_path / "nope.png"), "-o", "o.dnc"],
                 ["inspect", "no-such-codec"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)


def test_real_command_decodes_identically_in_a_new_process(ckpts, tmp_path):
    image_ckpt, _ = ckpts
    Image.fromarray(np.arange(64 * 48 * 3, dtype=np.uint8).reshape(64, 48, 3)).save(
        tmp_path / "in.png")
    assert main(["encode", "-c", str(image_ckpt), str(tmp_path / "in.png"),
                 "-o", str(tmp_path / "x.dnc")]) == 0
    assert main(["decode", str(tmp_path / "x.dnc"), "-c", str(image_ckpt),
                 "-o", str(tmp_path / "a.png")]) == 0
    result = dance("decode", tmp_path / "x.dnc", "-c", image_ckpt, "-o", tmp_path / "b.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    (tmp_path / "bad.dnc").write_bytes(b"DNC\x01" + b"\0" * 10)
    result = dance("decode", tmp_path / "bad.dnc", "-c", image_ckpt, "-o", tmp_path / "c.png")
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_export_command(ckpts, tmp_path, capsys):
    image_ckpt, _ = ckpts
    assert main(["export", str(image_ckpt), "--format", "onnx", "-o",
                 str(tmp_path / "enc.onnx")]) == 0
    assert (tmp_path / "enc.onnx").stat().st_size > 1000
    assert "wrote onnx encoder" in capsys.readouterr().out
