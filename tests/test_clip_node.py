"""clip_zero_shot and label_retention nodes, on their own and in graphs/aea_clip.yaml (run as a
user would, in three processes over ZeroMQ) with the tiny random-init CLIP config."""
from __future__ import annotations

import json
import threading
import warnings

import pytest

from nodes.clip import ClipZeroShot
from nodes.retention import LabelRetention
from perception.clip import TINY_MODEL
from pipeline.packet import Packet, image_packet
from tests.conftest import dance
from tests.dance_testing import sample_image

TINY = [f"clip_{b}.{k}={v}" for b in ("original", "decoded")
        for k, v in (("model", TINY_MODEL), ("weights", "random"))]


def bound(node, out: list):
    node.attach(lambda port, packet: out.append((port, packet)), threading.Event())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        node.setup()
    return node


def test_clip_node_labels_every_frame_of_a_batch_with_its_timestamp():
    out = []
    node = bound(ClipZeroShot(name="clip", model=TINY_MODEL, weights="random", device="cpu",
                              labels=["kitchen", "laptop", "laundry"], batch=4,
                              min_logit=-100.0), out)
    frames = [image_packet("camera-rgb", 1000 + i, i, sample_image(64, 80, seed=i))
              for i in range(3)]
    node.handle_batch("image", frames)
    node.handle("image", frames[0])
    assert [p.timestamp_ns for _, p in out] == [1000, 1001, 1002, 1000]
    assert all(port == "predictions" and p.stream == "camera-rgb" for port, p in out)
    first = out[0][1].payload
    assert first["label"] == ["kitchen", "laptop", "laundry"][first["index"]]
    assert len(first["probs"]) == 3 and sum(first["probs"]) == pytest.approx(1, abs=1e-4)
    single = out[3][1].payload  # batch == single frame, up to the last rounded digit of a prob
    assert first["confident"] is True and single["label"] == first["label"]
    assert single["probs"] == pytest.approx(first["probs"], abs=2e-6)
    assert single["max_logit"] == pytest.approx(first["max_logit"], abs=2e-4)
    assert set(single) == set(first) and single["index"] == first["index"]
    assert node.counters["batches"] == 2 and node.counters["largest_batch"] == 3
    json.dumps(first)  # travels as JSON


def test_clip_node_marks_frames_below_min_logit():
    out = []
    node = bound(ClipZeroShot(name="clip", model=TINY_MODEL, weights="random",
                              min_logit=18.0), out)
    node.handle("image", image_packet("cam", 0, 0, sample_image()))
    assert out[0][1].payload["max_logit"] < 18 and out[0][1].payload["confident"] is False
    assert node.counters["confident"] == 0


def test_clip_node_refuses_bad_labels():
    with pytest.raises(ValueError, match="node 'clip': labels"):
        ClipZeroShot(name="clip", model=TINY_MODEL, weights="random", labels=[]).setup()


def prediction(ts: int, label: str, confident: bool = True) -> Packet:
    return Packet("camera-rgb", ts, ts, {"label": label, "confident": confident})


def test_label_retention_node_running_figures_and_unmatched(capsys):
    out = []
    node = bound(LabelRetention(name="ret", print_every=2), out)
    original = ["a", "b", "c", "d", "e"]
    decoded = {0: "a", 1: "x", 2: "c", 4: "e", 9: "z"}  # 3 never decoded, 9 never original
    for ts, label in decoded.items():
        node.handle("decoded", prediction(ts * 100_000_000, label))
    for ts, label in enumerate(original):
        node.handle("original", prediction(ts * 100_000_000 + 300_000, label, confident=ts != 4))
    node.end_of_input()
    node.teardown()
    last = out[-1][1].payload
    assert (last["all_retained"], last["all_total"]) == (3, 4)
    assert (last["confident_retained"], last["confident_total"]) == (2, 3)
    assert last["all_rate"] == 0.75 and last["all_ci_low"] < 0.75 < last["all_ci_high"]
    assert [p.payload["same"] for _, p in out] == [True, False, True, True]
    assert node.counters["frames"] == {"matched": 4, "pending": 0,
                                       "unmatched": {"original": 1, "decoded": 1}}
    assert node.counters["retention"]["all"]["rate"] == 0.75
    printed = capsys.readouterr().out
    assert "all 3/4 = 75.0%" in printed and "unmatched {'original': 1, 'decoded': 1}" in printed


def run_clip_graph(tmp_path, *extra: str):
    report, log = tmp_path / "r.json", tmp_path / "retention.jsonl"
    sets = [*TINY, f"log.path={log}", "glasses.speed=0", *extra]
    result = dance("run", "graphs/aea_clip.yaml", "--report", report,
                   *[a for s in sets for a in ("--set", s)], timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line)["payload"] for line in log.read_text().splitlines()]
    return json.loads(report.read_text()), rows, result.stdout


def check_accounting(report: dict, rows: list[dict], frames: int) -> None:
    nodes = report["nodes"]
    assert nodes["glasses"]["out"] == nodes["encode"]["in"] == nodes["decode"]["out"] == frames
    for branch, side in (("clip_original", "original"), ("clip_decoded", "decoded")):
        clip = nodes[branch]
        # every frame is classified or counted as dropped (at CLIP's queue or on the link)
        sender = nodes["glasses" if side == "original" else "decode"]
        assert clip["in"] + clip["dropped"] + sender["dropped_out"] == frames
        assert clip["out"] == clip["in"]
        # every prediction is matched or counted as unmatched
        join = nodes["retention"]["frames"]
        assert join["matched"] + join["unmatched"][side] == clip["out"]
    assert len(rows) == nodes["retention"]["frames"]["matched"] >= 1
    assert [r["all_total"] for r in rows] == list(range(1, len(rows) + 1))
    assert 0 <= rows[-1]["all_ci_low"] <= rows[-1]["all_rate"] <= rows[-1]["all_ci_high"] <= 1
    assert nodes["retention"]["retention"]["all"]["total"] == len(rows)


def test_aea_clip_graph_on_synthetic_frames(tmp_path):
    report, rows, stdout = run_clip_graph(tmp_path, "glasses.frames=3")
    check_accounting(report, rows, 3)
    assert set(report["groups"]) == {"device", "server", "reference"}
    assert "label retention: all" in stdout and "clip_original" in stdout


def test_aea_clip_graph_on_the_sample_recording(tmp_path, aea_vrs):
    report, rows, _ = run_clip_graph(tmp_path, f"glasses.path={aea_vrs}", "glasses.frames=3")
    check_accounting(report, rows, 3)
    assert rows[0]["original"] in {"kitchen", "cooking", "food", "drink", "spill", "table",
                                   "television", "phone", "laptop", "video game", "board game",
                                   "clothes", "laundry"}


def test_missing_clip_weights_stop_the_graph_with_one_line(tmp_path):
    graph = tmp_path / "g.yaml"
    graph.write_text("""
nodes:
  - {name: glasses, type: aria_rgb, params: {frames: 1, speed: 0}}
  - {name: clip, type: clip_zero_shot, params: {model: ViT-B-32, weights: laion2b_s34b_b79k}}
edges:
  - glasses.image -> clip.image
""")
    env = {"HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub"),
           "PATH": "/usr/bin:/bin"}
    result = dance("run", graph, env=env)  # found when the graph loads, before anything runs
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1
    assert f"{graph}:4: node 'clip': parameter 'weights': pretrained tag " \
           "'laion2b_s34b_b79k' of ViT-B-32 is not in the local cache" in errors[0]
    assert "open_clip_model.safetensors" in errors[0]


def test_aria_rgb_replays_the_recordings_camera_or_synthetic_frames(aea_vrs):
    from nodes.aria_rgb import AriaRgb
    from pipeline.testing import run_source
    replayed = run_source(AriaRgb(name="glasses", path=str(aea_vrs), speed=0.0, frames=3))
    assert [p.seq for _, p in replayed] == [0, 1, 2]
    assert all(port == "image" and p.stream == "camera-rgb" and p.payload.shape == (1408, 1408, 3)
               for port, p in replayed)
    assert replayed[1][1].timestamp_ns > replayed[0][1].timestamp_ns
    synthetic = run_source(AriaRgb(name="glasses", speed=0.0, frames=2))
    assert [p.payload.shape for _, p in synthetic] == [(1408, 1408, 3)] * 2
