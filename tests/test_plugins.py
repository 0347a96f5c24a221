"""Node types from packages the project never saw: by `module:Class` and by the `dance.nodes`
entry point, listed by `dance nodes`, run in a split graph; broken and clashing entry points;
and the test harness's checks of what a node emits.

Packages are "installed" without touching the shared environment: a package folder plus a
`NAME-VERSION.dist-info/` (METADATA, entry_points.txt) on PYTHONPATH is what importlib.metadata
reads from site-packages too."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline.node import Input, Node, Output, Source
from pipeline.packet import Packet, audio_packet, image_packet
from pipeline.testing import NodeHarness, PortContractError, feed, run_source
from tests.conftest import ROOT
from tests.test_examples import PLUGIN, TUTORIAL, _block_after


def install_fake(site: Path, dist: str, version: str, entry_points: dict[str, str]) -> None:
    """A dist-info folder declaring `entry_points` in the dance.nodes group."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("[dance.nodes]\n" + "\n".join(lines) + "\n")


def dance_with(site: Path, *args, cwd: Path, timeout: float = 300):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def acme(tmp_path) -> Path:
    """Package `acme_acoustics` (distribution acme-acoustics 0.3.0): the tutorial's node, as
    written in docs/custom-nodes.md, declared as entry point `acme_direction`."""
    site = tmp_path / "site"
    package = site / "acme_acoustics"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    code = _block_after(TUTORIAL.read_text(),
                        "# examples/dance-example-plugin/dance_example_plugin/sound_direction.py")
    (package / "direction.py").write_text(code)
    install_fake(site, "acme-acoustics", "0.3.0",
                 {"acme_direction": "acme_acoustics.direction:SoundDirection"})
    return site


def both_ways_graph(directory: Path) -> Path:
    """Synthetic Aria audio on the device; on the server, the plugin node by module:Class and
    by entry point name, each writing JSON lines."""
    path = directory / "graph.yaml"
    path.write_text(f"""name: plugin
groups: {{device: {{}}, server: {{}}}}
nodes:
  - {{name: glasses, type: synthetic_aria, group: device, params: {{frames: 1, speed: 0}}}}
  - {{name: by_class, type: "acme_acoustics.direction:SoundDirection", group: server}}
  - {{name: by_name, type: acme_direction, group: server}}
  - {{name: log_class, type: jsonl, group: server, params: {{path: "{directory}/class.jsonl"}}}}
  - {{name: log_name, type: jsonl, group: server, params: {{path: "{directory}/name.jsonl"}}}}
edges:
  - glasses.audio -> by_class.audio
  - glasses.audio -> by_name.audio
  - by_class.direction -> log_class.packets
  - by_name.direction -> log_name.packets
""")
    return path


def test_unseen_package_runs_by_module_class_and_by_entry_point(acme, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    listing = dance_with(acme, "nodes", cwd=work)
    assert listing.returncode == 0, listing.stderr
    text = listing.stdout
    assert "# plugin node types (entry-point group dance.nodes of installed packages)" in text
    entry = text[text.index("\nacme_direction  ("):]
    assert entry.startswith("\nacme_direction  (acme_acoustics.direction.SoundDirection, "
                            "package acme-acoustics 0.3.0)\n    Direction of the dominant sound")
    for line in ("    in  audio: audio", "    out direction: metrics",
                 "    --set mic_a=  (int, default 0)", "    --set window=  (int, default 4096)"):
        assert "\n" + line in entry
    assert "\nstats  (nodes.stats.StatsSink)\n" in text  # built-ins still listed

    graph = both_ways_graph(work)
    result = dance_with(acme, "run", graph, "--quiet", "--report", work / "r.json", cwd=work)
    assert result.returncode == 0, result.stderr
    by_class = (work / "class.jsonl").read_text().splitlines()
    by_name = [json.loads(line) for line in (work / "name.jsonl").read_text().splitlines()]
    assert by_class and [json.loads(line) for line in by_class] == by_name
    assert set(by_name[0]["payload"]) == {"tdoa_us", "angle_deg", "peak"}
    report = json.loads((work / "r.json").read_text())
    assert report["nodes"]["by_name"]["type"] == "acme_direction"
    blocks = report["nodes"]["by_name"]["in"]  # of 4096 samples: one window each
    assert blocks >= 48000 // 4096  # a second of audio
    assert report["nodes"]["by_name"]["out"] == report["nodes"]["by_class"]["out"] == blocks
    assert len(by_name) == blocks


def test_markdown_reference_ignores_installed_plugins(acme, tmp_path):
    """docs/nodes.md is generated by `dance nodes --markdown`: a plugin must not change it."""
    from pipeline.nodedoc import describe_nodes

    with_plugin = dance_with(acme, "nodes", "--markdown", cwd=tmp_path)
    assert with_plugin.returncode == 0, with_plugin.stderr
    assert "acme" not in with_plugin.stdout
    assert with_plugin.stdout == describe_nodes(markdown=True) + "\n"  # this process: no plugin


def test_example_plugin_package_builds_and_installs_its_entry_point(tmp_path):
    """The real examples/dance-example-plugin, built and installed by pip into a prefix of its
    own (not the shared environment), then used by name from an unrelated directory."""
    source = tmp_path / "src"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info",
                                                                  "build"))
    prefix = tmp_path / "prefix"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--no-build-isolation", "--prefix", str(prefix), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    site = next(prefix.glob("lib/python*/site-packages"))
    described = dance_with(site, "nodes", "sound_direction", cwd=tmp_path)
    assert described.returncode == 0, described.stderr
    assert described.stdout.startswith(
        "sound_direction  (dance_example_plugin.sound_direction.SoundDirection, package "
        "dance-example-plugin 0.1.0)\n")
    graph = tmp_path / "graph.yaml"
    graph.write_text(f"""nodes:
  - {{name: glasses, type: synthetic_aria, params: {{frames: 1, speed: 0}}}}
  - {{name: direction, type: sound_direction, params: {{window: 8192}}}}
  - {{name: log, type: jsonl, params: {{path: "{tmp_path}/d.jsonl"}}}}
edges: [glasses.audio -> direction.audio, direction.direction -> log.packets]
""")
    result = dance_with(site, "run", graph, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) >= 48000 // 8192


def test_broken_and_clashing_entry_points_are_reported(acme, tmp_path):
    install_fake(acme, "broken-pkg", "1.0", {
        "missing_module": "no_such_module_xyz:Thing",
        "not_a_node": "json:dumps",
        "stats": "acme_acoustics.direction:SoundDirection",
    })
    install_fake(acme, "other-acoustics", "2.0",
                 {"acme_direction": "acme_acoustics.direction:gcc_phat"})
    listing = dance_with(acme, "nodes", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert ("missing_module: unavailable: node type 'missing_module' of package 'broken-pkg 1.0' "
            "(entry point 'missing_module = no_such_module_xyz:Thing' in group dance.nodes) "
            "cannot be loaded: ModuleNotFoundError: No module named 'no_such_module_xyz'"
            in listing.stdout)
    assert "not_a_node: unavailable: node type 'not_a_node' of package 'broken-pkg 1.0' " \
           "(entry point 'not_a_node = json:dumps' in group dance.nodes) is not a Node class" \
           in listing.stdout
    assert "warning: node type 'stats' of package 'broken-pkg 1.0' (entry point 'stats = " \
           "acme_acoustics.direction:SoundDirection' in group dance.nodes) has the name of a " \
           "built-in type, which wins" in listing.stderr
    assert listing.stderr.count("warning: node type 'stats'") == 1
    assert "warning: node type 'acme_direction' is declared twice: by package " \
           "'acme-acoustics 0.3.0'" in listing.stderr
    assert "and by package 'other-acoustics 2.0'" in listing.stderr

    graph = tmp_path / "g.yaml"
    graph.write_text("""nodes:
  - {name: a, type: missing_module}
  - {name: b, type: acme_direction}
  - {name: c, type: stats}
""")
    result = dance_with(acme, "validate", graph, cwd=tmp_path)
    assert result.returncode == 2
    assert f"{graph}:2: node 'a': node type 'missing_module' of package 'broken-pkg 1.0'" \
           in result.stderr
    assert f"{graph}:3: node 'b': node type 'acme_direction' is declared twice" in result.stderr
    assert "node 'c'" not in result.stderr  # the built-in stats, with a warning
    assert "warning: node type 'stats' of package 'broken-pkg 1.0'" in result.stderr


def test_unknown_type_lists_plugin_types(acme, tmp_path):
    graph = tmp_path / "g.yaml"
    graph.write_text("nodes:\n  - {name: a, type: acme_direktion}\n")
    result = dance_with(acme, "validate", graph, cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown node type 'acme_direktion' (built-in types: " in result.stderr
    assert "; plugin types: acme_direction; or use package.module:Class)" in result.stderr


def test_dance_nodes_describes_module_class_types_and_rejects_unknown(tmp_path):
    result = dance_with(tmp_path, "nodes", "examples.brightness:SceneStats", "nope", cwd=ROOT)
    assert result.returncode == 2
    assert result.stdout.startswith("examples.brightness:SceneStats  "
                                    "(examples.brightness.SceneStats)\n    Per-frame mean")
    assert "error: unknown node type 'nope'" in result.stderr


# -- the harness -------------------------------------------------------------------------------

class Splitter(Node):
    """Sends frames to `frames` and a metrics dict per frame to `stats`; misbehaves on demand
    through the frame's meta, to exercise the harness checks."""

    image = Input("image")
    frames = Output("image")
    stats = Output("metrics")

    def setup(self):
        self.finished = False

    def on_image(self, packet):
        mode = packet.meta.get("mode")
        if mode == "object":  # not JSON (numpy scalars are converted), cannot cross processes
            self.emit("stats", Packet("s", packet.timestamp_ns, packet.seq,
                                      {"mean": object()}))
        elif mode == "bad_meta":
            self.emit("frames", packet.replace(meta={**packet.meta, "width": 3}))
        elif mode == "wrong_type":
            self.emit("stats", packet)
        else:
            self.emit("frames", packet)
            self.emit("stats", Packet("s", packet.timestamp_ns, packet.seq,
                                      {"mean": float(packet.payload.mean())}))

    def teardown(self):
        self.finished = True


def frame(seq: int, **meta) -> Packet:
    return image_packet("cam", 1000 * seq, seq, np.full((4, 6, 3), seq, np.uint8), **meta)


def test_harness_collects_per_port_and_runs_the_lifecycle():
    node = Splitter(name="split")
    with NodeHarness(node) as harness:
        first = harness.send("image", frame(0))
        harness.send("image", frame(1))
    assert node.finished
    assert [port for port, _ in first] == ["frames", "stats"]
    assert [p.seq for p in harness.outputs["frames"]] == [0, 1]
    assert [p.payload for p in harness.outputs["stats"]] == [{"mean": 0.0}, {"mean": 1.0}]
    with pytest.raises(KeyError, match="no input 'audio'"):
        NodeHarness(node).send("audio", frame(0))


@pytest.mark.parametrize("mode, message", [
    ("object", "output 'stats': stream 's' seq 0 cannot cross to another process"),
    ("bad_meta", "output 'frames' (type image): stream 'cam' seq 0: image meta {'width': 3} "
                 "does not match the shape (4, 6, 3)"),
    ("wrong_type", "output 'stats' (type metrics): stream 'cam' seq 0: a metrics payload is a "
                   "dict"),
])
def test_harness_rejects_packets_that_do_not_fit_their_port(mode, message):
    node = Splitter(name="split")
    with pytest.raises(PortContractError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("{", r"\{").replace("}", r"\}")):
        feed(node, "image", [frame(0, mode=mode)])
    assert node.finished  # teardown ran after the failure
    assert feed(Splitter(name="split"), "image", [frame(0, mode=mode)], check=False)


class Beeps(Source):
    """Audio blocks, one without its sample rate."""

    out = Output("audio")

    def run(self):
        for seq in range(5):
            meta_rate = 48000 if seq != 3 else 0
            yield audio_packet("beep", seq * 1000, seq, np.zeros((8, 2), np.int16), meta_rate)


def test_harness_checks_sources_and_stops_them_at_a_limit():
    assert [p.seq for _, p in run_source(Beeps(name="b"), limit=3)] == [0, 1, 2]
    with pytest.raises(PortContractError, match="audio meta needs 'sample_rate'"):
        run_source(Beeps(name="b"))
    harness = NodeHarness(Beeps(name="b"))
    assert isinstance(harness.stop, threading.Event)


def test_a_module_in_the_working_directory_never_shadows_an_installed_one(tmp_path):
    # PIL is imported when the graph's synthetic_aria node is loaded, after the CLI started
    (tmp_path / "PIL.py").write_text("raise SystemExit('the shadowing PIL.py ran')\n")
    (tmp_path / "mynodes.py").write_text(
        "from pipeline.node import Node, Input\n"
        "class Sink(Node):\n"
        "    inp = Input()\n"
        "    def on_inp(self, packet):\n"
        "        pass\n")
    graph = tmp_path / "g.yaml"
    graph.write_text("name: g\nnodes:\n  - {name: src, type: synthetic_aria, params: {frames: 1, "
                     "speed: 0, mic: false}}\n  - {name: sink, type: 'mynodes:Sink'}\n"
                     "edges:\n  - src.image -> sink.inp\n")
    import subprocess
    import sys
    from pathlib import Path
    dance_command = Path(sys.executable).parent / "dance"      # the installed entry point
    result = subprocess.run([str(dance_command), "validate", str(graph)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "shadowing" not in result.stderr + result.stdout
