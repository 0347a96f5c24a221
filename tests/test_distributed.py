"""Graphs split across processes the way they are split across hosts: each group started on its
own with `dance run GRAPH --group NAME`, finding the others through the endpoints in the YAML;
peers that start late, die (kill -9) and come back; replicated groups sharing one stream."""
from __future__ import annotations

import json
import signal
import time

import pytest

from pipeline.transport import free_endpoint
from tests.conftest import ROOT, dance, dance_process

T = "tests.nodes_for_tests"


def split_graph(tmp_path, *, count: int, speed: float = 0.0, size: int = 16,
                replicas: int = 1, delay: float = 0.0, results_group: bool = False):
    """Ramp on the device -> Scale on the server -> Collect; every endpoint written out, as for
    groups on different hosts. With `replicas`, the server group runs several times and the
    collector lives in a group of its own."""
    server, results = free_endpoint(), free_endpoint()
    if replicas > 1:
        server = [free_endpoint() for _ in range(replicas)]
    sink_group = "results" if results_group else "server"
    results_line = f"  results: {{endpoint: '{results}'}}\n" if results_group else ""
    path = tmp_path / "split.yaml"
    path.write_text(f"""name: split
groups:
  device: {{}}
  server: {{endpoint: {json.dumps(server)}}}
{results_line}nodes:
  - {{name: src, type: "{T}:Ramp", group: device, params: {{count: {count}, speed: {speed}}}}}
  - {{name: x2, type: "{T}:Scale", group: server, params: {{delay_s: {delay}}}}}
  - {{name: sink, type: "{T}:Collect", group: {sink_group},
      params: {{path: "{tmp_path}/out.jsonl"}}}}
edges:
  - {{link: src.out -> x2.inp, size: {size}}}
  - x2.out -> sink.inp
""")
    return path


def start(path, group, tmp_path, *extra, name=None):
    """`dance run PATH --group GROUP` as its own process (as on its own host)."""
    name = name or group
    return dance_process("run", path, "--group", group, "--quiet", "--report",
                         tmp_path / f"{name}.json", *extra)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def finish(*procs, timeout=60):
    """Wait for processes; kill what is left. Returns their (stdout, stderr)."""
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=timeout))
        finally:
            if proc.poll() is None:
                proc.kill()
    return outputs


def test_two_group_processes_deliver_every_packet_under_block(tmp_path):
    """The receiver starts alone and waits (with a warning after --connect-timeout); the sender
    starts later; a small queue and a slower consumer make back pressure cross the link."""
    count = 300
    path = split_graph(tmp_path, count=count, size=4, delay=0.001)
    server = start(path, "server", tmp_path, "--connect-timeout", 1)
    try:
        time.sleep(2.5)
        device = start(path, "device", tmp_path)
    except BaseException:
        server.kill()
        raise
    (_, device_err), (_, server_err) = finish(device, server, timeout=120)
    assert device.returncode == 0, device_err
    assert server.returncode == 0, server_err
    assert "no sender has connected to tcp://127.0.0.1" in server_err
    assert [r["v"] for r in lines(tmp_path / "out.jsonl")] == [2 * i for i in range(count)]
    sent = json.loads((tmp_path / "device.json").read_text())
    received = json.loads((tmp_path / "server.json").read_text())
    assert sent["nodes"]["src"]["out"] == count
    assert sent["nodes"]["src"]["dropped_out"] == 0
    assert received["links"]["server"]["received"] == count
    assert received["nodes"]["x2"]["in"] == count


def test_sensor_side_keeps_running_without_its_peer_and_resumes_when_it_is_back(tmp_path):
    """Device first (no peer yet: counted drops), then the server; kill -9 of the server (the
    device keeps running, counting drops); a new server on the same endpoint gets the stream."""
    path = split_graph(tmp_path, count=0, speed=2.0)  # endless, 200 packets/s
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    device = start(path, "device", tmp_path, "--connect-timeout", 1)
    procs = [device]
    try:
        time.sleep(2.5)  # no server yet: the source runs and its packets are counted drops
        assert device.poll() is None
        server = start(path, "server", tmp_path, "--set", f"sink.path={first}", name="first")
        procs.append(server)
        assert wait_for(lambda: len(lines(first)) >= 100), "no delivery after the peer came up"
        seqs = [r["seq"] for r in lines(first)]
        assert seqs[0] > 0, "packets from before the connection were not dropped"
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap under block"

        server.send_signal(signal.SIGKILL)
        server.wait(10)
        time.sleep(2)
        assert device.poll() is None, "the sensor side died with its peer"
        restarted = start(path, "server", tmp_path, "--set", f"sink.path={second}",
                          name="second")
        procs.append(restarted)
        assert wait_for(lambda: len(lines(second)) >= 50), "delivery did not resume"
        device.send_signal(signal.SIGINT)  # drains; end of stream ends the new server too
        (_, device_err), (_, restarted_err) = finish(device, restarted)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert device.returncode == 0, device_err
    assert restarted.returncode == 0, restarted_err
    assert "link to group 'server' at tcp://127.0.0.1" in device_err
    assert ": no peer after 1 s (is that group running?)" in device_err
    assert "has no peer (gone?)" in device_err
    assert device_err.count("is connected;") == 2, device_err  # both arrivals, with drop counts
    src = json.loads((tmp_path / "device.json").read_text())["nodes"]["src"]
    before, after = lines(first), lines(second)
    assert after[0]["seq"] > before[-1]["seq"]
    later = [r["seq"] for r in after]
    assert later == list(range(later[0], later[0] + len(later)))
    # Everything emitted was delivered or counted, except what the killed process held.
    assert src["dropped_out"] > before[0]["seq"]
    assert len(before) + len(after) + src["dropped_out"] <= src["out"]


def test_replicated_group_shares_one_stream_exactly_once(tmp_path):
    """Two replicas of the server group take turns on one stream (PUSH to both inboxes); the
    collector, in its own group, gets every packet once and ends after both replicas end."""
    count = 400
    path = split_graph(tmp_path, count=count, replicas=2, delay=0.002, results_group=True)
    result = dance("run", path, "--quiet", "--report", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    values = sorted(r["v"] for r in lines(tmp_path / "out.jsonl"))
    assert values == [2 * i for i in range(count)]
    report = json.loads((tmp_path / "r.json").read_text())
    shares = [report["nodes"][f"x2[{k}]"]["in"] for k in range(2)]
    assert sum(shares) == count and min(shares) > count // 4, shares
    assert report["nodes"]["sink"]["in"] == count
    assert report["nodes"]["src"]["dropped_out"] == 0
    assert set(report["groups"]) == {"device", "server[0]", "server[1]", "results"}
    assert all(g["exit_code"] == 0 for g in report["groups"].values())


def test_replicas_started_one_by_one(tmp_path):
    """The same graph with each replica started by hand, as on separate machines."""
    count = 200
    path = split_graph(tmp_path, count=count, replicas=2, delay=0.001, results_group=True)
    missing = dance("run", path, "--group", "server", "--quiet")
    assert missing.returncode == 2
    assert "has 2 replicas: start each with --replica 0..1" in missing.stderr
    procs = [start(path, "results", tmp_path),
             start(path, "server", tmp_path, "--replica", 0, name="server0"),
             start(path, "server", tmp_path, "--replica", 1, name="server1")]
    time.sleep(1)
    procs.append(start(path, "device", tmp_path))
    outputs = finish(*procs, timeout=120)
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    assert sorted(r["v"] for r in lines(tmp_path / "out.jsonl")) == [2 * i for i in range(count)]
    shares = [json.loads((tmp_path / f"server{k}.json").read_text())["nodes"][f"x2[{k}]"]["in"]
              for k in range(2)]
    assert sum(shares) == count and min(shares) > 0, shares


def test_group_started_alone_needs_endpoints_in_the_graph(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(f"""groups: {{device: {{}}, server: {{}}}}
nodes:
  - {{name: src, type: "{T}:Ramp", group: device}}
  - {{name: sink, type: "{T}:Collect", group: server, params: {{path: x.jsonl}}}}
edges: [src.out -> sink.inp]
""")
    result = dance("run", path, "--group", "device", "--quiet")
    assert result.returncode == 2
    assert f"{path}:1: group 'server' needs an 'endpoint:'" in result.stderr


def test_distributed_mistakes_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_text(f"""groups:
  glasses: {{}}
  gpu: {{host: gpu-box, endpoint: "tcp://127.0.0.1:6000"}}
  cloud: {{host: cloud, replicas: 2, endpoint: [tcp://10.0.0.5:6000]}}
  viewer: {{host: laptop}}
  bad: {{endpoint: "udp://x", replicas: 0}}
nodes:
  - {{name: src, type: "{T}:Ramp", group: glasses}}
  - {{name: x2, type: "{T}:Scale", group: gpu}}
  - {{name: x4, type: "{T}:Scale", group: cloud}}
  - {{name: extra, type: "{T}:Ramp", group: cloud}}
  - {{name: sink, type: "{T}:Collect", group: viewer, params: {{path: x.jsonl}}}}
edges:
  - src.out -> x2.inp
  - x2.out -> x4.inp
  - x4.out -> sink.inp
""")
    result = dance("validate", path)
    assert result.returncode == 2
    errors = result.stderr
    assert f"{path}:6: group 'bad': replicas must be a positive integer, got 0" in errors
    assert f"{path}:6: group 'bad': endpoint 'udp://x': expected tcp://ADDRESS:PORT" in errors
    assert f"{path}:4: group 'cloud': endpoint ['tcp://10.0.0.5:6000']: lists 1 addresses " \
           f"for 2 replicas" in errors
    assert f"{path}:11: node 'extra': source in group 'cloud', which has 2 replicas" in errors
    assert f"{path}:3: group 'gpu' (host 'gpu-box') receives from group 'glasses' on host " \
           f"'local', which cannot reach the loopback endpoint tcp://127.0.0.1:6000" in errors
    assert f"{path}:5: group 'viewer' (host 'laptop') receives from group 'cloud' on host " \
           f"'cloud' and needs an 'endpoint:'" in errors


@pytest.mark.parametrize("replicas", [1, 3])
def test_validate_accepts_hosts_with_reachable_endpoints(tmp_path, replicas):
    path = tmp_path / "ok.yaml"
    path.write_text(f"""groups:
  glasses: {{}}
  cloud: {{host: gpu-box, endpoint: "tcp://192.168.1.20:6000", bind: "tcp://0.0.0.0:6000",
           replicas: {replicas}}}
nodes:
  - {{name: src, type: "{T}:Ramp", group: glasses}}
  - {{name: sink, type: "{T}:Collect", group: cloud, params: {{path: x.jsonl}}}}
edges: [src.out -> sink.inp]
""")
    result = dance("validate", path)
    assert result.returncode == 0, result.stderr


def test_documented_graphs_validate(tmp_path):
    """The layout in docs/distributed.md and examples/split_hosts.yaml are valid graphs."""
    text = (ROOT / "docs" / "distributed.md").read_text()
    start = text.index("# graph.yaml, copied to every machine\n")
    doc_graph = tmp_path / "graph.yaml"
    doc_graph.write_text(text[start:text.index("```", start)])
    assert dance("keys", tmp_path / "keys").returncode == 0  # validate checks `curve_keys:`
    for path in (doc_graph, ROOT / "examples" / "split_hosts.yaml"):
        result = dance("validate", path)
        assert result.returncode == 0, result.stderr
        assert "3 groups" in result.stdout


def _stats_endpoint(launcher_pid: int) -> str | None:
    """The --stats-to endpoint on the command line of one of the launcher's workers."""
    from pathlib import Path
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == launcher_pid and b"--stats-to" in cmd:
            return cmd[cmd.index(b"--stats-to") + 1].decode()
    return None


def test_launcher_ignores_forged_status_messages(tmp_path):
    import zmq
    path = split_graph(tmp_path, count=40, speed=20.0)
    launcher = dance_process("run", path, "--report", tmp_path / "r.json")
    try:
        assert wait_for(lambda: _stats_endpoint(launcher.pid) is not None, timeout=30)
        endpoint = _stats_endpoint(launcher.pid)
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.linger = 1000
        push.connect(endpoint)
        for forged in (b"not json", b"1", b"[1]", b'{"group": "nobody", "nodes": {}}',
                       b'{"group": "server", "nodes": 3}'):
            push.send(forged)
        push.close()
        out, err = launcher.communicate(timeout=90)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, err[-2000:]
    assert "warning: ignored 5 status message(s)" in err and "Traceback" not in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["nodes"]["sink"]["in"] == 40
