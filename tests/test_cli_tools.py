"""`dance info`, `echo`, `completion` and `new node`, through the real CLI (new processes)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dance.codec import load_codec
from pipeline.packet import audio_packet, image_packet
from pipeline.recordfile import RecordWriter

from .conftest import dance
from .dance_testing import TINY_AUDIO, TINY_IMAGE, sample_audio, sample_image, tiny_checkpoint

T = "tests.nodes_for_tests"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A .dnc container, a stream block, a .rec recording and a checkpoint."""
    d = tmp_path_factory.mktemp("info")
    image_ckpt = tiny_checkpoint(d / "img.pt", TINY_IMAGE)
    audio = load_codec(tiny_checkpoint(d / "aud.pt", TINY_AUDIO))
    (d / "x.dnc").write_bytes(load_codec(image_ckpt).compress(sample_image(40, 48)))
    (d / "block.dnc").write_bytes(audio.audio_encoder(48000, blocks=True).encode(
        sample_audio(4096)))
    with RecordWriter(d / "x.rec") as writer:
        for i in range(5):
            writer.write(audio_packet("mic", i * 10**8, i, np.zeros((4800, 7), np.int32), 48000))
            writer.write(image_packet("rgb", i * 2 * 10**8, i, np.zeros((8, 8, 3), np.uint8)))
    return d


def _info(path) -> dict:
    result = dance("info", path, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_info_describes_containers_blocks_and_checkpoints(files):
    dnc = _info(files / "x.dnc")
    assert (dnc["kind"], dnc["signal"], dnc["shape"], dnc["dtype"]) == \
        ("dnc", "image", [40, 48, 3], "uint8")
    assert dnc["codec"].startswith("tiny-image@") and dnc["raw_bytes"] == 40 * 48 * 3
    assert dnc["bytes"] == (files / "x.dnc").stat().st_size
    assert 0 < sum(s["bytes"] for s in dnc["strings"]) < dnc["bytes"]
    block = _info(files / "block.dnc")
    assert (block["kind"], block["frames"], block["dtype"]) == ("block", 4096, "int32")
    ckpt = _info(files / "img.pt")
    assert ckpt["kind"] == "checkpoint" and ckpt["codec"].startswith("tiny-image@")
    assert ckpt["dims"] == 2 and ckpt["network_elements"] > 1000
    text = dance("info", files / "x.dnc")
    assert text.returncode == 0 and "shape:" in text.stdout and "40×48×3" in text.stdout


def test_info_describes_a_recording_per_stream(files):
    rec = _info(files / "x.rec")
    assert rec["packets"] == 10 and rec["closed_cleanly"] and rec["duration_s"] == 0.8
    streams = {s["stream"]: s for s in rec["streams"]}
    assert streams["mic"]["packets"] == 5 and streams["mic"]["rate_hz"] == 10.0
    assert streams["mic"]["payload"] == "int32 4800×7" and streams["mic"]["bytes"] == 5 * 4800 * 28
    assert streams["rgb"]["rate_hz"] == 5.0


def test_info_describes_a_vrs_recording(aea_vrs):
    vrs = _info(aea_vrs)
    streams = {s["stream"]: s for s in vrs["streams"]}
    assert streams["214-1"]["label"] == "camera-rgb" and streams["214-1"]["records"] == 8
    assert streams["231-1"]["label"] == "mic" and vrs["damaged"] == "none"
    assert 0 < vrs["duration_s"] < 1 and vrs["records"] == sum(s["records"] for s in streams.values())


def test_info_on_other_files_is_one_error_line(files, tmp_path):
    (tmp_path / "cut.dnc").write_bytes((files / "x.dnc").read_bytes()[:-3])
    Image.fromarray(sample_image(8, 8)).save(tmp_path / "a.png")
    (tmp_path / "bad.rec").write_bytes(b"DANCEREC" + b"\xff" * 40)
    for name in ("cut.dnc", "a.png", "bad.rec", "missing.vrs"):
        result = dance("info", tmp_path / name)
        assert result.returncode == 2, (name, result.stdout)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, \
            result.stderr


def _two_group_graph(tmp_path, count: int = 12) -> str:
    path = tmp_path / "g.yaml"
    path.write_text(f"""groups:
  device: {{}}
  server: {{}}
nodes:
  - {{name: src, type: "{T}:Ramp", group: device, params: {{count: {count}}}}}
  - {{name: x2, type: "{T}:Scale", group: server}}
  - {{name: sink, type: "{T}:Collect", group: server, params: {{path: "{tmp_path}/out.jsonl"}}}}
edges:
  - src.out -> x2.inp
  - x2.out -> sink.inp
""")
    return str(path)


def test_echo_prints_each_packet_of_a_port_across_groups(tmp_path):
    graph = _two_group_graph(tmp_path)
    result = dance("echo", graph, "x2.out")        # x2 runs in the server group
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    packets = [line for line in lines if line.startswith("ramp seq")]
    assert [int(line.split()[2]) for line in packets] == list(range(12))
    assert "int32 16×1" in packets[0] and "t 1.000000 s" in packets[0]
    assert "x2.out: 12 packets" in lines[-1] and "100.00 Hz by timestamp" in lines[-1]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 12  # the graph ran on
    result = dance("echo", graph, "src.out", "--count", "3", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["seq"] for r in rows] == [0, 1, 2] and rows[0]["payload"]["shape"] == [16, 1]


def test_echo_of_a_port_that_does_not_exist_is_one_error_line(tmp_path):
    graph = _two_group_graph(tmp_path)
    for port, words in (("x2.nope", "no output 'nope' (outputs: out)"), ("nobody.out", "no node")):
        result = dance("echo", graph, port)
        assert result.returncode == 2 and words in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1


def test_completion_scripts_know_every_command():
    for shell in ("bash", "zsh", "tcsh"):
        result = dance("completion", shell)
        assert result.returncode == 0, result.stderr
        assert all(c in result.stdout for c in ("encode", "echo", "info", "completion"))
    script = dance("completion", "bash").stdout
    syntax = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert syntax.returncode == 0, syntax.stderr
    probe = script + ('\nCOMP_WORDS=(dance in); COMP_CWORD=1; COMP_LINE="dance in"; '
                      'COMP_POINT=8; _shtab_dance; echo "${COMPREPLY[@]}"\n')
    words = subprocess.run(["bash"], input=probe, text=True, capture_output=True).stdout.split()
    assert set(words) == {"info", "inspect"}


def test_new_node_writes_a_node_whose_generated_test_passes(tmp_path):
    result = dance("new", "node", "level_meter", "--dir", tmp_path / "mine")
    assert result.returncode == 0, result.stderr
    assert "type: level_meter:LevelMeter" in result.stdout
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "test_level_meter.py"], cwd=tmp_path / "mine", capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr
    again = dance("new", "node", "level_meter", "--dir", tmp_path / "mine")
    assert again.returncode == 2 and "--force" in again.stderr
    for bad in ("numpy", "Level-Meter", "class"):
        result = dance("new", "node", bad, "--dir", tmp_path / "other")
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "other").exists()
