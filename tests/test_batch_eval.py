"""`dance eval image|audio --index`: the real CLI over an index of three copies of the sample
recording and a truncated one, on one process, two worker processes and a local Ray cluster;
a worker killed mid-job, then the resumed run."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from dance.batch import local_ray_head

from .conftest import AEA_VRS, dance, dance_process

TIMING = {"encode_mp_per_s", "encode_seconds", "seconds", "wall_s"}
IMAGE = ("eval", "image", "--codec", "walloc-image", "--ratio", "150", "--frames", "0:1")
AUDIO = ("eval", "audio", "--codec", "aria-audio-fast")


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    """3 copies of the sample (two folders) and a truncated copy, indexed."""
    if not AEA_VRS.exists():
        pytest.skip(f"sample AEA recording not found at {AEA_VRS} (needs ../shared beside the repo)")
    sample = AEA_VRS.read_bytes()
    root = tmp_path_factory.mktemp("dataset")
    for name in ("a/r1.vrs", "a/r2.vrs", "b/r3.vrs", "b/broken.vrs"):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(sample[:100_000] if "broken" in name else sample)
    out = root / "index.parquet"
    result = dance("dataset", "index", root, "-o", out)
    assert result.returncode == 0 and "3 ok, 1 corrupt" in result.stdout, result.stderr
    return out


def _outputs(folder: Path, name: str, image: bool = True, state: bool = True) -> list:
    return [*(["--state", folder / f"{name}-state"] if state else []),
            "--report", folder / f"{name}.json",
            "--plot", folder / f"{name}.png",
            *(["--figure", folder / f"{name}-fig.png"] if image else [])]


def _results(report: Path) -> dict:
    """The report without its timing fields (they differ run to run)."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in TIMING}
        return [strip(v) for v in value] if isinstance(value, list) else value
    return strip(json.loads(report.read_text()))


def _table_rows(stdout: str) -> list[list[str]]:
    """Cells of the printed table's rows, without the timing column (MP/s)."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in stdout.splitlines()
            if line.startswith("│")]
    return [row[:3] + row[4:] for row in rows]


@pytest.fixture(scope="module")
def reference(index, tmp_path_factory):
    """The image job on one process: (report, stdout)."""
    folder = tmp_path_factory.mktemp("reference")
    result = dance(*IMAGE, "--index", index, "--workers", "1", *_outputs(folder, "one"))
    assert result.returncode == 0, result.stderr
    assert f"{index}: 3 recordings; left out: 1 corrupt" in result.stderr
    assert "3 tasks run, 0 reused, 0 failed" in result.stderr
    return _results(folder / "one.json"), result.stdout


def test_index_matches_data_and_names_frames(reference, aea_vrs, tmp_path):
    """Three copies of frame 0 through the tasks: the table of frame 0 without --index, with
    three times the bytes and frames."""
    report, stdout = reference
    assert report["frames"] == 3 and report["index"].endswith("index.parquet")
    frames = report["per_frame"]["WaLLoC walloc-image"]
    assert [f["frame"] for f in frames] == ["a/r1#0", "a/r2#0", "b/r3#0"]
    result = dance(*IMAGE[:-2], "--data", aea_vrs, "--max-frames", "1",
                   *_outputs(tmp_path, "data", state=False))
    assert result.returncode == 0, result.stderr
    single = {m["method"]: m for m in _results(tmp_path / "data.json")["methods"]}
    for method in report["methods"]:
        alone = single[method["method"]]
        assert method["bytes"] == 3 * alone["bytes"] and method["frames"] == 3
        assert method["psnr_db"] == pytest.approx(alone["psnr_db"], abs=1e-4)
    strip_frames = [row[:-1] for row in _table_rows(stdout)]
    assert strip_frames == [row[:-1] for row in _table_rows(result.stdout)] and strip_frames


def test_two_workers_and_ray_give_the_same_results(index, reference, tmp_path):
    result = dance(*IMAGE, "--index", index, "--workers", "2", *_outputs(tmp_path, "two"))
    assert result.returncode == 0, result.stderr
    assert _results(tmp_path / "two.json") == reference[0]
    assert _table_rows(result.stdout) == _table_rows(reference[1])
    pytest.importorskip("ray", reason="--ray needs the ray package (pip install 'dance[scale]')")
    with local_ray_head() as (address, env):
        result = dance(*IMAGE, "--index", index, "--ray", address, *_outputs(tmp_path, "ray"),
                       env=env)
    assert result.returncode == 0, result.stderr
    assert "3 tasks run, 0 reused, 0 failed" in result.stderr
    assert _results(tmp_path / "ray.json") == reference[0]


def _worker_children(pid: int) -> list[int]:
    """The spawned pool workers among a process's children (not multiprocessing's tracker)."""
    children = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in listing.read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in command:
                children.append(int(child))
    return children


def test_killed_worker_fails_in_one_line_and_the_rerun_resumes(index, reference, tmp_path):
    command = (*IMAGE, "--index", index, "--workers", "2", *_outputs(tmp_path, "killed"))
    tasks = tmp_path / "killed-state" / "tasks"
    job = dance_process(*command)
    try:
        deadline = time.monotonic() + 150
        while not any(tasks.glob("*.json")) and job.poll() is None:
            assert time.monotonic() < deadline, "no task finished in 150 s"
            time.sleep(0.05)
        workers = _worker_children(job.pid)
        assert len(list(tasks.glob("*.json"))) < 3 and workers, "the job ended before the kill"
        os.kill(workers[0], signal.SIGKILL)
        _, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(tmp_path / "killed-state") in errors[0], stderr
    assert "Traceback" not in stderr
    done = len(list(tasks.glob("*.json")))
    assert 1 <= done < 3
    result = dance(*command)
    assert result.returncode == 0, result.stderr
    assert f"resuming: {done} of 3 tasks already done" in result.stderr
    assert f"{3 - done} tasks run, {done} reused, 0 failed" in result.stderr
    assert _results(tmp_path / "killed.json") == reference[0]
    assert _table_rows(result.stdout) == _table_rows(reference[1])


def test_audio_index_one_and_two_workers_agree(index, tmp_path):
    reports = []
    for workers in ("1", "2"):
        result = dance(*AUDIO, "--index", index, "--workers", workers,
                       *_outputs(tmp_path, f"audio{workers}", image=False))
        assert result.returncode == 0, result.stderr
        assert "3 tasks run, 0 reused, 0 failed" in result.stderr
        reports.append(_results(tmp_path / f"audio{workers}.json"))
    assert reports[0] == reports[1]
    assert [m["clips"] for m in reports[0]["methods"]] == [3] * 5


@pytest.mark.parametrize("kind,args,message", [
    ("image", ["--index", "{index}", "--data", "{vrs}"], "--index and --data are mutually "
                                                          "exclusive"),
    ("image", ["--index", "{missing}"], "{missing}: no such index file"),
    ("audio", ["--index", "{missing}"], "{missing}: no such index file"),
    ("image", [], "give the recordings: --data PATH... or --index INDEX.parquet"),
    ("image", ["--data", "{vrs}", "--workers", "2"], "--workers needs --index INDEX.parquet"),
    ("image", ["--index", "{index}", "--classifier", "mobilenet_v2"],
     "--index does not combine with --classifier yet"),
    ("image", ["--index", "{index}", "--frames", "3"], "--frames 3: expected START:STOP"),
    ("image", ["--index", "{index}", "--max-frames", "3"], "--max-frames counts frames of --data"),
    ("audio", ["--index", "{index}", "--asr"], "--index does not combine with --asr yet"),
])
def test_bad_index_arguments_fail_in_one_line(index, aea_vrs, tmp_path, kind, args, message):
    values = {"index": index, "vrs": aea_vrs, "missing": tmp_path / "none.parquet"}
    codec = "walloc-image" if kind == "image" else "aria-audio-fast"
    result = dance("eval", kind, "--codec", codec, *[a.format(**values) for a in args])
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {message.format(**values)}"), \
        result.stderr
    assert "Traceback" not in result.stderr
