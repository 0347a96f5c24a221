"""The demo graph: default codecs on the device, latents over ZeroMQ, decoding on the server."""
from __future__ import annotations

import json

from tests.conftest import dance


def test_demo_graph_encodes_sends_and_decodes(tmp_path):
    report_path = tmp_path / "demo.json"
    result = dance("run", "graphs/demo.yaml", "--set", "glasses.frames=1",
                   "--set", "glasses.speed=0", "--quiet", "--report", report_path, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert {report["nodes"][n]["group"] for n in ("encode_image", "decode")} == {"device",
                                                                                 "server"}
    received = report["nodes"]["received"]["streams"]
    decoded = report["nodes"]["decoded"]["streams"]
    assert decoded["camera-rgb"]["shape"] == [1408, 1408, 3]
    assert decoded["mic"]["channels"] == 7 and decoded["mic"]["audio_gaps"] == 0
    assert decoded["mic"]["samples"] == received["mic"]["packets"] * 4096
    assert received["camera-rgb"]["compression_ratio"] > 100
    assert received["mic"]["compression_ratio"] > 100
    assert all(n["dropped"] == 0 and n["errors"] == 0 for n in report["nodes"].values())
