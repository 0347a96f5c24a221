"""`dance validate` on hostile and subtly broken graphs: each is one error line naming the file
(and node and field where there is one), exit 2, in bounded memory; and what `run` would trip
over (missing files, misspelled names, mis-wired codecs) is found before anything runs."""
from __future__ import annotations

import os
import resource
import textwrap

import numpy as np
import pytest

from pipeline.packet import image_packet
from pipeline.recordfile import RecordWriter

from .conftest import ROOT, dance

T = "tests.nodes_for_tests"
MEMORY_LIMIT = 1 << 30  # address space of a validate that never imports torch


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def one_error(path, *args: str, bounded: bool = False) -> str:
    """Validate `path`; assert exit 2 with exactly one error line, starting with the file."""
    extra = {"preexec_fn": _limit_memory} if bounded else {}
    result = dance("validate", path, *args, timeout=120, **extra)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}:"), lines[0]
    assert len(lines[0]) < 600, lines[0][:600]
    return lines[0]


def write(tmp_path, text: str, name: str = "g.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def alias_bomb(levels: int) -> str:
    """`levels` anchors, each a list of nine aliases of the one before: 9**levels values."""
    lines = ['b0: &b0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


RAMP = f"""\
nodes:
  - name: src
    type: {T}:Ramp
    params: {{count: 3}}
"""

HOSTILE_YAML = {
    "alias bomb as a parameter": (alias_bomb(9) + RAMP.replace("{count: 3}", "{count: *b8}"),
                                  "more than 100000 values once aliases are expanded"),
    "alias bomb as a node name": (alias_bomb(9) + RAMP.replace("name: src", "name: *b8"),
                                  "more than 100000 values once aliases are expanded"),
    "recursive alias": ("x: &x [1, *x]\n" + RAMP, "an alias refers to a node that contains it"),
    "5000-deep nesting": ("nodes: " + "[" * 5000 + "]" * 5000 + "\n",
                          "nested deeper than 64 levels"),
    "defaults not a mapping": ("defaults: [1]\n" + RAMP, "'defaults:' must be a mapping"),
    "oversized file": (RAMP + "# " + "x" * (1 << 20) + "\n", "larger than the limit"),
    "huge cross-group edge": (f"""\
groups: {{a: {{}}, b: {{}}}}
nodes:
  - {{name: src, type: "{T}:Ramp", group: a}}
  - {{name: x2, type: "{T}:Scale", group: b}}
edges:
  - {{link: src.out -> x2.inp, size: 3000000000}}
""", "edge size must be an integer from 1 to 65536, got 3000000000"),
    "wildcard endpoint": ('groups: {a: {endpoint: "tcp://0.0.0.0:6000"}}\n'
                          + RAMP.replace("{count: 3}", "{count: 3}\n    group: a"),
                          "senders cannot connect to a wildcard address"),
    "misspelled node type": (RAMP.replace(f"{T}:Ramp", "synthetic_ari"),
                             "did you mean 'synthetic_aria'?"),
    "misspelled parameter": (RAMP.replace("count: 3", "cuont: 3"),
                             "unknown parameter 'cuont'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
def test_hostile_yaml_is_one_error_line_in_bounded_memory(tmp_path, case):
    text, expected = HOSTILE_YAML[case]
    line = one_error(write(tmp_path, text), bounded=True)
    assert expected in line, line


def test_small_alias_bomb_is_shown_in_bounded_size(tmp_path):
    """Under the expansion limit, a big value still shows as a short excerpt."""
    path = write(tmp_path, alias_bomb(4) + RAMP.replace("{count: 3}", "{count: *b3}"))
    result = dance("validate", path, preexec_fn=_limit_memory)
    lines = [l for l in result.stderr.splitlines() if "node 'src'" in l]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "parameter 'count': expected int, got list [[[" in lines[0] and len(lines[0]) < 300


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(RAMP.encode() + b"# caf\xe9\n")
    assert one_error(path, bounded=True) == \
        f"{path}:5: not UTF-8 text (byte 0xe9 at offset {len(RAMP) + 5})"


def test_missing_curve_keys_folder_is_named_resolved(tmp_path):
    line = one_error(write(tmp_path, "curve_keys: keys\n" + RAMP))
    assert f"curve_keys: no such folder: {tmp_path / 'keys'}" in line


def test_wildcard_bind_is_the_explicit_opt_in(tmp_path):
    path = write(tmp_path, 'groups: {a: {endpoint: "tcp://127.0.0.1:6000", '
                           'bind: "tcp://0.0.0.0:6000"}}\n'
                 + RAMP.replace("{count: 3}", "{count: 3}\n    group: a"))
    result = dance("validate", path)
    assert result.returncode == 0, result.stderr


# -- what `run` would fail on, found by validate ------------------------------------------------
def vrs_graph(path: str) -> str:
    return f"""\
        nodes:
          - name: vrs
            type: aria_vrs
            params: {{path: {path}}}
          - name: sink
            type: stats
        edges:
          - vrs.image -> sink.packets
        """


def test_missing_vrs_resolves_against_the_graph_file(tmp_path):
    path = write(tmp_path, vrs_graph("data/missing.vrs"))
    line = one_error(path)
    assert line == f"{path}:4: node 'vrs': parameter 'path': no such file: " \
                   f"{tmp_path / 'data' / 'missing.vrs'}"


def test_set_paths_resolve_against_the_current_directory(tmp_path):
    path = write(tmp_path, vrs_graph("x.vrs"))
    result = dance("validate", path, "--set", "vrs.path=missing.vrs")
    assert result.returncode == 2
    assert result.stderr.strip() == f"{path}:2: node 'vrs': parameter 'path' (from --set): no " \
                                    f"such file: {ROOT / 'missing.vrs'}"


def test_a_file_that_is_not_vrs_is_found_by_the_node_check(tmp_path):
    (tmp_path / "fake.vrs").write_bytes(b"not a vrs file at all" * 10)
    line = one_error(write(tmp_path, vrs_graph("fake.vrs")))
    assert f"node 'vrs': parameter 'path': {tmp_path / 'fake.vrs'}: not a VRS file" in line


def test_relative_vrs_next_to_the_graph_validates(tmp_path, aea_vrs):
    path = write(tmp_path, vrs_graph(os.path.relpath(aea_vrs, tmp_path)))
    result = dance("validate", path)
    assert result.returncode == 0, result.stderr


def codec_graph(checkpoint: str, source_port: str = "image") -> str:
    return f"""\
        nodes:
          - name: glasses
            type: synthetic_aria
          - name: enc
            type: encode
            params: {{checkpoint: {checkpoint}}}
        edges:
          - glasses.{source_port} -> enc.{source_port}
        """


def test_misspelled_checkpoint_suggests_the_zoo_name(tmp_path):
    line = one_error(write(tmp_path, codec_graph("aria-imag")))
    assert "node 'enc': parameter 'checkpoint': 'aria-imag' is neither a checkpoint file nor " \
           "a zoo codec; did you mean 'aria-image'?" in line


def test_missing_checkpoint_file_shows_the_resolved_path(tmp_path):
    line = one_error(write(tmp_path, codec_graph("ckpt/mine.pt")))
    assert f"parameter 'checkpoint': no such checkpoint file: {tmp_path / 'ckpt' / 'mine.pt'}" \
        in line


def test_audio_codec_wired_to_images(tmp_path):
    line = one_error(write(tmp_path, codec_graph("aria-audio-spatial")))
    assert "node 'enc': parameter 'checkpoint': aria-audio-spatial is an audio codec but input " \
           "'image' is wired" in line
    ok = dance("validate", write(tmp_path, codec_graph("aria-audio-spatial", "audio"), "a.yaml"))
    assert ok.returncode == 0, ok.stderr


def test_missing_classifier_weights(tmp_path):
    line = one_error(write(tmp_path, """\
        nodes:
          - {name: glasses, type: synthetic_aria}
          - {name: cls, type: classify, params: {weights: models/mobilenet.pth}}
        edges:
          - glasses.image -> cls.image
        """))
    assert f"node 'cls': parameter 'weights': mobilenet_v2 weights not found: " \
           f"{tmp_path / 'models' / 'mobilenet.pth'} does not exist" in line


def test_missing_clip_weights(tmp_path):
    line = one_error(write(tmp_path, """\
        nodes:
          - {name: glasses, type: synthetic_aria}
          - {name: clip, type: clip_zero_shot, params: {weights: clip.safetensors}}
        edges:
          - glasses.image -> clip.image
        """))
    assert f"node 'clip': parameter 'weights': CLIP weights file not found: " \
           f"{tmp_path / 'clip.safetensors'}" in line


def test_recording_of_raw_frames_fed_to_decode(tmp_path):
    with RecordWriter(tmp_path / "raw.rec") as writer:
        writer.write(image_packet("camera-rgb", 0, 0, np.zeros((8, 8, 3), np.uint8)))
    graph = """\
        nodes:
          - {name: replay, type: replay, params: {path: raw.rec}}
          - {name: dec, type: decode}
          - {name: sink, type: stats}
        edges:
          - replay.out -> %s
        """
    line = one_error(write(tmp_path, graph % "dec.encoded"))
    assert f"node 'replay': parameter 'path': {tmp_path / 'raw.rec'}: stream 'camera-rgb' " \
           f"holds image packets but `out` feeds inputs that take encoded" in line
    ok = dance("validate", write(tmp_path, graph % "sink.packets", "ok.yaml"))
    assert ok.returncode == 0, ok.stderr
