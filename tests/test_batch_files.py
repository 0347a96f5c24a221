"""`dance encode --index` / `dance extract --index`: one task per recording of a dataset index,
through the real CLI (index made by `dance dataset index`, containers read back by `dance
decode`), the same summary whatever the worker count, and a rerun that resumes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from tests.conftest import AEA_VRS, dance

IMAGE_CODEC = "aria-image-v1"     # the quickest image codec of dance/checkpoints
AUDIO_CODEC = "aria-audio-fast"


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    """An index of two copies of the sample recording (one in a subfolder) and a cut one."""
    if not AEA_VRS.exists():
        pytest.skip(f"sample AEA recording not found at {AEA_VRS} (needs ../shared beside the repo)")
    root = tmp_path_factory.mktemp("recordings")
    (root / "day2").mkdir()
    shutil.copy(AEA_VRS, root / "walk.vrs")
    shutil.copy(AEA_VRS, root / "day2" / "walk.vrs")
    (root / "cut.vrs").write_bytes(AEA_VRS.read_bytes()[:5000])
    out = root.parent / f"{root.name}.parquet"
    result = dance("dataset", "index", root, "-o", out)
    assert result.returncode == 0, result.stderr
    return out


def _encode(index: Path, out: Path, *flags) -> dict:
    result = dance("encode", "--index", index, "-o", out, "--json", out.parent / f"{out.name}.json",
                   *flags)
    assert result.returncode == 0, result.stderr
    assert "1 corrupt recordings in the index left out" in result.stderr
    return {"stdout": result.stdout, "stderr": result.stderr,
            "json": json.loads((out.parent / f"{out.name}.json").read_text())}


def _relative_outputs(document: dict, out: Path) -> dict:
    items = [{**item, "output": str(Path(item["output"]).relative_to(out.resolve()))}
             for item in document["items"]]
    return {**document, "items": items}


def test_encode_index_same_summary_for_any_worker_count_and_resumes(index, tmp_path):
    flags = ("-c", IMAGE_CODEC, "--frames", "0:2")
    two = _encode(index, tmp_path / "two", *flags, "--workers", "2", "--state", tmp_path / "s2")
    one = _encode(index, tmp_path / "one", *flags, "--workers", "1", "--state", tmp_path / "s1")

    expected = {f"{rid}/walk-{i:05d}.dnc" for rid in ("walk", "day2/walk") for i in (0, 1)}
    written = {p.relative_to(tmp_path / "two").as_posix() for p in (tmp_path / "two").rglob("*")
               if p.is_file()}
    assert written == expected                          # no .part left, nothing for cut.vrs
    assert _relative_outputs(two["json"], tmp_path / "two") == \
        _relative_outputs(one["json"], tmp_path / "one")
    items = two["json"]["items"]
    assert [(i["recording"], i["frame"]) for i in items] == \
        [("day2/walk", 0), ("day2/walk", 1), ("walk", 0), ("walk", 1)]     # index order
    assert two["json"]["totals"]["items"] == 4
    assert two["json"]["totals"]["bytes"] == sum(i["bytes"] for i in items) == \
        sum((tmp_path / "two" / f).stat().st_size for f in expected)
    assert "2 recordings, 4 containers:" in two["stdout"]

    decoded = dance("decode", tmp_path / "two" / "day2" / "walk", "-o", tmp_path / "png")
    assert decoded.returncode == 0, decoded.stderr
    with Image.open(tmp_path / "png" / "walk-00001.png") as image:
        assert image.size == (1408, 1408)

    again = _encode(index, tmp_path / "two", *flags, "--workers", "2", "--state", tmp_path / "s2")
    assert "resuming: 2 of 2 tasks already done" in again["stderr"]
    assert "0 tasks run, 2 reused" in again["stderr"]
    assert again["json"] == two["json"]


def test_encode_index_with_an_audio_codec_writes_the_blocks_of_each_recording(index, tmp_path):
    run = _encode(index, tmp_path / "mics", "-c", AUDIO_CODEC, "--block", "8192", "--workers", "1",
                  "--state", tmp_path / "state")
    items = run["json"]["items"]
    assert [(i["recording"], i["block"]) for i in items] == \
        [("day2/walk", 0), ("day2/walk", 1), ("walk", 0), ("walk", 1)]
    decoded = dance("decode", tmp_path / "mics" / "walk", "-o", tmp_path / "wav", "-c", AUDIO_CODEC)
    assert decoded.returncode == 0, decoded.stderr
    blocks = [sf.read(tmp_path / "wav" / f"walk-{k:05d}.wav", dtype="int32")[0] for k in (0, 1)]
    assert [b.shape for b in blocks] == [(8192, 7), (8192, 7)]


def test_extract_index_writes_frames_and_wav_per_recording(index, tmp_path):
    result = dance("extract", "--index", index, "--images", tmp_path / "frames", "--audio",
                   tmp_path / "mics", "--frames", "1:3", "--workers", "1", "--state", tmp_path / "s")
    assert result.returncode == 0, result.stderr
    assert "2 recordings: 4 RGB frames" in result.stdout
    for rid in ("walk", "day2/walk"):
        frames = sorted(p.name for p in (tmp_path / "frames" / rid).iterdir())
        assert frames == ["frame-00001.png", "frame-00002.png"]
        audio, rate = sf.read(tmp_path / "mics" / f"{rid}.wav", dtype="int32")
        assert (audio.shape, rate) == ((16384, 7), 48000)
    first = np.asarray(Image.open(tmp_path / "frames" / "walk" / "frame-00001.png"))
    same = np.asarray(Image.open(tmp_path / "frames" / "day2" / "walk" / "frame-00001.png"))
    assert first.shape == (1408, 1408, 3) and np.array_equal(first, same) and first.std() > 0


def test_a_failed_recording_fails_the_job_in_one_line_and_a_rerun_does_only_it(index, tmp_path):
    root = tmp_path / "recordings"
    root.mkdir()
    shutil.copy(AEA_VRS, root / "a.vrs")
    shutil.copy(AEA_VRS, root / "b.vrs")
    own = tmp_path / "own.parquet"
    assert dance("dataset", "index", root, "-o", own).returncode == 0
    (root / "b.vrs").rename(root / "b.moved")
    flags = ("encode", "--index", own, "-c", IMAGE_CODEC, "-o", tmp_path / "out", "--frames", "0:1",
             "--workers", "1", "--state", tmp_path / "state")
    failed = dance(*flags)
    assert failed.returncode == 2
    assert "error: 1 of 2 tasks failed" in failed.stderr and "b.vrs" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert (tmp_path / "out" / "a" / "a-00000.dnc").is_file()
    assert not (tmp_path / "out" / "b").exists() or not any((tmp_path / "out" / "b").iterdir())

    (root / "b.moved").rename(root / "b.vrs")
    rerun = dance(*flags)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming: 1 of 2 tasks already done" in rerun.stderr and "1 tasks run" in rerun.stderr
    assert (tmp_path / "out" / "b" / "b-00000.dnc").is_file()


@pytest.mark.parametrize("case", ["inputs and index", "output is a file", "missing index",
                                  "workers without index", "no workers", "audio file name"])
def test_bad_index_jobs_are_one_line(index, tmp_path, case):
    (tmp_path / "taken").write_text("a file")
    args = {
        "inputs and index": ("encode", AEA_VRS, "--index", index, "-c", IMAGE_CODEC, "-o",
                             tmp_path / "out"),
        "output is a file": ("encode", "--index", index, "-c", IMAGE_CODEC, "-o",
                             tmp_path / "taken"),
        "missing index": ("encode", "--index", tmp_path / "none.parquet", "-c", IMAGE_CODEC, "-o",
                          tmp_path / "out"),
        "workers without index": ("encode", AEA_VRS, "-c", IMAGE_CODEC, "-o", tmp_path / "out",
                                  "--workers", "2"),
        "no workers": ("encode", "--index", index, "-c", IMAGE_CODEC, "-o", tmp_path / "out",
                       "--workers", "0"),
        "audio file name": ("extract", "--index", index, "--audio", tmp_path / "mics.wav"),
    }[case]
    expected = {"inputs and index": "give INPUT or --index, not both",
                "output is a file": f"-o {tmp_path / 'taken'}: a file; with --index give -o FOLDER",
                "missing index": "none.parquet: no such index file",
                "workers without index": "--workers is for --index jobs",
                "no workers": "--workers 0: expected a positive integer",
                "audio file name": "with --index, --audio names a folder"}[case]
    result = dance(*args, "--state", tmp_path / "state")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()
