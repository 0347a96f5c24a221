"""zmq_pub / zmq_sub: outside programs read our streams, and garbage never stops a subscriber."""
from __future__ import annotations

import json
import time

import numpy as np
import zmq

from pipeline import wire
from pipeline.packet import Packet
from pipeline.transport import free_endpoint
from tests.conftest import dance, dance_process
from tests.test_runtime import damaged_packets

T = "tests.nodes_for_tests"


def test_outside_program_subscribes_with_plain_pyzmq(tmp_path):
    endpoint = free_endpoint()
    path = tmp_path / "pub.yaml"
    path.write_text(f"""nodes:
  - {{name: src, type: "{T}:Ramp", params: {{count: 150, speed: 1.0}}}}
  - {{name: pub, type: zmq_pub, params: {{endpoint: "{endpoint}"}}}}
edges:
  - src.out -> pub.packets
""")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"ramp")
    sub.setsockopt(zmq.SUBSCRIBE, b"\x00")
    sub.connect(endpoint)  # before the publisher exists: ZeroMQ keeps retrying
    proc = dance_process("run", path, "--quiet")
    seqs, eos = [], False
    try:
        while not eos and sub.poll(30_000):
            topic, *frames = sub.recv_multipart()
            packet, eos = wire.decode(frames)
            if not eos:
                assert topic == b"ramp" and packet.payload.shape == (16, 1)
                seqs.append(packet.seq)
        assert proc.wait(60) == 0
    finally:
        sub.close(0)
        ctx.term()
        proc.kill()
    assert eos and len(seqs) >= 120 and seqs == sorted(seqs) and seqs[-1] == 149


def test_subscriber_survives_10000_malformed_messages(tmp_path):
    endpoint = free_endpoint()
    path = tmp_path / "sub.yaml"
    path.write_text(f"""nodes:
  - name: sub
    type: zmq_sub
    params: {{endpoint: "{endpoint}", bind: true, max_bytes: 65536, hwm: 50000}}
  - {{name: sink, type: "{T}:Collect", params: {{path: "{tmp_path}/out.jsonl"}}}}
edges:
  - sub.out -> sink.inp
""")
    proc = dance_process("run", path, "--quiet", "--report", tmp_path / "r.json")
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.sndhwm = 0
    pub.connect(endpoint)
    try:
        assert pub.poll(30_000), "the subscriber never subscribed"
        pub.recv()  # its subscription: from now on nothing we send is lost
        legit = [Packet("ramp", 1000 + i, i, np.full((16, 1), i, np.int32)) for i in range(200)]
        sample = wire.encode(legit[0])
        garbage = damaged_packets(sample, 10_000, seed=3)
        oversized = [b"ramp", *wire.pack(wire.encode(Packet("ramp", 0, 0,
                                                            np.zeros(70_000, np.uint8))))]
        for i, packet in enumerate(legit):
            pub.send_multipart([b"ramp", *wire.pack(wire.encode(packet))])
            for j in range(50):
                header, body = next(garbage)
                pub.send_multipart([b"ramp", header + body] if j % 2 else [b"ramp", header, body])
            if i % 20 == 0:
                pub.send_multipart(oversized)
                time.sleep(0.01)
        pub.send_multipart([b"\x00", *wire.end_of_stream()])
        out, err = proc.communicate(timeout=120)
    finally:
        pub.close(0)
        ctx.term()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    rows = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["v"] for r in rows] == list(range(200))
    counters = json.loads((tmp_path / "r.json").read_text())["nodes"]["sub"]
    assert counters["received"] == 200
    assert counters["rejected"] == 10_000 + 10


def test_curve_keys_command(tmp_path):
    result = dance("keys", tmp_path / "k")
    assert result.returncode == 0
    assert {p.name for p in (tmp_path / "k").iterdir()} == {
        "server.key", "server.key_secret", "client.key", "client.key_secret"}
    secret = tmp_path / "k" / "server.key_secret"
    assert secret.stat().st_mode & 0o777 == 0o600             # the owner's only
    before = secret.read_bytes()
    again = dance("keys", tmp_path / "k")                     # never replaced silently
    assert again.returncode == 2 and again.stderr.startswith("error:") and "--force" in again.stderr
    assert secret.read_bytes() == before
    assert dance("keys", tmp_path / "k", "--force").returncode == 0
    assert secret.read_bytes() != before and secret.stat().st_mode & 0o777 == 0o600
