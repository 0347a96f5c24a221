"""Joined inputs (packets of several ports matched by timestamp or seq) and batched inputs: the
matcher on its own, the node declaration, and both through the real runtime."""
from __future__ import annotations

import random
import time

import numpy as np
import pytest

from pipeline import graph as graphs
from pipeline.join import Join, Matcher
from pipeline.launcher import resolve_endpoints
from pipeline.node import Input, Node, Output, Param, Source
from pipeline.packet import Packet
from pipeline.runtime import GroupRunner

MS = 1_000_000


def pkt(ts_ms: float, seq: int = 0, stream: str = "s") -> Packet:
    return Packet(stream, round(ts_ms * MS), seq, {"v": ts_ms})


def run(matcher: Matcher, arrivals: list[tuple[str, Packet]]) -> list[tuple]:
    pairs = [m for port, p in arrivals if (m := matcher.push(port, p)) is not None]
    matcher.flush()
    return pairs


def test_jittered_timestamps_match_within_tolerance_only():
    rng = np.random.default_rng(0)
    matcher = Matcher(("a", "b"), "timestamp", 2 * MS, 16)
    arrivals = []
    for i in range(50):  # 10 fps; b lags and jitters by up to ±1.5 ms; frame 7 is 5 ms off
        arrivals.append(("a", pkt(100 * i, i)))
        arrivals.append(("b", pkt(100 * i + (5 if i == 7 else rng.uniform(-1.5, 1.5)), i)))
    pairs = run(matcher, arrivals)
    assert [(a.seq, b.seq) for a, b in pairs] == [(i, i) for i in range(50) if i != 7]
    assert matcher.counters == {"matched": 49, "pending": 0, "unmatched": {"a": 1, "b": 1}}


def test_out_of_order_arrivals_pair_the_right_packets():
    order = list(range(40))
    random.Random(1).shuffle(order)
    arrivals = [("a", pkt(33 * i, i)) for i in range(40)]
    arrivals += [("b", pkt(33 * i + 0.5, i)) for i in order]  # all of a first, b shuffled
    random.Random(2).shuffle(arrivals)
    pairs = run(Matcher(("a", "b"), "timestamp", MS, 64), arrivals)
    assert sorted((a.seq, b.seq) for a, b in pairs) == [(i, i) for i in range(40)]


def test_closest_candidate_wins():
    matcher = Matcher(("a", "b"), "timestamp", 10 * MS, 8)
    matcher.push("b", pkt(0, 0))
    matcher.push("b", pkt(7, 1))
    a, b = matcher.push("a", pkt(6, 0))
    assert b.seq == 1 and matcher.counters["pending"] == 1


def test_missing_packets_are_counted_and_memory_stays_bounded():
    matcher = Matcher(("a", "b"), "seq", 0, 8)
    arrivals = []
    for i in range(1000):  # b loses every third packet, a every fifth
        if i % 5:
            arrivals.append(("a", pkt(i, i)))
        if i % 3:
            arrivals.append(("b", pkt(i, i)))
    peak = 0
    pairs = []
    for port, p in arrivals:
        if (m := matcher.push(port, p)) is not None:
            pairs.append(m)
        peak = max(peak, *(len(w) for w in matcher.pending.values()))
    matcher.flush()
    both = [i for i in range(1000) if i % 5 and i % 3]
    assert [a.seq for a, _ in pairs] == both
    assert all(a.seq == b.seq for a, b in pairs)
    assert peak <= 8
    only_a = sum(1 for i in range(1000) if i % 5 and not i % 3)
    only_b = sum(1 for i in range(1000) if i % 3 and not i % 5)
    assert matcher.counters["unmatched"] == {"a": only_a, "b": only_b}
    assert matcher.counters["matched"] == len(both) and matcher.counters["pending"] == 0


def test_three_way_join_needs_all_ports_within_tolerance():
    matcher = Matcher(("a", "b", "c"), "timestamp", 3 * MS, 8)
    assert matcher.push("a", pkt(0)) is None
    assert matcher.push("b", pkt(2)) is None
    assert matcher.push("c", pkt(4)) is None      # 4 - 0 > 3: a and c too far apart
    triple = matcher.push("a", pkt(3, 1))         # 2, 3, 4: within 3 ms
    assert [p.timestamp_ns // MS for p in triple] == [3, 2, 4]


class Pair(Node):
    """Joins two streams by timestamp and emits the timestamp difference."""

    left = Input("metrics")
    right = Input("metrics")
    out = Output("metrics")
    tolerance_ms = Param(float, 1.0, min=0.0)
    pairs = Join("left", "right", tolerance="tolerance_ms", size=4)

    def on_pairs(self, left, right):
        return Packet("pair", left.timestamp_ns, left.seq,
                      {"left": left.seq, "right": right.seq,
                       "dt_ns": right.timestamp_ns - left.timestamp_ns})


def test_node_declaration_routes_ports_to_the_join_handler():
    emitted = []
    node = Pair(name="pair", tolerance_ms=0.5)
    node.attach(lambda port, p: emitted.append(p), None)
    assert node.counters["pairs"]["matched"] == 0
    node.handle("right", pkt(10.2, 3))
    node.handle("left", pkt(20, 4))
    node.handle("left", pkt(10, 5))
    node.end_of_input()
    assert [p.payload["right"] for p in emitted] == [3]
    assert node.counters["pairs"] == {"matched": 1, "pending": 0,
                                      "unmatched": {"left": 1, "right": 0}}
    assert Pair.joins["pairs"].ports == ("left", "right")


def test_bad_declarations_are_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match="not an input"):
        type("Bad", (Node,), {"a": Input(), "j": Join("a", "b"), "on_j": lambda s, a, b: None})
    with pytest.raises(TypeError, match="needs a method on_j"):
        type("Bad", (Node,), {"a": Input(), "b": Input(), "j": Join("a", "b")})
    with pytest.raises(TypeError, match="parameter 'tol'"):
        type("Bad", (Node,), {"a": Input(), "b": Input(), "j": Join("a", "b", tolerance="tol"),
                              "on_j": lambda s, a, b: None})
    with pytest.raises(TypeError, match="batched and joined"):
        type("Bad", (Node,), {"a": Input(batch=4), "b": Input(), "j": Join("a", "b"),
                              "on_j": lambda s, a, b: None})
    with pytest.raises(TypeError, match="two or more"):
        Join("a")
    with pytest.raises(TypeError, match="by="):
        Join("a", "b", by="stream")


class TwoCameras(Source):
    """Two streams of the same 50 frames: 'late' arrives in small bursts, reordered, jittered,
    and without frames 10-14."""

    early = Output("metrics")
    late = Output("metrics")

    def run(self):
        rng = random.Random(3)
        held = []
        for i in range(50):
            yield "early", pkt(100 * i, i)
            if not 10 <= i < 15:
                held.append(pkt(100 * i + rng.uniform(-0.4, 0.4), i))
            if len(held) == 3:
                rng.shuffle(held)
                yield from (("late", p) for p in held)
                held = []
        yield from (("late", p) for p in held)


class Keep(Node):
    """Keeps the payloads it receives in its counters (small graphs only)."""

    packets = Input("metrics")

    def setup(self):
        self.counters["rows"] = []

    def on_packets(self, packet):
        self.counters["rows"].append(packet.payload)


def run_graph(tmp_path, text: str) -> dict:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    graph = graphs.load(path)
    runner = GroupRunner(graph, "main", resolve_endpoints(graph))
    assert runner.run() == 0, runner.error
    return runner.snapshot()["nodes"]


def test_join_through_the_runtime_counts_unmatched_in_the_report(tmp_path):
    nodes = run_graph(tmp_path, """
nodes:
  - {name: cams, type: "tests.test_join:TwoCameras"}
  - {name: pair, type: "tests.test_join:Pair", params: {tolerance_ms: 0.5}}
  - {name: keep, type: "tests.test_join:Keep"}
edges:
  - cams.early -> pair.left
  - cams.late -> pair.right
  - pair.out -> keep.packets
""")
    # 'late' frame 9 arrives after 'early' 10-16: with 4 pending per port, 'early' 9 has been
    # evicted by then, so frame 9 is unmatched on both sides
    rows = nodes["keep"]["rows"]
    assert sorted(r["left"] for r in rows) == [i for i in range(50) if not 9 <= i < 15]
    assert all(r["left"] == r["right"] and abs(r["dt_ns"]) <= 0.4 * MS for r in rows)
    assert nodes["pair"]["pairs"] == {"matched": 44, "pending": 0,
                                      "unmatched": {"left": 6, "right": 1}}
    assert nodes["pair"]["in"] == 95


class Burst(Source):
    """`count` packets as fast as possible."""

    out = Output("metrics")
    count = Param(int, 40)

    def run(self):
        for i in range(self.count):
            yield pkt(i, i)


class SlowBatches(Node):
    """Batched input: records the seqs of each call, and is slow, so packets queue up."""

    packets = Input("metrics", batch="batch")
    batch = Param(int, 4, min=1)

    def setup(self):
        self.counters["calls"] = []

    def on_packets(self, packets):
        self.counters["calls"].append([p.seq for p in packets])
        time.sleep(0.01)


def test_batched_input_gets_the_queued_packets_in_order(tmp_path):
    nodes = run_graph(tmp_path, """
nodes:
  - {name: burst, type: "tests.test_join:Burst", params: {count: 40}}
  - {name: batches, type: "tests.test_join:SlowBatches", params: {batch: 4}}
edges:
  - {link: burst.out -> batches.packets, size: 64}
""")
    calls = nodes["batches"]["calls"]
    assert [seq for call in calls for seq in call] == list(range(40))
    assert max(map(len, calls)) == 4 and len(calls) < 40
    assert nodes["batches"]["in"] == 40


def test_batched_input_outside_the_runtime_gets_lists():
    node = SlowBatches(name="b", batch=3)
    node.attach(lambda port, p: None, None)
    node.setup()
    assert node.batch_size("packets") == 3
    node.handle("packets", pkt(0, 0))
    node.handle_batch("packets", [pkt(1, 1), pkt(2, 2)])
    assert node.counters["calls"] == [[0], [1, 2]]
