"""`dance inspect/encode/decode/extract/export` through the real CLI parser (pipeline/cli.py),
in this process (`main`) or as a new one (`dance`, and `_dance_bytes` for binary stdin/stdout)."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from dance.bitstream import unpack
from dance.codec import load_codec
from dance.data import open_vrs, read_vrs_audio
from pipeline.cli import main

from .conftest import ROOT, dance
from .dance_testing import TINY_AUDIO, TINY_IMAGE, sample_image, tiny_checkpoint

VARIABLE_RATE = {"levels": 16, "step_min": 0.25, "step_max": 8.0}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    return tiny_checkpoint(d / "img.pt", TINY_IMAGE), tiny_checkpoint(d / "aud.pt", TINY_AUDIO)


@pytest.fixture(scope="module")
def vr_ckpt(tmp_path_factory):
    """A tiny image codec with 16 operating points."""
    path = tmp_path_factory.mktemp("cli-vr") / "vr.pt"
    return tiny_checkpoint(path, {**TINY_IMAGE, "name": "tiny-image-vr", "rate": VARIABLE_RATE})


def _dance_bytes(*args, stdin: bytes) -> subprocess.CompletedProcess:
    """`dance ARGS` in a new process with binary stdin and stdout."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=ROOT,
                          input=stdin, capture_output=True, timeout=180)


def _one_error_line(err: str) -> bool:
    return err.startswith("error: ") and err.count("\n") == 1


def _ratio(text: str, label: str) -> float:
    return float(re.search(rf"([\d.]+):1 \({label}", text).group(1))


def test_inspect_reference_configs(capsys):
    assert main(["inspect", "aria-image-v1"]) == 0
    out = capsys.readouterr().out
    assert "285,160 params" in out and "506.25 conv MACs per input pixel" in out
    assert main(["inspect", "aria-image"]) == 0
    assert "280,480 params" in capsys.readouterr().out         # the default, within that budget
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


# -- targets, batches, stdin/stdout, VRS ---------------------------------------------------------
def _encode_json(ckpt, src, tmp_path, *flags) -> dict:
    """Encode `src` with `flags`, return its one JSON item (and check the file it names)."""
    summary = tmp_path / "summary.json"
    assert main(["encode", "-c", str(ckpt), str(src), "-o", str(tmp_path / "x.dnc"),
                 "--json", str(summary), *flags]) == 0
    item, = json.loads(summary.read_text())["items"]
    assert item["bytes"] == (tmp_path / "x.dnc").stat().st_size
    return item


def test_rate_flags_choose_the_level(vr_ckpt, tmp_path, capsys):
    pixels = sample_image(64, 80)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    raw = pixels.size
    smallest = _encode_json(vr_ckpt, tmp_path / "in.png", tmp_path, "--level", "0")
    largest = _encode_json(vr_ckpt, tmp_path / "in.png", tmp_path, "--level", "15")
    assert (smallest["level"], largest["level"], largest["levels"]) == (0, 15, 16)
    assert smallest["bytes"] < largest["bytes"]
    levels = []
    for size in (smallest["bytes"], (smallest["bytes"] + largest["bytes"]) / 2,
                 largest["bytes"]):
        item = _encode_json(vr_ckpt, tmp_path / "in.png", tmp_path, "--ratio", str(raw / size))
        assert item["ratio"] == pytest.approx(raw / size, rel=0.1), item
        levels.append(item["level"])
    assert levels[0] < levels[1] < levels[2], levels
    for budget in (smallest["bytes"], (smallest["bytes"] + largest["bytes"]) // 2,
                   largest["bytes"] + 100):
        item = _encode_json(vr_ckpt, tmp_path / "in.png", tmp_path, "--bytes", str(budget))
        assert item["bytes"] <= budget, (budget, item)
    assert item["level"] == 15
    capsys.readouterr()
    assert main(["encode", "-c", str(vr_ckpt), str(tmp_path / "in.png"), "-o",
                 str(tmp_path / "y.dnc"), "--bytes", str(smallest["bytes"] - 1)]) == 2
    err = capsys.readouterr().err
    assert _one_error_line(err) and "cannot fit" in err, err
    assert not (tmp_path / "y.dnc").exists()


def test_bitrate_targets_audio(ckpts, tmp_path):
    _, audio_ckpt = ckpts
    t = np.arange(9600)[:, None]
    samples = (1e6 * np.sin(2 * np.pi * 300 * t / 48000 + np.arange(7))).astype(np.int32)
    sf.write(tmp_path / "in.wav", samples, 48000, subtype="PCM_32")
    item = _encode_json(audio_ckpt, tmp_path / "in.wav", tmp_path, "--bitrate", "64")
    assert item["raw_bytes"] == 9600 * 7 * 4 and item["level"] == 0   # one level: level 0


def test_folder_and_glob_encode_every_image(vr_ckpt, tmp_path, capsys):
    images = tmp_path / "frames"
    images.mkdir()
    for i in range(3):
        Image.fromarray(sample_image(40, 56, seed=i)).save(images / f"f{i}.png")
    (images / "notes.txt").write_text("not an image")
    assert main(["encode", "-c", str(vr_ckpt), str(images), "-o", str(tmp_path / "a"),
                 "--json", str(tmp_path / "a.json"), "--ratio", "100"]) == 0
    assert "3 containers" in capsys.readouterr().out
    assert main(["encode", "-c", str(vr_ckpt), str(images / "*.png"), "-o",
                 str(tmp_path / "b"), "--json", "-", "--ratio", "100"]) == 0
    captured = capsys.readouterr()
    assert "3 containers" in captured.err     # the human summary moves off stdout
    for folder, document in ((tmp_path / "a", json.loads((tmp_path / "a.json").read_text())),
                             (tmp_path / "b", json.loads(captured.out))):
        assert sorted(p.name for p in folder.iterdir()) == ["f0.dnc", "f1.dnc", "f2.dnc"]
        items = document["items"]
        assert [it["input"] for it in items] == [str(images / f"f{i}.png") for i in range(3)]
        for it in items:
            assert it["bytes"] == (folder / f"{it['input'][-6:-4]}.dnc").stat().st_size
            assert it["raw_bytes"] == 40 * 56 * 3 and it["levels"] == 16
            assert it["codec"].startswith("tiny-image-vr@")
        assert document["totals"]["bytes"] == sum(it["bytes"] for it in items)
        assert document["totals"]["items"] == 3
    assert main(["decode", str(tmp_path / "a"), "-c", str(vr_ckpt), "-o",
                 str(tmp_path / "png")]) == 0
    for i in range(3):
        assert np.asarray(Image.open(tmp_path / "png" / f"f{i}.png")).shape == (40, 56, 3)
    # the same stem twice: refused before anything is written
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(sample_image(40, 56)).save(other / "f1.jpg")
    capsys.readouterr()
    assert main(["encode", "-c", str(vr_ckpt), str(images), str(other / "f1.jpg"), "-o",
                 str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert _one_error_line(err) and "f1.png" in err and "f1.jpg" in err, err
    assert not (tmp_path / "c").exists()


def test_stdin_to_stdout_round_trip(vr_ckpt, tmp_path):
    Image.fromarray(sample_image(48, 64)).save(tmp_path / "in.png")
    encoded = _dance_bytes("encode", "-", "-c", vr_ckpt, "-o", "-", "--level", "7",
                           stdin=(tmp_path / "in.png").read_bytes())
    assert encoded.returncode == 0, encoded.stderr
    assert unpack(encoded.stdout).level == 7
    assert b"stdin: 48\xc3\x9764\xc3\x973 uint8" in encoded.stderr     # the summary, on stderr
    decoded = _dance_bytes("decode", "-", "-c", vr_ckpt, "-o", "-", stdin=encoded.stdout)
    assert decoded.returncode == 0, decoded.stderr
    (tmp_path / "x.dnc").write_bytes(encoded.stdout)
    assert main(["decode", str(tmp_path / "x.dnc"), "-c", str(vr_ckpt), "-o",
                 str(tmp_path / "file.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(decoded.stdout))),
                          np.asarray(Image.open(tmp_path / "file.png")))


def test_vrs_frames_encode_and_extract(ckpts, aea_vrs, tmp_path):
    image_ckpt, _ = ckpts
    result = dance("encode", aea_vrs, "-c", image_ckpt, "-o", tmp_path / "enc", "--frames",
                   "0:2", "--json", tmp_path / "enc.json")
    assert result.returncode == 0, result.stderr
    assert "VrsDataProvider" not in result.stderr     # projectaria-tools' log kept quiet
    items = json.loads((tmp_path / "enc.json").read_text())["items"]
    assert [(it["frame"], it["raw_bytes"]) for it in items] == [(0, 1408 * 1408 * 3),
                                                                 (1, 1408 * 1408 * 3)]
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == [
        "recording-00000.dnc", "recording-00001.dnc"]
    assert unpack((tmp_path / "enc" / "recording-00001.dnc").read_bytes()).shape == (1408, 1408, 3)
    result = dance("extract", aea_vrs, "--images", tmp_path / "png", "--audio",
                   tmp_path / "mics.wav", "--frames", "0:2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["frame-00000.png",
                                                                     "frame-00001.png"]
    assert np.asarray(Image.open(tmp_path / "png" / "frame-00001.png")).shape == (1408, 1408, 3)
    info = sf.info(str(tmp_path / "mics.wav"))
    assert (info.channels, info.samplerate, info.subtype) == (7, 48000, "PCM_32")
    assert info.frames / 48000 == pytest.approx(0.34, abs=0.01)


def test_vrs_audio_blocks_share_one_streaming_encoder(aea_vrs, tmp_path):
    # quantization steps fine enough that the DC filter's carried state changes the symbols
    audio_ckpt = tiny_checkpoint(tmp_path / "fine.pt", {
        **TINY_AUDIO, "name": "tiny-audio-fine",
        "rate": {"levels": 2, "step_min": 0.02, "step_max": 0.05}})
    assert main(["encode", str(aea_vrs), "-c", str(audio_ckpt), "-o", str(tmp_path / "blocks"),
                 "--block", "6000", "--json", str(tmp_path / "b.json")]) == 0
    audio = read_vrs_audio(open_vrs(aea_vrs), aea_vrs)
    codec = load_codec(audio_ckpt)
    encoder = codec.audio_encoder(48000)
    blocks = [audio[start:start + 6000] for start in range(0, len(audio), 6000)]
    assert [it["block"] for it in json.loads((tmp_path / "b.json").read_text())["items"]] == \
        list(range(len(blocks)))
    written = [(tmp_path / "blocks" / f"recording-{k:05d}.dnc").read_bytes()
               for k in range(len(blocks))]
    assert written == [encoder.encode(block) for block in blocks]
    assert written != [codec.compress(block, 48000) for block in blocks]   # each block anew
    assert main(["encode", str(aea_vrs), "-c", str(audio_ckpt), "-o",
                 str(tmp_path / "all.dnc")]) == 0     # no --block: one container
    assert unpack((tmp_path / "all.dnc").read_bytes()).shape == audio.shape


def test_decode_names_the_checkpoint_it_needs(vr_ckpt, tmp_path, capsys):
    Image.fromarray(sample_image(32, 32)).save(tmp_path / "in.png")
    assert main(["encode", "-c", str(vr_ckpt), str(tmp_path / "in.png"), "-o",
                 str(tmp_path / "x.dnc")]) == 0
    needed = unpack((tmp_path / "x.dnc").read_bytes()).codec_hash.hex()
    assert len(needed) == 16
    retrained = tiny_checkpoint(tmp_path / "retrained.pt",
                                {**TINY_IMAGE, "name": "tiny-image-vr", "rate": VARIABLE_RATE},
                                seed=1)
    capsys.readouterr()
    for flags in ([], ["-c", str(retrained)]):     # not installed; another checkpoint's hash
        assert main(["decode", str(tmp_path / "x.dnc"), "-o", str(tmp_path / "o.png"),
                     *flags]) == 2
        err = capsys.readouterr().err
        assert _one_error_line(err), err
        assert f"tiny-image-vr@{needed}" in err and "-c FILE" in err, err
    assert not (tmp_path / "o.png").exists()


def test_files_of_an_earlier_default_decode_without_naming_its_checkpoint(tmp_path, capsys):
    # tests/data/v1/aria-image.dnc names codec aria-image with the first default's hash; the
    # installed aria-image is a newer one, aria-image-v1.pt holds that one: found by name+hash
    v1 = ROOT / "tests" / "data" / "v1"
    container = unpack((v1 / "aria-image.dnc").read_bytes())
    assert container.codec_name == "aria-image"
    assert main(["decode", str(v1 / "aria-image.dnc"), "-o", str(tmp_path / "o.png")]) == 0, \
        capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")),
                          np.asarray(Image.open(v1 / "aria-image-decoded.png")))


def test_bad_flag_combinations_give_one_error_line(ckpts, vr_ckpt, tmp_path, capsys):
    image_ckpt, audio_ckpt = ckpts
    Image.fromarray(sample_image(32, 32)).save(tmp_path / "a.png")
    Image.fromarray(sample_image(32, 32)).save(tmp_path / "b.png")
    png, out = str(tmp_path / "a.png"), str(tmp_path / "x.dnc")
    encode = ["encode", "-c", str(vr_ckpt)]
    for argv in ([*encode, png, "-o", out, "--ratio", "10", "--bytes", "100"],
                 [*encode, png, "-o", out, "--bitrate", "64"],
                 [*encode, png, "-o", out, "--ratio", "fast"],
                 [*encode, png, "-o", out, "--ratio", "0"],
                 [*encode, png, "-o", out, "--level", "16"],
                 [*encode, png, "-o", out, "--bytes", "1.5"],
                 [*encode, png, "-o", out, "--frames", "0:2"],
                 [*encode, png, "-o", "-", "--json", "-"],
                 [*encode, png, str(tmp_path / "b.png"), "-o", "-"],
                 [*encode, png, str(tmp_path / "b.png"), "-o", png],
                 [*encode, str(tmp_path / "*.jpg"), "-o", str(tmp_path / "o")],
                 [*encode, "-", png, "-o", str(tmp_path / "o")],
                 ["encode", "-c", str(audio_ckpt), png, "-o", out, "--block", "4096"],
                 ["extract", str(tmp_path / "missing.vrs"), "--images", str(tmp_path / "o")],
                 ["extract", str(tmp_path / "missing.vrs")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert _one_error_line(err), (argv, err)
    assert not (tmp_path / "x.dnc").exists() and not (tmp_path / "o").exists()
    (tmp_path / "bad.vrs").write_bytes(b"not a recording" * 100)
    result = dance("extract", tmp_path / "bad.vrs", "--images", tmp_path / "o")
    assert result.returncode == 2 and _one_error_line(result.stderr), result.stderr


def test_decode_a_stream_block_needs_its_checkpoint(ckpts, tmp_path, capsys):
    """A stream block (bitstream v3, what the encode node sends) names no codec: -c decodes it,
    without -c one error line says so."""
    from .dance_testing import sample_audio
    _, audio_ckpt = ckpts
    codec = load_codec(audio_ckpt)
    block = tmp_path / "block.dnc"
    block.write_bytes(codec.audio_encoder(48000, blocks=True).encode(sample_audio(4096)))
    assert main(["decode", str(block), "-o", str(tmp_path / "a.wav")]) == 2
    assert _one_error_line(capsys.readouterr().err)
    assert main(["decode", str(block), "-c", str(audio_ckpt), "-o", str(tmp_path / "b.wav")]) == 0
    decoded, rate = sf.read(tmp_path / "b.wav", dtype="int32")
    assert decoded.shape == (4096, 7) and rate == 48000


# -- hostile input: one error line, exit 2, no traceback ----------------------------------------
def _crafted(container, **fields) -> bytes:
    import dataclasses
    return dataclasses.replace(container, **fields).pack()


def test_crafted_header_fields_give_one_error_line(ckpts, tmp_path, capsys):
    """Each field a decoder trusts (dtype, rate, shape) set to what no encoder writes, with a
    valid CRC: refused with one line naming the field, before any model runs."""
    from .dance_testing import sample_audio
    image_ckpt, audio_ckpt = ckpts
    sf.write(tmp_path / "in.wav", sample_audio(3000), 48000, subtype="PCM_32")
    Image.fromarray(sample_image(40, 40)).save(tmp_path / "in.png")
    assert main(["encode", "-c", str(audio_ckpt), str(tmp_path / "in.wav"),
                 "-o", str(tmp_path / "a.dnc")]) == 0
    assert main(["encode", "-c", str(image_ckpt), str(tmp_path / "in.png"),
                 "-o", str(tmp_path / "i.dnc")]) == 0
    audio, image = (unpack((tmp_path / f"{n}.dnc").read_bytes()) for n in "ai")
    cases = {   # name: (data, checkpoint, output suffix, words the error must hold)
        "uint8-audio": (_crafted(audio, dtype="uint8"), audio_ckpt, "wav", "dtype uint8"),
        "int16-audio": (_crafted(audio, dtype="int16"), audio_ckpt, "flac", "dtype int16"),
        "huge-rate": (_crafted(audio, sample_rate=1 << 32), audio_ckpt, "wav", "sample rate"),
        "no-frames": (_crafted(audio, shape=(0, 7)), audio_ckpt, "wav", "no samples"),
        "rank-0": (_crafted(audio, shape=()), audio_ckpt, "wav", "no samples"),
        "1-D": (_crafted(audio, shape=(3000,)), audio_ckpt, "wav", "(3000,)"),
        "float-image": (_crafted(image, dtype="float32"), image_ckpt, "png", "dtype float32"),
        "empty-row": (_crafted(image, shape=(0, 40, 3)), image_ckpt, "png", "no samples"),
        "2-D-image": (_crafted(image, shape=(40, 40)), image_ckpt, "png", "(40, 40)"),
    }
    capsys.readouterr()
    for name, (data, ckpt, suffix, words) in cases.items():
        (tmp_path / f"{name}.dnc").write_bytes(data)
        assert main(["decode", str(tmp_path / f"{name}.dnc"), "-c", str(ckpt),
                     "-o", str(tmp_path / f"out.{suffix}")]) == 2, name
        err = capsys.readouterr().err
        assert _one_error_line(err) and words in err and f"{name}.dnc" in err, (name, err)
    # int64 is an audio dtype the encoder takes: its stream decodes to a 32-bit WAV
    (tmp_path / "int64.dnc").write_bytes(_crafted(audio, dtype="int64"))
    assert main(["decode", str(tmp_path / "int64.dnc"), "-c", str(audio_ckpt),
                 "-o", str(tmp_path / "int64.wav")]) == 0
    assert sf.info(tmp_path / "int64.wav").subtype == "PCM_32"


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG that declares width×height RGB pixels but holds almost none of them."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_decompression_bomb_and_empty_audio_are_refused(ckpts, tmp_path, capsys):
    image_ckpt, audio_ckpt = ckpts
    _png_header_only(tmp_path / "bomb.png", 30000, 30000)   # 2.7 GB of pixels if decoded
    _png_header_only(tmp_path / "big.png", 9000, 9000)      # under PIL's own bomb limit
    sf.write(tmp_path / "empty.wav", np.zeros((0, 7), np.int32), 48000, subtype="PCM_32")
    result = dance("encode", "-c", image_ckpt, tmp_path / "bomb.png", "-o", tmp_path / "o.dnc")
    assert result.returncode == 2 and _one_error_line(result.stderr), result.stderr
    assert "900000000 pixels" in result.stderr and "Traceback" not in result.stderr
    for argv, words in ((["-c", str(image_ckpt), str(tmp_path / "big.png")], "9000×9000"),
                        (["-c", str(audio_ckpt), str(tmp_path / "empty.wav")], "empty")):
        assert main(["encode", *argv, "-o", str(tmp_path / "o.dnc")]) == 2
        err = capsys.readouterr().err
        assert _one_error_line(err) and words in err, err
    assert not (tmp_path / "o.dnc").exists()


def _hostile_checkpoint(path, base: Path, widths: list[int]) -> None:
    """`base` with its config's encoder widths replaced and the hash recomputed: it verifies,
    and building its model would allocate widths² × kernel² floats."""
    import torch

    from dance.zoo import checkpoint_hash
    ckpt = torch.load(base, weights_only=True)
    ckpt["config"] = {**ckpt["config"], "encoder": {**ckpt["config"]["encoder"],
                                                    "widths": widths}}
    ckpt["hash"] = checkpoint_hash(ckpt["config"], ckpt["state_dict"], ckpt["entropy"])
    torch.save(ckpt, path)


def test_inspect_refuses_a_hostile_config_before_allocating(ckpts, tmp_path, capsys):
    image_ckpt, _ = ckpts
    _hostile_checkpoint(tmp_path / "hostile.pt", image_ckpt, [300000, 8, 16])  # ~9 TB
    config = {**TINY_IMAGE, "encoder": {**TINY_IMAGE["encoder"], "widths": [300000, 8, 16]}}
    (tmp_path / "hostile.yaml").write_text(json.dumps(config))
    capsys.readouterr()
    for source in ("hostile.pt", "hostile.yaml"):
        assert main(["inspect", str(tmp_path / source)]) == 2, source
        err = capsys.readouterr().err
        assert _one_error_line(err) and "refusing to build it" in err, err
    result = dance("info", tmp_path / "hostile.pt")      # describes it without building it
    assert result.returncode == 0 and "network_elements" in result.stdout, result.stderr


def test_inspect_on_other_file_kinds_says_what_they_are(ckpts, tmp_path, capsys):
    from pipeline.recordfile import RecordWriter
    image_ckpt, _ = ckpts
    Image.fromarray(sample_image(32, 32)).save(tmp_path / "in.png")
    assert main(["encode", "-c", str(image_ckpt), str(tmp_path / "in.png"),
                 "-o", str(tmp_path / "x.dnc")]) == 0
    RecordWriter(tmp_path / "x.rec").close()
    capsys.readouterr()
    for name, words in (("x.dnc", ".dnc container"), ("x.rec", "recording"),
                        ("in.png", "not a checkpoint")):
        assert main(["inspect", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert _one_error_line(err) and words in err and "weights_only" not in err, err
    result = dance("encode", "-c", tmp_path / "x.dnc", tmp_path / "in.png", "-o", tmp_path / "o")
    assert result.returncode == 2 and _one_error_line(result.stderr), result.stderr
    assert "weights_only" not in result.stderr and "Traceback" not in result.stderr


def test_inspect_on_a_vrs_recording_says_what_it_is(aea_vrs, capsys):
    assert main(["inspect", str(aea_vrs)]) == 2
    err = capsys.readouterr().err
    assert _one_error_line(err) and "VRS recording" in err and "dance info" in err, err
