"""`dance eval audio` end to end: simulated WAV clips and the sample VRS, real codecs."""
from __future__ import annotations

import json

import pytest

from dance.simulate import write_folder
from pipeline.cli import main

from .conftest import dance
from .dance_testing import TINY_AUDIO, TINY_IMAGE, tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_audio(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-audio.pt", TINY_AUDIO)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    write_folder(folder, 2, 1.5, base_seed=7)
    return folder


def test_table_on_a_folder_of_wavs(tmp_path, tiny_audio, clips):
    report, plot = tmp_path / "audio.json", tmp_path / "audio.png"
    run = dance("eval", "audio", "--codec", tiny_audio, "--data", clips, "--opus", "6000",
                "--report", report, "--plot", plot, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "dance eval audio: 2 clips" in run.stdout and "Opus 6k" in run.stdout
    methods = {m["method"]: m for m in json.loads(report.read_text())["methods"]}
    assert set(methods) == {"MP3 48k", "Opus 6k", "tiny-audio"}
    assert 28 < methods["MP3 48k"]["compression_ratio"] < 34       # the paper's ~31:1
    assert methods["Opus 6k"]["compression_ratio"] > 150
    for m in methods.values():
        assert m["clips"] == 2 and m["frames"] == 4                  # 1.5 s: 2 frames a clip
        assert m["raw_bytes"] == 2 * int(1.5 * 48000) * 7 * 4
    # MP3 at 48 kb/s/ch keeps the spatial image far better than Opus at 6 kb/s/ch
    assert methods["MP3 48k"]["ssdr_db"] > methods["Opus 6k"]["ssdr_db"] + 3
    assert methods["MP3 48k"]["srdr_db"] > methods["Opus 6k"]["srdr_db"] + 3
    assert methods["tiny-audio"]["encoder_params"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_on_the_sample_recording(tmp_path, tiny_audio, aea_vrs):
    report = tmp_path / "vrs.json"
    assert main(["eval", "audio", "--codec", str(tiny_audio), "--data", str(aea_vrs),
                 "--mp3", "", "--opus", "6000", "--report", str(report),
                 "--plot", str(tmp_path / "vrs.png")]) == 0
    result = json.loads(report.read_text())
    assert [m["method"] for m in result["methods"]] == ["Opus 6k", "tiny-audio"]
    for m in result["methods"]:
        # 4 records × 4096 samples: shorter than a 1 s frame, scored as one frame
        assert m["frames"] == 1 and m["raw_bytes"] == 16384 * 7 * 4
        assert m["ssdr_db"] is not None and m["srdr_db"] is not None


def test_bad_inputs_give_one_error_line(tmp_path, clips, capsys):
    assert main(["eval", "audio", "--data", str(tmp_path / "nothing"),
                 "--plot", str(tmp_path / "p.png")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {tmp_path / 'nothing'}: no such file or folder"]
    image = tiny_checkpoint(tmp_path / "img.pt", TINY_IMAGE)
    assert main(["eval", "audio", "--codec", str(image), "--data", str(clips)]) == 2
    assert "is an image codec" in capsys.readouterr().err
    assert main(["eval", "audio", "--data", str(clips), "--opus", "6k"]) == 2
    assert "--opus takes bit rates" in capsys.readouterr().err


def test_stream_blocks_and_direction_columns(tmp_path, clips):
    """--block codes DANCE as the runtime streams it (v3 blocks, reservoir) and every method gets
    the delay agreement, the per-clip ratio range and the worst clip's SSDR."""
    from .test_stream_blocks import VR_AUDIO
    codec = tiny_checkpoint(tmp_path / "vr.pt", VR_AUDIO)
    report = tmp_path / "blocks.json"
    assert main(["eval", "audio", "--codec", str(codec), "--data", str(clips), "--mp3", "",
                 "--opus", "6000", "--block", "4096", "--ratio", "300", "--report", str(report),
                 "--plot", str(tmp_path / "b.png")]) == 0
    result = json.loads(report.read_text())
    assert result["block"] == 4096
    methods = {m["method"]: m for m in result["methods"]}
    for m in methods.values():
        assert 0 <= m["delay_agreement"] <= 1 and m["delay_windows"] > 0
        assert m["clip_ratio_min"] <= m["compression_ratio"] <= m["clip_ratio_max"]
        assert m["worst_clip_ssdr_db"] <= m["ssdr_db"] + 1e-9   # equal clips: min median <= median
    for clip in result["per_clip"]["tiny-audio-vr"]:
        assert abs(clip["raw_bytes"] / clip["bytes"] / 300 - 1) < 0.05
    assert main(["eval", "audio", "--data", str(clips), "--block", "-5"]) == 2
