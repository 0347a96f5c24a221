"""`dance dataset index`: the Parquet manifest every --index job reads (dance/dataset.py)."""
from __future__ import annotations

import shutil
from collections import Counter

import pytest

from dance.data import DataError
from dance.dataset import SPLITS, load_index, split_for
from tests.conftest import dance

pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is a dependency: pip install -e .")


@pytest.fixture
def recordings(tmp_path, aea_vrs):
    """Two copies of the sample (one in a subfolder), a truncated copy, junk, and a PNG."""
    root = tmp_path / "aea"
    (root / "day2").mkdir(parents=True)
    shutil.copy(aea_vrs, root / "walk.vrs")
    shutil.copy(aea_vrs, root / "day2" / "walk.vrs")
    (root / "cut.vrs").write_bytes(aea_vrs.read_bytes()[:100_000])
    (root / "junk.vrs").write_bytes(b"not a recording")
    (root / "notes.png").write_bytes(b"ignored: not .vrs")
    return root


def test_index_lists_streams_counts_and_corrupt_files(recordings, tmp_path):
    out = tmp_path / "index.parquet"
    result = dance("dataset", "index", recordings, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "4 recordings (2 ok, 2 corrupt" in result.stdout
    assert "16 RGB frames" in result.stdout
    corrupt_lines = [line for line in result.stderr.splitlines() if line.startswith("corrupt:")]
    assert len(corrupt_lines) == 2 and any("truncated" in line for line in corrupt_lines)

    rows = {r.id: r for r in load_index(out, include_corrupt=True)}
    assert set(rows) == {"walk", "day2/walk", "cut", "junk"}
    walk = rows["day2/walk"]
    assert walk.ok and walk.path == str((recordings / "day2" / "walk.vrs").resolve())
    assert (walk.rgb_frames, walk.rgb_width, walk.rgb_height) == (8, 1408, 1408)
    assert (walk.audio_records, walk.audio_frames, walk.audio_channels) == (4, 4 * 4096, 7)
    assert 0.3 < walk.duration_s < 0.4 and "214-1 camera-rgb" in walk.streams
    assert not rows["junk"].ok and "not a VRS file" in rows["junk"].error
    assert [r.id for r in load_index(out)] == ["day2/walk", "walk"]   # ok rows only, sorted


def test_glob_input_and_split_selection(recordings, tmp_path):
    out = tmp_path / "walks.parquet"
    result = dance("dataset", "index", f"{recordings}/**/walk.vrs", "-o", out, "--seed", "3",
                   "--split", "0,1,0")
    assert result.returncode == 0, result.stderr
    assert len(load_index(out, split="val")) == 2 and not load_index(out, split="train")


def test_split_is_by_recording_seeded_and_stable():
    ids = [f"rec{i:04d}" for i in range(3000)]
    counts = Counter(split_for(i, seed=0) for i in ids)
    for name, fraction in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(counts[name] / len(ids) - fraction) < 0.03
    # a recording's split depends on its id and the seed only, not on the others
    assert [split_for(i, 0) for i in ids[:50]] == [split_for(i, 0) for i in ids[:50]]
    assert sum(split_for(i, 0) != split_for(i, 1) for i in ids) > 300


@pytest.mark.parametrize("split", ["0.8,0.2", "0.5,0.5,0.5", "a,b,c", "-0.1,0.6,0.5"])
def test_bad_split_fractions_are_one_line(recordings, tmp_path, split):
    result = dance("dataset", "index", recordings, "-o", tmp_path / "i.parquet", f"--split={split}")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: --split") and "Traceback" not in result.stderr


def test_hostile_index_files_are_one_error_naming_the_file(tmp_path):
    import pyarrow as pa

    missing = tmp_path / "missing.parquet"
    with pytest.raises(DataError, match="no such index file"):
        load_index(missing)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1" + b"\xff" * 64)
    with pytest.raises(DataError, match="garbage.parquet: not a readable index"):
        load_index(garbage)
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    with pytest.raises(DataError, match="not a dance index"):
        load_index(foreign)


def test_index_with_a_wrong_cell_type_names_row_and_column(recordings, tmp_path):
    out = tmp_path / "index.parquet"
    assert dance("dataset", "index", recordings, "-o", out).returncode == 0
    table = pq.read_table(out)
    frames = table.column("rgb_frames").to_pylist()
    frames[0] = -5
    hostile = table.set_column(table.schema.get_field_index("rgb_frames"), "rgb_frames",
                               __import__("pyarrow").array(frames))
    pq.write_table(hostile.replace_schema_metadata(table.schema.metadata), out)
    with pytest.raises(DataError, match=r"row 0: column rgb_frames: -5 is negative"):
        load_index(out)
