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
            assert row["encode_mp_per_s"] > 0
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


# -- --curve: RD curves ------------------------------------------------------------------------
VARIABLE_RATE = {"levels": 8, "step_min": 0.05, "step_max": 2.0}
CURVE = (160, 200, 260)  # the tiny codec spans ~150-310:1 on 192×256 frames


@pytest.fixture(scope="module")
def vr_tiny(tmp_path_factory):
    """A tiny random codec with 8 operating points, labelled `vr/tiny`."""
    folder = tmp_path_factory.mktemp("eval_image_curve") / "vr"
    folder.mkdir()
    return tiny_checkpoint(folder / "tiny.pt",
                           {**TINY_IMAGE, "name": "tiny-image-vr", "rate": VARIABLE_RATE})


def test_curve_on_png_frames(tmp_path, vr_tiny):
    from evaluation.image_curve import CURVE_BASELINES, TOLERANCE

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(sample_image(192, 256, seed=i)).save(folder / f"f{i}.png")
    report_path, plot = tmp_path / "curve.json", tmp_path / "curve.png"
    result = dance("eval", "image", "--codec", vr_tiny, "--data", folder,
                   "--curve", ",".join(map(str, CURVE)), "--report", report_path, "--plot", plot)
    assert result.returncode == 0, result.stderr
    assert "RR+AVIF @ vr/tiny" in result.stdout and "BD-rate" in result.stdout
    with Image.open(plot) as picture:
        assert picture.format == "PNG" and picture.width > 600
    report = json.loads(report_path.read_text())
    assert report["frames"] == 2 and report["curve"] == list(CURVE)
    names = ["DANCE vr/tiny", *(f"{name} @ vr/tiny" for name, _ in CURVE_BASELINES)]
    rows = {(m["method"], m["target_ratio"]): m for m in report["methods"]}
    assert list(rows) == [(name, ratio) for ratio in CURVE for name in names]  # every pair
    per_frame = {}
    for record in report["per_frame"]:
        per_frame.setdefault((record["method"], record["target_ratio"]), []).append(record)
    for ratio in CURVE:
        ours = per_frame[("DANCE vr/tiny", ratio)]
        assert [f["frame"] for f in ours] == ["f0.png", "f1.png"]
        for frame in ours:
            error = frame["bytes"] / (frame["raw_bytes"] / ratio) - 1
            assert frame["target_error"] == pytest.approx(error)
            assert frame["off_target"] == (abs(error) > TOLERANCE)  # within, or marked
            assert 0 <= frame["level"] < VARIABLE_RATE["levels"]
        codec_row = rows[("DANCE vr/tiny", ratio)]
        assert codec_row["off_target"] == sum(f["off_target"] for f in ours)
        assert codec_row["frames"] == 2 and codec_row["mean_bytes"] == pytest.approx(
            np.mean([f["bytes"] for f in ours]))
        best = [max(f["psnr_db"] for f in (per_frame[(n, ratio)][i] for n in names[1:])
                    if f["bytes"]) for i in range(2)]
        assert codec_row["codec_minus_best_baseline_psnr_db"] == pytest.approx(
            np.mean([f["psnr_db"] - b for f, b in zip(ours, best)]))
        for name in names[1:]:
            theirs, row = per_frame[(name, ratio)], rows[(name, ratio)]
            assert row["frames"] + row["no_fit"] == 2
            assert row["no_fit"] == sum(f["bytes"] is None for f in theirs)
            for mine, frame in zip(theirs, ours):
                assert mine["budget"] == frame["bytes"]
                assert mine["bytes"] is None or mine["bytes"] <= frame["bytes"]  # never over
            fitted = [(m, f) for m, f in zip(theirs, ours) if m["bytes"]]
            if fitted:
                assert row["codec_minus_this_psnr_db"] == pytest.approx(
                    np.mean([f["psnr_db"] - m["psnr_db"] for m, f in fitted]))
                assert 0 < row["ms_ssim"] <= 1 and np.isfinite(row["psnr_db"])
    assert [(r["codec"], r["baseline"]) for r in report["bd_rate"]] == \
        [("vr/tiny", name) for name, _ in CURVE_BASELINES]
    for row in report["bd_rate"]:
        for key in ("psnr", "ms_ssim_db"):
            value, missing = row[f"bd_rate_{key}_percent"], row[f"bd_rate_{key}_missing"]
            assert (value is None) != (missing is None)  # a number, or why there is none
            assert value is None or np.isfinite(value)


def test_bd_rate_table_on_known_curves():
    from evaluation.image_curve import bd_rate_table

    def row(method, family, ratio, mean_bytes, psnr_db, no_fit=0):
        ms_ssim_db = psnr_db / 3
        return {"method": method, "family": family, "codec": "c", "target_ratio": ratio,
                "frames": 2 - no_fit, "no_fit": no_fit, "mean_bytes": mean_bytes,
                "psnr_db": psnr_db, "ms_ssim_db": ms_ssim_db}

    summaries = []
    for ratio, size, quality in ((100, 4000, 36.0), (200, 2000, 33.0), (400, 1000, 30.0)):
        summaries += [row("DANCE c", "dance", ratio, size / 2, quality),      # half the bytes
                      row("RR+JPEG @ c", "rr_jpeg", ratio, size, quality),
                      row("RR+WebP @ c", "rr_webp", ratio, size, quality, no_fit=ratio // 400),
                      row("RR+AVIF @ c", "rr_avif", ratio, size, quality, no_fit=ratio // 200)]
    rows = {r["baseline"]: r for r in bd_rate_table(summaries, ["c"])}
    for name in ("RR+JPEG", "RR+WebP"):
        assert rows[name]["bd_rate_psnr_percent"] == pytest.approx(-50, abs=0.01)
        assert rows[name]["bd_rate_ms_ssim_db_percent"] == pytest.approx(-50, abs=0.01)
    assert rows["RR+WebP"]["points"] == {"codec": 3, "baseline": 2}  # a no-fit point is dropped
    assert rows["RR+AVIF"]["points"]["baseline"] == 1
    assert rows["RR+AVIF"]["bd_rate_psnr_percent"] is None     # one point is no curve
    assert rows["RR+AVIF"]["bd_rate_psnr_missing"] == "fewer than 2 points"
    assert rows["RR+JPEG"]["bd_rate_psnr_missing"] is None
    apart = [dict(s, psnr_db=s["psnr_db"] + (20 if s["family"] == "dance" else 0))
             for s in summaries]                                  # qualities do not overlap
    jpeg = bd_rate_table(apart, ["c"])[0]
    assert jpeg["bd_rate_psnr_percent"] is None
    assert jpeg["bd_rate_psnr_missing"] == "no common quality range"


@pytest.mark.parametrize("curve, message", [
    ("abc", "--curve: 'abc' is not a number"),
    ("200,,500", "--curve: '' is not a number"),
    ("", "--curve: give compression ratios separated by commas, e.g. --curve 200,500,1200"),
    ("1", "--curve: '1' is not a compression ratio above 1"),
    ("-5,200", "--curve: '-5' is not a compression ratio above 1"),
    ("200,inf", "--curve: 'inf' is not a compression ratio above 1"),
    ("nan", "--curve: 'nan' is not a compression ratio above 1"),
    ("200,500,200", "--curve: ratio 200 is given twice"),
    (",".join(str(100 + 10 * i) for i in range(17)), "--curve: 17 ratios, at most 16"),
])
def test_bad_curve_is_one_line(tmp_path, vr_tiny, capsys, curve, message):
    Image.fromarray(sample_image(64, 64)).save(tmp_path / "f.png")
    assert main(["eval", "image", "--codec", str(vr_tiny), "--data", str(tmp_path / "f.png"),
                 f"--curve={curve}", "--plot", str(tmp_path / "c.png")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("extra, message", [
    (["--ratio", "100"], "--curve cannot be combined with --ratio: the curve sets the targets"),
    (["--level", "0"], "--curve cannot be combined with --level: the curve sets the targets"),
    (["--clip", TINY_MODEL], "--curve cannot be combined with --clip: label retention is in "
                             "the one-target table (drop --curve)"),
])
def test_curve_with_a_single_target_option_is_one_line(tmp_path, vr_tiny, capsys, extra,
                                                       message):
    Image.fromarray(sample_image(64, 64)).save(tmp_path / "f.png")
    assert main(["eval", "image", "--codec", str(vr_tiny), "--data", str(tmp_path / "f.png"),
                 "--curve", "200,400", *extra, "--plot", str(tmp_path / "c.png")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_curve_needs_a_variable_rate_codec(tmp_path, tiny):
    Image.fromarray(sample_image(64, 64)).save(tmp_path / "f.png")
    result = dance("eval", "image", "--codec", tiny, "--data", tmp_path / "f.png",
                   "--curve", "200,400", "--plot", tmp_path / "c.png")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: --codec {tiny} (tiny-image@")
    assert "single operating point" in errors[0] and "variable-rate" in errors[0]
    assert not (tmp_path / "c.png").exists()
