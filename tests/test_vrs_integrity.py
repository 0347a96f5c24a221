"""Damaged VRS files against dance/vrs.py: one clear error line or a counted skip, never a crash.

Each corrupt file is built in tmp_path from the real sample. The replays run in a child process,
since without the checks projectaria-tools segfaults on some of these files: a crash then fails
the test instead of taking pytest down.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dance import data, vrs
from tests.conftest import ROOT, dance

VRS = ROOT.parent / "shared" / "data" / "aea" / "recording.vrs"
pytestmark = pytest.mark.skipif(not VRS.is_file(), reason=f"sample recording {VRS} is absent")
pytest.importorskip("projectaria_tools")

HEADER = struct.Struct("<IIiIdHBBI")  # vrs FileFormat::RecordHeader
DESCRIPTION_OFFSET_AT, FIRST_RECORD = 32, 80
# Replays each file as the worker would and prints one JSON line per file: what came out, the
# node's skipped-record counters and the peak memory, or the error line.
CHILD = r"""
import json, sys
from nodes.aria_vrs import AriaVrsSource
from pipeline.testing import run_source
for path in sys.argv[1:]:
    node = AriaVrsSource(name="vrs", path=path, speed=0.0)
    try:
        ports = [port for port, _ in run_source(node)]
        result = {"image": ports.count("image"), "audio": ports.count("audio"),
                  "skipped": node.counters["skipped_records"]}
    except (ValueError, FileNotFoundError) as exc:
        result = {"error": str(exc)}
    # VmHWM: this process's own peak (ru_maxrss would carry the forking pytest's across exec)
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status")
                   if line.startswith("VmHWM:"))
    result["maxrss_mb"] = peak_kb / 1024
    print(json.dumps(result), flush=True)
"""


def records(blob: bytes, type_id: int) -> list[tuple[int, int]]:
    """(offset, size) of the data records of stream `type_id`-1, in file order."""
    found, offset = [], FIRST_RECORD
    while offset < len(blob):
        size, _, record_type_id, _, _, instance, record_type, _, _ = HEADER.unpack_from(blob, offset)
        if (record_type_id, instance, record_type) == (type_id, 1, 3):
            found.append((offset, size))
        offset += size
    return found


def corrupt(tmp_path: Path, name: str, edit) -> Path:
    blob = bytearray(VRS.read_bytes())
    edit(blob)
    path = tmp_path / f"{name}.vrs"
    path.write_bytes(bytes(blob))
    return path


def replay(*paths: Path) -> list[dict]:
    result = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, f"child died (rc {result.returncode}): {result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(paths)
    return lines


def test_intact_sample_has_no_damage_and_replays_whole():
    assert vrs.scan(VRS).summary() == "" and vrs.scan(VRS).records == 785
    [result] = replay(VRS)
    assert (result["image"], result["audio"], result["skipped"]) == (8, 4, {})


def test_corrupt_description_offset_is_one_error_not_a_segfault(tmp_path):
    wrong = corrupt(tmp_path, "desc", lambda b: struct.pack_into("<q", b, DESCRIPTION_OFFSET_AT, 12345))
    inside = corrupt(tmp_path, "desc-data", lambda b: struct.pack_into(
        "<q", b, DESCRIPTION_OFFSET_AT, records(bytes(b), 214)[0][0]))
    for path, result in zip((wrong, inside), replay(wrong, inside)):
        assert result["error"].startswith(f"{path}: corrupt VRS file: description record offset")


def test_corrupt_description_contents_are_one_error(tmp_path):
    # the stream count of the description record, then the length of a tag name
    huge_count = corrupt(tmp_path, "count", lambda b: struct.pack_into("<I", b, FIRST_RECORD + 32,
                                                                       0xFFFFFFFF))
    long_name = corrupt(tmp_path, "name", lambda b: struct.pack_into(
        "<I", b, FIRST_RECORD + 32 + 4 + 6 + 4, 0x7FFFFFFF))
    for path, result in zip((huge_count, long_name), replay(huge_count, long_name)):
        assert result["error"].startswith(f"{path}: corrupt VRS file: description record at "
                                          f"byte {FIRST_RECORD}")


def test_flipped_bytes_in_data_records_are_skipped_and_counted(tmp_path):
    def frame_header(blob):      # the zstd frame descriptor of the third RGB frame
        blob[records(bytes(blob), 214)[2][0] + 32 + 4] ^= 0x5A

    def audio_tail(blob):        # a byte near the end of the second audio block's zstd data
        offset, size = records(bytes(blob), 231)[1]
        blob[offset + size - 2] ^= 0x5A

    rgb, mic = corrupt(tmp_path, "rgb", frame_header), corrupt(tmp_path, "mic", audio_tail)
    assert vrs.scan(rgb).damaged == {"214-1": (2,)} and vrs.scan(mic).damaged == {"231-1": (1,)}
    got_rgb, got_mic = replay(rgb, mic)
    assert (got_rgb["image"], got_rgb["audio"], got_rgb["skipped"]) == (7, 4, {"214-1": 1})
    assert (got_mic["image"], got_mic["audio"], got_mic["skipped"]) == (8, 3, {"231-1": 1})


def test_skipped_records_reach_the_run_report_and_a_warning_line(tmp_path):
    damaged = corrupt(tmp_path, "rgb", lambda b: b.__setitem__(
        records(bytes(b), 214)[5][0] + 36, b[records(bytes(b), 214)[5][0] + 36] ^ 0x5A))
    graph = tmp_path / "g.yaml"
    graph.write_text("name: replay\nnodes:\n"
                     f"  - {{name: vrs, type: aria_vrs, params: {{path: {damaged}, speed: 0}}}}\n"
                     "  - {name: stats, type: stats}\n"
                     "edges:\n  - vrs.image -> stats.packets\n")
    result = dance("run", graph, "--report", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())["nodes"]
    assert report["vrs"]["skipped_records"] == {"214-1": 1}
    assert report["stats"]["streams"]["camera-rgb"]["packets"] == 7
    assert f"warning: node 'vrs': {damaged}: skipped 1 damaged record(s) (214-1: 1)" in result.stderr
    assert "[INFO]" not in result.stderr and "Traceback" not in result.stderr


def test_huge_uncompressed_size_is_refused_before_any_allocation(tmp_path):
    def claim_4gb(blob):
        struct.pack_into("<I", blob, records(bytes(blob), 214)[1][0] + 28, 0xFFFFFFFF)

    path = corrupt(tmp_path, "huge", claim_4gb)
    [result] = replay(path)
    assert result["error"] == (f"{path}: corrupt VRS file: record at byte "
                               f"{records(VRS.read_bytes(), 214)[1][0]} claims 4294967295 "
                               f"uncompressed bytes (at most {vrs.MAX_RECORD_BYTES} allowed)")
    assert result["maxrss_mb"] < 1024  # projectaria-tools alone would have taken 4 GB


def test_truncated_and_garbage_files_are_one_error(tmp_path):
    size = VRS.stat().st_size
    cuts = [corrupt(tmp_path, f"cut{keep}", lambda b, keep=keep: b.__delitem__(slice(keep, None)))
            for keep in (90, 40_000, size // 2, size - 1)]
    garbage = tmp_path / "garbage.vrs"
    garbage.write_bytes(np.random.default_rng(1).bytes(200_000))
    header_only = corrupt(tmp_path, "header", lambda b: b.__setitem__(
        slice(FIRST_RECORD, None), np.random.default_rng(2).bytes(len(b) - FIRST_RECORD)))
    results = replay(*cuts, garbage, header_only)
    for path, result in zip(cuts, results):
        assert result["error"].startswith(f"{path}: truncated VRS file"), result
    assert results[-2]["error"] == f"{garbage}: not a VRS file (bad magic)"
    assert results[-1]["error"].startswith(f"{header_only}: corrupt VRS file: ")


def test_random_byte_flips_in_headers_and_index_never_crash(tmp_path):
    """Seeded flips over the file header, description and index records (where projectaria-tools
    seeks by what it reads): each file replays, with or without skips, or is one error line."""
    rng = np.random.default_rng(7)
    index_end = struct.unpack_from("<q", VRS.read_bytes(), 40)[0]  # the first user record
    paths = []
    for k, offset in enumerate(rng.integers(0, index_end, 24)):
        paths.append(corrupt(tmp_path, f"flip{k}", lambda b, o=int(offset), x=int(
            rng.integers(1, 256)): b.__setitem__(o, b[o] ^ x)))
    for path, result in zip(paths, replay(*paths)):
        if "error" in result:
            assert result["error"].startswith(f"{path}: ") and "\n" not in result["error"]
        else:
            assert result["image"] + result["skipped"].get("214-1", 0) == 8, result


def test_datasets_refuse_or_leave_out_damaged_records(tmp_path, capsys):
    def damage_third_frame(blob):
        blob[records(bytes(blob), 214)[2][0] + 36] ^= 0x5A

    path = corrupt(tmp_path, "rgb", damage_third_frame)
    with pytest.raises(data.DataError, match=f"{path}: record 2 of stream 214-1 is damaged"):
        data.read_vrs_frame(data.open_vrs(path), path, 2)
    frames = data.VrsFrames([path], crop=32, train=False)
    assert [i for _, i in frames.index] == [0, 1, 3, 4, 5, 6, 7]
    assert "skipped 1 damaged frame(s) of 214-1" in capsys.readouterr().err
    bad = corrupt(tmp_path, "desc", lambda b: struct.pack_into("<q", b, DESCRIPTION_OFFSET_AT, 7))
    with pytest.raises(data.DataError, match=f"{bad}: corrupt VRS file: description record"):
        data.open_vrs(bad)


def test_library_chatter_is_dropped_and_real_errors_kept(capfd):
    vrs.open_provider(VRS)
    assert "[INFO]" not in capfd.readouterr().err
    with vrs.quiet_library():
        os.write(2, b"\x1b[0m[VrsDataProvider][INFO]: streamId 214-1 activated\x1b[0m\n"
                    b"[Reader][ERROR]: something real\n")
    err = capfd.readouterr().err
    assert "something real" in err and "activated" not in err
