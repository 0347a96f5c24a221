"""`dance validate`: every mistake reported with file:line and the node, exit 2."""
from __future__ import annotations

import textwrap

import pytest

from tests.conftest import dance

T = "tests.nodes_for_tests"
GOOD = f"""\
nodes:
  - name: src
    type: {T}:Ramp
    params: {{count: 3}}
  - name: x2
    type: {T}:Scale
  - name: sink
    type: {T}:Collect
    params: {{path: out.jsonl}}
edges:
  - src.out -> x2.inp
  - x2.out -> sink.inp
"""

BROKEN = {
    "unknown type": (GOOD.replace(f"{T}:Scale", "scaler"), 6, "x2",
                     "unknown node type 'scaler'"),
    "unknown port": (GOOD.replace("x2.out -> sink.inp", "x2.out -> sink.input"), 12, "sink",
                     "unknown input port 'input'"),
    "unknown output port": (GOOD.replace("src.out ->", "src.image ->"), 11, "src",
                            "unknown output port 'image'"),
    "bad param type": (GOOD.replace("{count: 3}", "{count: three}"), 4, "src",
                       "parameter 'count': expected int, got str"),
    "unknown param": (GOOD.replace("{count: 3}", "{count: 3, cuont: 4}"), 4, "src",
                      "unknown parameter 'cuont'"),
    "missing required param": (GOOD.replace("    params: {path: out.jsonl}\n", ""), 7, "sink",
                               "missing required parameter 'path'"),
    "type mismatch": (GOOD.replace(f"{T}:Collect", "jsonl").replace("sink.inp", "sink.packets")
                      .replace(f"type: {T}:Scale", "type: zmq_sub")
                      .replace("src.out -> x2.inp", "src.out -> sink.packets"), 11, None,
                      None),
    "cycle": (GOOD + "  - x2.out -> x2.inp\n", 13, "x2", "cycle: x2 -> x2"),
    "duplicate name": (GOOD.replace("name: sink", "name: x2"), 7, "x2", "duplicate node name"),
    "bad edge syntax": (GOOD.replace("x2.out -> sink.inp", "x2.out => sink.inp"), 12, None,
                        "edge must read 'node.port -> node.port'"),
    "bad policy": (GOOD.replace("- x2.out -> sink.inp", "- {link: x2.out -> sink.inp, "
                                                        "policy: newest}"), 12, None,
                   "policy 'newest' is not one of"),
    "undeclared group": (GOOD.replace(f"type: {T}:Collect", f"type: {T}:Collect\n    group: gpu"),
                         9, "sink", "group 'gpu' is not declared"),
}


def test_good_graph_validates(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    result = dance("validate", path)
    assert result.returncode == 0, result.stderr
    assert "ok (3 nodes, 2 edges" in result.stdout


@pytest.mark.parametrize("case", sorted(k for k in BROKEN if k != "type mismatch"))
def test_each_mistake_is_reported_with_file_line_and_node(tmp_path, case):
    text, line, node, message = BROKEN[case]
    path = tmp_path / f"{case.replace(' ', '_')}.yaml"
    path.write_text(text)
    result = dance("validate", path)
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    hit = [l for l in lines if message in l]
    assert hit, f"{case}: {message!r} not in {lines}"
    assert hit[0].startswith(f"{path}:{line}: "), hit[0]
    if node:
        assert f"node '{node}'" in hit[0]


def test_type_mismatch_between_ports(tmp_path):
    path = tmp_path / "mismatch.yaml"
    path.write_text(textwrap.dedent(f"""\
        nodes:
          - {{name: src, type: "{T}:Ramp"}}
          - {{name: enc, type: "{T}:Scale"}}
          - {{name: pub, type: zmq_pub}}
          - {{name: img, type: "tests.test_validate:ImageSink"}}
        edges:
          - src.out -> enc.inp
          - enc.out -> img.frames
        """))
    result = dance("validate", path)
    assert result.returncode == 2
    assert f"{path}:8: node 'img': edge enc.out->img.frames: type mismatch, enc.out sends " \
           f"'audio' but img.frames takes 'image'" in result.stderr


def test_all_errors_are_reported_at_once(tmp_path):
    text = GOOD.replace(f"{T}:Scale", "scaler").replace("{count: 3}", "{count: x}")
    path = tmp_path / "two.yaml"
    path.write_text(text + "  - sink.inp -> src.out\n")
    result = dance("validate", path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) >= 3, result.stderr


def test_malformed_yaml_reports_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("nodes:\n  - name: a\n    type: [unclosed\nedges: []\n")
    result = dance("validate", path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{path}:")
    assert "invalid YAML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_file_and_bad_override(tmp_path):
    result = dance("validate", tmp_path / "nope.yaml")
    assert result.returncode == 2 and "cannot read graph file" in result.stderr
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    result = dance("validate", path, "--set", "ghost.count=3", "--set", "src.count=many")
    assert result.returncode == 2
    assert "--set ghost.count=3: no node named 'ghost'" in result.stderr
    assert "parameter 'count' (from --set): expected int, got str 'many'" in result.stderr


from pipeline.node import Input, Node  # noqa: E402


class ImageSink(Node):
    """Takes image frames only (used to provoke a port type mismatch)."""

    frames = Input("image")

    def on_frames(self, packet):
        pass
