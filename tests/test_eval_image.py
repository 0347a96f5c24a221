"""`dance eval image` end to end: real CLI, tiny random-init codecs, the tiny random open_clip."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main
from perception.clip import TINY_MODEL

from .conftest import dance
from .dance_testing import TINY_IMAGE, sample_image, tiny_checkpoint

CLIP = ("--clip", TINY_MODEL, "--clip-weights", "random")


def _checkpoint(folder, seed):
    """A tiny random codec labelled `<folder name>/tiny` in the table."""
    folder.mkdir()
    return tiny_checkpoint(folder / "tiny.pt", TINY_IMAGE, seed=seed)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("eval_image") / "a", seed=0)


def _outputs(tmp_path):
    return {"report": tmp_path / "r.json", "plot": tmp_path / "q.png",
            "figure": tmp_path / "fig2.png"}


def _args(out):
    return ["--report", out["report"], "--plot", out["plot"], "--figure", out["figure"]]


def _check_pngs(out, figure_min_width):
    for key in ("plot", "figure"):
        with Image.open(out[key]) as picture:
            assert picture.format == "PNG" and picture.width > 600
    with Image.open(out["figure"]) as picture:
        assert picture.width >= figure_min_width


def test_png_folder_two_codecs_with_clip(tmp_path, tiny):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(sample_image(180, 240, seed=i)).save(folder / f"f{i}.png")
    other = _checkpoint(tmp_path / "b", seed=1)
    out = _outputs(tmp_path)
    result = dance("eval", "image", "--codec", tiny, "--codec", other, "--data", folder, *CLIP,
                   *_args(out))
    assert result.returncode == 0, result.stderr
    assert "RR+JPEG @ a/tiny" in result.stdout and "DANCE b/tiny" in result.stdout
    _check_pngs(out, 1000)
    report = json.loads(out["report"].read_text())
    assert report["frames"] == 3 and report["clip"].startswith(TINY_MODEL)
    rows = {m["method"]: m for m in report["methods"]}
    assert list(rows) == [f"{kind}{codec}" for codec in ("a/tiny", "b/tiny")
                          for kind in ("DANCE ", "RR+JPEG @ ", "RR+WebP @ ")]
    for codec in ("a/tiny", "b/tiny"):
        ours = rows[f"DANCE {codec}"]
        assert ours["encoder_params"] > 0 and ours["encoder_macs_per_pixel"] > 0
        per_frame = report["per_frame"]
        for name in ("RR+JPEG", "RR+WebP"):
            row = rows[f"{name} @ {codec}"]
            assert row["frames"] == 3 and row["compression_ratio"] >= ours["compression_ratio"]
            for mine, theirs in zip(per_frame[f"{name} @ {codec}"], per_frame[f"DANCE {codec}"]):
                assert mine["bytes"] <= theirs["bytes"]  # the codec's size is the budget
        for row in (rows[f"DANCE {codec}"], rows[f"RR+WebP @ {codec}"]):
            assert 0 < row["ms_ssim"] <= 1 and np.isfinite(row["psnr_db"])
            retention = row["label_retention"]
            assert retention["total"] == 3 and 0 <= retention["rate"] <= 1
            assert retention["ci_low"] <= retention["rate"] <= retention["ci_high"]


def test_sample_vrs(tmp_path, tiny, aea_vrs):
    out = _outputs(tmp_path)
    result = dance("eval", "image", "--codec", tiny, "--data", aea_vrs, "--max-frames", "1",
                   *CLIP, "--min-logit", "-1000", *_args(out))
    assert result.returncode == 0, result.stderr
    _check_pngs(out, 1000)
    report = json.loads(out["report"].read_text())
    assert report["frames"] == 1 and report["min_logit"] == -1000
    frames = report["per_frame"]["RR+JPEG @ a/tiny"]
    assert frames[0]["frame"] == "recording.vrs#0" and frames[0]["raw_bytes"] == 1408 * 1408 * 3
    assert frames[0]["scale"] > 1
    for row in report["methods"]:
        assert row["label_retention"]["total"] == 1
        assert 0 < row["ms_ssim"] <= 1


def test_missing_clip_weights_is_one_line(tmp_path, tiny):
    Image.fromarray(sample_image(64, 64)).save(tmp_path / "f.png")
    result = dance("eval", "image", "--codec", tiny, "--data", tmp_path / "f.png",
                   "--clip", TINY_MODEL, "--clip-weights", tmp_path / "nowhere.safetensors",
                   *_args(_outputs(tmp_path)))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: --clip-weights: ")
    assert "nowhere.safetensors not found" in errors[0]
    assert not (tmp_path / "q.png").exists()


@pytest.mark.parametrize("extra, message", [
    (["--data", "/no/such/folder"], "/no/such/folder: no such file or folder"),
    (["--data", "{png}", "--clip-weights", "random"], "--clip-weights needs --clip MODEL"),
    (["--data", "{png}", "--figure-frame", "3"], "--figure-frame 3: there are 1 frames"),
])
def test_bad_arguments_are_one_line(tmp_path, tiny, capsys, extra, message):
    Image.fromarray(sample_image(64, 64)).save(tmp_path / "f.png")
    extra = [str(a).format(png=tmp_path / "f.png") for a in extra]
    assert main(["eval", "image", "--codec", str(tiny), *extra,
                 *map(str, _args(_outputs(tmp_path)))]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
