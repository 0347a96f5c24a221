"""Running graphs for real: threads in one process, workers linked by ZeroMQ, failures, drops,
Ctrl-C, kill -9 of a peer, and garbage on a link socket."""
from __future__ import annotations

import json
import random
import signal
import time

import psutil
import pytest
import zmq

from pipeline import wire
from pipeline.packet import Packet
from pipeline.transport import free_endpoint, route_prefix
from tests.conftest import dance, dance_process

T = "tests.nodes_for_tests"


def graph(tmp_path, *, count=50, fail_at=-1, delay=0.0, policy="block", size=16, speed=0.0,
          groups=None, endpoint=None, name="g.yaml"):
    """A Ramp -> Scale -> Collect graph; with `groups`, the source runs in its own process."""
    device, server = ("device", "server") if groups else ("main", "main")
    group_block = ""
    if groups:
        server_endpoint = f", endpoint: '{endpoint}'" if endpoint else ""
        group_block = f"groups:\n  device: {{}}\n  server: {{host: local{server_endpoint}}}\n"
    text = f"""{group_block}nodes:
  - {{name: src, type: "{T}:Ramp", group: {device}, params: {{count: {count}, speed: {speed}}}}}
  - {{name: x2, type: "{T}:Scale", group: {server},
      params: {{fail_at: {fail_at}, delay_s: {delay}}}}}
  - {{name: sink, type: "{T}:Collect", group: {server}, params: {{path: "{tmp_path}/out.jsonl"}}}}
edges:
  - {{link: src.out -> x2.inp, policy: {policy}, size: {size}}}
  - x2.out -> sink.inp
"""
    path = tmp_path / name
    path.write_text(text)
    return path


def collected(tmp_path):
    path = tmp_path / "out.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def test_in_process_run_delivers_everything_in_order(tmp_path):
    result = dance("run", graph(tmp_path, count=200), "--report", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    rows = collected(tmp_path)
    assert [r["seq"] for r in rows] == list(range(200))
    assert [r["v"] for r in rows] == [2 * i for i in range(200)]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["nodes"]["src"]["out"] == 200
    assert report["nodes"]["sink"]["in"] == 200
    assert all(n["dropped"] == 0 and n["errors"] == 0 for n in report["nodes"].values())
    assert report["nodes"]["x2"]["latency_ms"]["p95"] >= report["nodes"]["x2"]["latency_ms"]["p50"]
    assert "sink" in result.stdout  # per-node figures printed


def test_groups_run_in_separate_processes_over_zeromq(tmp_path):
    result = dance("run", graph(tmp_path, count=300, groups=True), "--report",
                   tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert [r["v"] for r in collected(tmp_path)] == [2 * i for i in range(300)]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["links"]["server"]["received"] == 300
    assert report["links"]["server"]["rejected"] == 0
    assert set(report["groups"]) == {"device", "server"}
    assert report["nodes"]["src"]["group"] == "device"
    assert report["nodes"]["sink"]["group"] == "server"


def test_failing_node_stops_the_graph_with_one_clear_message(tmp_path):
    for groups in (False, True):
        result = dance("run", graph(tmp_path, count=1000, fail_at=5, groups=groups, speed=2.0))
        assert result.returncode == 1
        errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
        assert errors[0].startswith(f"error: node 'x2' ({T}:Scale) failed: ValueError: "
                                    f"refusing packet 5"), result.stderr
        assert "Traceback" not in result.stderr
        assert len(collected(tmp_path)) == 5


@pytest.mark.parametrize("policy", ["drop_oldest", "latest"])
def test_dropping_policies_count_every_drop(tmp_path, policy):
    result = dance("run", graph(tmp_path, count=300, delay=0.005, policy=policy, size=4),
                   "--report", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    nodes = json.loads((tmp_path / "r.json").read_text())["nodes"]
    assert nodes["x2"]["dropped"] > 0
    assert nodes["x2"]["in"] + nodes["x2"]["dropped"] == 300
    seqs = [r["seq"] for r in collected(tmp_path)]
    assert seqs == sorted(seqs) and seqs[-1] == 299  # the newest packet always survives


def test_block_policy_loses_nothing_with_a_slow_consumer(tmp_path):
    result = dance("run", graph(tmp_path, count=100, delay=0.005, size=2), "--report",
                   tmp_path / "r.json")
    assert result.returncode == 0
    nodes = json.loads((tmp_path / "r.json").read_text())["nodes"]
    assert nodes["x2"]["dropped"] == 0 and nodes["sink"]["in"] == 100


@pytest.mark.parametrize("groups", [False, True])
def test_ctrl_c_drains_and_stops_cleanly(tmp_path, groups):
    path = graph(tmp_path, count=0, speed=1.0, groups=groups)  # endless, 100 packets/s
    proc = dance_process("run", path, "--report", tmp_path / "r.json")
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    nodes = json.loads((tmp_path / "r.json").read_text())["nodes"]
    sent = nodes["src"]["out"]
    assert sent > 20
    assert nodes["sink"]["in"] == sent == len(collected(tmp_path))  # drained, nothing lost


def test_duration_stops_an_endless_source(tmp_path):
    start = time.monotonic()
    result = dance("run", graph(tmp_path, count=0, speed=1.0), "--duration", "1.5")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 30
    assert len(collected(tmp_path)) > 10


def _group_process(path, group, tmp_path, endpoint_json=None):
    return dance_process("run", path, "--group", group, "--quiet", "--report",
                         tmp_path / f"{group}.json")


def test_upstream_survives_kill_9_of_downstream_with_bounded_memory(tmp_path):
    endpoint = free_endpoint()
    path = graph(tmp_path, count=0, speed=3.0, groups=True, endpoint=endpoint)
    server = _group_process(path, "server", tmp_path)
    device = _group_process(path, "device", tmp_path)
    try:
        deadline = time.monotonic() + 60
        while len(collected(tmp_path)) < 50 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(collected(tmp_path)) >= 50, device.stderr
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        time.sleep(3)  # the link sees the disconnect, then drops (and counts) at once
        rss_before = psutil.Process(device.pid).memory_info().rss
        time.sleep(4)
        rss_after = psutil.Process(device.pid).memory_info().rss
        assert device.poll() is None, "upstream died with its peer"
        assert rss_after - rss_before < 20 * 2**20
        device.send_signal(signal.SIGINT)
        out, err = device.communicate(timeout=60)
        assert device.returncode == 0, err
        src = json.loads((tmp_path / "device.json").read_text())["nodes"]["src"]
        assert src["dropped_out"] > 0
        assert "has no peer (gone?)" in err
    finally:
        for proc in (server, device):
            if proc.poll() is None:
                proc.kill()


def damaged_packets(legit: list, count: int, seed: int = 0):
    """(header, body) pairs, each malformed: truncated, bad magic, wrong version, short body,
    absurd dims, random bytes."""
    rng = random.Random(seed)
    header, body = (bytes(f) for f in legit)
    for i in range(count):
        kind = i % 6
        if kind == 0:
            yield header[:rng.randrange(len(header))], b""
        elif kind == 1:
            yield b"XX" + header[2:], body
        elif kind == 2:
            yield header[:2] + bytes([9]) + header[3:], body
        elif kind == 3:
            yield header, body[:rng.randrange(len(body))]
        elif kind == 4:  # declares a 2^60-element array
            big = bytearray(header)
            big[wire._FIXED.size:wire._FIXED.size + 8] = (1 << 60).to_bytes(8, "little")
            yield bytes(big), body
        else:
            yield rng.randbytes(rng.randrange(64)), rng.randbytes(rng.randrange(64))


def link_garbage(legit: list, count: int):
    """Link messages that must all be rejected, including well-formed packets on unknown routes,
    messages without a route, and messages with too many frames."""
    route, unknown = route_prefix("src.out->x2.inp"), route_prefix("no.such->route.x")
    for i, (header, body) in enumerate(damaged_packets(legit, count)):
        if i % 10 == 7:
            yield [unknown + bytes(legit[0]) + bytes(legit[1])]
        elif i % 10 == 8:
            yield [b"\xff"]
        elif i % 10 == 9:
            yield [route + header, body, b"extra"]
        else:
            yield [route + header + body] if i % 2 else [route + header, body]


def test_link_inbox_survives_10000_malformed_messages(tmp_path):
    endpoint = free_endpoint()
    path = graph(tmp_path, count=300, speed=1.0, groups=True, endpoint=endpoint)
    proc = dance_process("run", path, "--quiet", "--report", tmp_path / "r.json")
    ctx = zmq.Context()
    attacker = ctx.socket(zmq.PUSH)
    attacker.connect(endpoint)
    legit = wire.encode(Packet("ramp", 1, 0, __import__("numpy").zeros((16, 1), "int32")))
    try:
        deadline = time.monotonic() + 60
        while not collected(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        for message in link_garbage(legit, 10_000):
            attacker.send_multipart(message)
        out, err = proc.communicate(timeout=120)
    finally:
        attacker.close(0)
        ctx.term()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert [r["v"] for r in collected(tmp_path)] == [2 * i for i in range(300)]
    link = json.loads((tmp_path / "r.json").read_text())["links"]["server"]
    assert link["rejected"] == 10_000
    assert link["received"] == 300


def test_curve_encrypted_link(tmp_path):
    keys = tmp_path / "keys"
    assert dance("keys", keys).returncode == 0
    path = graph(tmp_path, count=40, groups=True)
    path.write_text(f"curve_keys: {keys}\n" + path.read_text())
    result = dance("run", path, "--report", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert len(collected(tmp_path)) == 40


def test_missing_peer_group_gives_a_clear_error(tmp_path):
    path = graph(tmp_path, count=5, groups=True, endpoint=free_endpoint())
    result = dance("run", path, "--group", "device", "--quiet", "--connect-timeout", "2")
    assert result.returncode == 1
    assert "no connection to tcp://127.0.0.1" in result.stderr
