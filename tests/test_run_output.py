"""What `dance run` prints and reports when things go wrong, and the live status line."""
from __future__ import annotations

import json
import os
import pty
import re
import signal
import sys
import time
from pathlib import Path

from pipeline.nodedoc import describe_nodes
from pipeline.status import StatusLine

from .conftest import dance, dance_process

T = "tests.nodes_for_tests"


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_every_failing_node_is_one_line_without_code_locations(tmp_path):
    failing = "tests.failing_nodes:NamesItselfAndFails"
    graph = _write(tmp_path / "g.yaml", f"""nodes:
  - {{name: src, type: "{T}:Ramp", params: {{count: 20}}}}
  - {{name: mic_a, type: "{failing}"}}
  - {{name: mic_b, type: "{failing}"}}
edges:
  - src.out -> mic_a.inp
  - src.out -> mic_b.inp
""")
    result = dance("run", graph, "--report", tmp_path / "r.json")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, result.stderr                         # both, not the first only
    for name, line in zip(("mic_a", "mic_b"), sorted(errors)):
        assert line == f"error: node '{name}' ({failing}) failed: ValueError: no such device"
        assert not re.search(r"\(at \S+\.py:\d+\)", line), line
    report = json.loads((tmp_path / "r.json").read_text())
    assert sorted(report["errors"]) == sorted(e.removeprefix("error: ") for e in errors)
    assert report["error"] == report["errors"][0]
    assert "Traceback" not in result.stderr
    traced = dance("run", graph, env={**os.environ, "DANCE_TRACEBACK": "1"})
    assert "Traceback" in traced.stderr                           # for node authors


def _split_graph(tmp_path, sink_path: str, count: int = 50, speed: float = 0.0) -> str:
    return _write(tmp_path / "split.yaml", f"""groups:
  device: {{}}
  server: {{}}
nodes:
  - {{name: src, type: "{T}:Ramp", group: device, params: {{count: {count}, speed: {speed}}}}}
  - {{name: sink, type: "{T}:Collect", group: server, params: {{path: "{sink_path}"}}}}
edges:
  - src.out -> sink.inp
""")


def test_a_failed_group_is_not_followed_by_its_consequences(tmp_path):
    graph = _split_graph(tmp_path, f"{tmp_path}/no/such/folder/out.jsonl", count=100000,
                         speed=1.0)
    result = dance("run", graph, "--report", tmp_path / "r.json", "--connect-timeout", "5")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "node 'sink'" in errors[0] and "FileNotFoundError" in errors[0], \
        result.stderr
    assert "no connection" not in result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["error"] == errors[0][len("error: "):]


def _children(pid: int) -> dict[int, str]:
    """Processes whose parent is `pid`: their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError, ValueError):
            continue
    return {k: v.decode() for k, v in found.items()}


def test_a_killed_worker_is_the_reports_error(tmp_path):
    graph = _split_graph(tmp_path, f"{tmp_path}/out.jsonl", count=0, speed=1.0)   # endless
    proc = dance_process("run", graph, "--report", tmp_path / "r.json")
    try:
        while not (tmp_path / "out.jsonl").exists() or not (tmp_path / "out.jsonl").stat().st_size:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        server = [p for p, cmd in _children(proc.pid).items() if "--group server" in cmd]
        assert len(server) == 1
        os.kill(server[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["error"] == "group 'server' was killed by SIGKILL without a final report", err
    assert "error: group 'server' was killed by SIGKILL" in err


def test_node_list_descriptions_end_at_a_sentence():
    entries = re.split(r"\n(?=\S)", describe_nodes())
    checked = 0
    for entry in entries:
        lines = entry.splitlines()
        if len(lines) < 2 or "unavailable" in lines[0] or lines[0].startswith("#"):
            continue
        description = []
        for line in lines[1:]:
            if re.match(r"    (in |out |--set )", line):
                break
            description.append(line.strip())
        text = " ".join(description)
        assert text.endswith((".", "!", "?")), (lines[0], text)
        checked += 1
    assert checked > 20


def test_status_line_is_cleared_before_anything_else_is_printed(monkeypatch):
    master, slave = pty.openpty()
    with open(slave, "w", closefd=True) as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        monkeypatch.setattr(sys, "stdout", terminal)
        monkeypatch.setenv("COLUMNS", "40")
        status = StatusLine()
        assert status.enabled
        node = {"rate_hz": 12.5, "dropped": 0, "dropped_out": 0}
        with status.owning_output():
            status.update({f"node{i}": node for i in range(10)})
            print("graph table")
        terminal.flush()
        written = ""
        while "graph table" not in written:       # the pty may hand it over in pieces
            written += os.read(master, 4096).decode()
    os.close(master)
    line, rest = written.split("\r", 2)[1], written.split("\r", 2)[2]
    assert len(line) < 40 and line.endswith("…")                   # cut to the terminal
    assert rest.startswith(" " * len(line) + "\r") and "graph table" in rest
