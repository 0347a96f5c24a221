"""graphs/aea_audio.yaml end to end: notch -> compand -> encode | ZeroMQ | decode -> expand ->
spatial_metrics, as a user runs it."""
from __future__ import annotations

import json

from tests.conftest import dance


def test_aea_audio_graph_prints_live_spatial_metrics(tmp_path):
    report_path, metrics_path = tmp_path / "r.json", tmp_path / "metrics.jsonl"
    result = dance("run", "graphs/aea_audio.yaml", "--set", "mics.frames=2",
                   "--set", f"metrics.path={metrics_path}", "--report", report_path,
                   timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert {report["nodes"][n]["group"] for n in ("encode", "decode")} == {"device", "server"}
    assert all(n["dropped"] == 0 and n["errors"] == 0 for n in report["nodes"].values())
    spatial = report["nodes"]["spatial"]
    # 2 s of audio: 1 s windows every 0.5 s start at 0, 0.5 and 1 s; every sample matched
    assert spatial["windows"] == 3
    assert spatial["unmatched_reference_samples"] == spatial["unmatched_decoded_samples"] == 0
    lines = [json.loads(line)["payload"] for line in metrics_path.read_text().splitlines()]
    assert [m["window"] for m in lines] == [1, 2, 3]
    assert [m["window_start_ns"] - lines[0]["window_start_ns"] for m in lines] == \
        [0, 500_000_000, 1_000_000_000]
    for m in lines:
        assert all(-80 <= m[k] <= 80 for k in ("ssdr_db", "srdr_db", "ssdr_median_db",
                                               "srdr_median_db"))
    assert spatial["mic"]["srdr_median_db"] == lines[-1]["srdr_median_db"]
    assert "[spatial] mic window 3: SSDR" in result.stdout
    assert report["nodes"]["received"]["streams"]["mic"]["compression_ratio"] > 100
