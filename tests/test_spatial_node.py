"""The live `spatial_metrics` node: alignment by sample time, windows, medians, counters."""
from __future__ import annotations

import numpy as np
import pytest

from evaluation.spatial import spatial_metrics
from nodes.spatial_metrics import SpatialMetrics
from pipeline.packet import audio_packet
from pipeline.testing import NodeHarness

FS = 8000
T0 = 5_000_000_000


def packets(x: np.ndarray, start: int, block: int, stream: str = "mic", **meta):
    return [audio_packet(stream, T0 + round((start + i) * 1e9 / FS), n, x[i:i + block], FS,
                         **meta) for n, i in enumerate(range(0, len(x), block))]


def signals(seconds: float = 4.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    ref = rng.normal(0, 0.01, (int(seconds * FS), 3))
    noise = rng.normal(0, 0.001, ref.shape)
    noise[len(ref) // 2:] *= 4          # the second half is 12 dB worse
    return ref, ref + noise


def run(node, feeds):
    with NodeHarness(node) as harness:
        for port, packet in feeds:
            harness.send(port, packet)
    return harness.outputs["metrics"], node.counters


def test_windows_line_up_by_time_not_by_block():
    ref, dec = signals()
    late = 1000                                   # decoded starts 1000 samples in, other blocks
    feeds = [("reference", p) for p in packets(ref, 0, 512)]
    feeds += [("decoded", p) for p in packets(dec[late:], late, 700)]
    feeds.sort(key=lambda f: f[1].timestamp_ns)
    metrics, counters = run(SpatialMetrics(name="spatial", print_every=0), feeds)
    # windows of 1 s every 0.5 s from the first common sample
    starts = [late + k * FS // 2 for k in range(len(metrics))]
    assert len(metrics) == (len(ref) - late - FS) // (FS // 2) + 1
    assert [m.payload["window_start_ns"] for m in metrics] == \
        [T0 + round(s * 1e9 / FS) for s in starts]
    expected = [spatial_metrics(ref[s:s + FS], dec[s:s + FS], FS) for s in starts]
    assert [m.payload["ssdr_db"] for m in metrics] == [round(e.ssdr_db, 3) for e in expected]
    assert [m.payload["srdr_db"] for m in metrics] == [round(e.srdr_db, 3) for e in expected]
    srdr = [m.payload["srdr_db"] for m in metrics]
    assert srdr[0] == pytest.approx(20.0, abs=0.5) and srdr[-1] == pytest.approx(8.0, abs=0.5)
    assert metrics[-1].payload["srdr_median_db"] == round(float(np.median(srdr)), 3)
    assert counters["windows"] == len(metrics)
    assert counters["unmatched_reference_samples"] == late
    assert counters["unmatched_decoded_samples"] == 0
    assert counters["mic"]["srdr_median_db"] == metrics[-1].payload["srdr_median_db"]


def test_gaps_and_buffer_limits_are_counted():
    ref, dec = signals(6.0, seed=1)
    lost = packets(dec, 0, 800)
    del lost[4]                                    # one decoded block never arrives
    feeds = [("reference", p) for p in packets(ref, 0, 800)] + [("decoded", p) for p in lost]
    feeds.sort(key=lambda f: f[1].timestamp_ns)
    metrics, counters = run(SpatialMetrics(print_every=0), feeds)
    assert counters["unmatched_decoded_samples"] == 4 * 800      # the run before the gap
    assert metrics[0].payload["window_start_ns"] == T0 + round(5 * 800 * 1e9 / FS)
    # a stalled side: the other one keeps at most max_buffer_s
    only_ref = [("reference", p) for p in packets(ref, 0, 800)]
    metrics, counters = run(SpatialMetrics(max_buffer_s=2.0, print_every=0), only_ref)
    assert metrics == [] and counters["dropped_samples"] == len(ref) - 2 * FS


def test_bad_inputs_name_the_node():
    ref, _ = signals(1.0)
    node = SpatialMetrics(name="spatial")
    with NodeHarness(node) as harness:
        harness.send("reference", packets(ref, 0, 4000)[0])
        with pytest.raises(ValueError, match="node 'spatial' input 'decoded'.*2 channels"):
            harness.send("decoded", packets(ref[:, :2], 0, 4000)[0])
        with pytest.raises(ValueError, match="μ-law.*expand"):
            harness.send("decoded", packets(ref, 0, 4000, domain="mu-law")[0])
