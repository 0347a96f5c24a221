"""Acceptance: the real AEA sample replayed across a process boundary over ZeroMQ."""
from __future__ import annotations

import json

from tests.conftest import dance


def test_aea_replay_delivers_every_frame_and_sample(tmp_path, aea_vrs):
    report_path = tmp_path / "r.json"
    result = dance("run", "graphs/aea_replay.yaml", "--set", f"vrs.path={aea_vrs}",
                   "--set", "vrs.speed=0", "--report", report_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["nodes"]["vrs"]["group"] != report["nodes"]["stats"]["group"]
    assert report["links"]["server"] == {**report["links"]["server"], "received": 12,
                                         "rejected": 0}
    assert all(n["dropped"] == 0 and n["dropped_out"] == 0 for n in report["nodes"].values())
    streams = report["nodes"]["stats"]["streams"]
    rgb, mic = streams["camera-rgb"], streams["mic"]
    assert rgb["packets"] == 8 and rgb["shape"] == [1408, 1408, 3] and rgb["dtype"] == "uint8"
    assert (mic["samples"], mic["channels"], mic["dtype"]) == (16384, 7, "int32")
    assert rgb["monotonic"] and mic["monotonic"] and mic["audio_gaps"] == 0
