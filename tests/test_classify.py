"""The torchvision classifier (perception/classifier.py), the `classify` node and
`dance eval image --classifier`, with torchvision's real MobileNetV2 ImageNet weights from
../shared/models (skipped when the file is not there) and the one-line errors without them."""
from __future__ import annotations

import io
import json
import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.retention import kl_divergence, label_retention, top_k_retention
from nodes.classify import Classify
from nodes.retention import LabelRetention
from perception.classifier import (ClassifierWeightsError, Prediction, load_image_classifier)
from perception.clip import Prediction as ClipPrediction
from pipeline.cli import main
from pipeline.packet import image_packet

from .conftest import SHARED, dance
from .dance_testing import TINY_IMAGE, sample_image, tiny_checkpoint

WEIGHTS = SHARED / "models" / "mobilenet_v2-b0353104.pth"
FILE = WEIGHTS.name


@pytest.fixture(scope="module")
def weights():
    if not WEIGHTS.is_file():
        pytest.skip(f"MobileNetV2 ImageNet weights not found at {WEIGHTS} (torchvision's "
                    f"{FILE}; needs ../shared beside the repo)")
    return WEIGHTS


@pytest.fixture(scope="module")
def mobilenet(weights):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # process-wide: restored after this module, later tests need theirs
    yield load_image_classifier("mobilenet_v2", weights, top_k=5, batch=8)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def aea_frames():
    from dance import data

    from .conftest import AEA_VRS
    if not AEA_VRS.exists():
        pytest.skip(f"sample AEA recording not found at {AEA_VRS} (needs ../shared beside the repo)")
    provider = data.open_vrs(AEA_VRS)
    return [data.read_vrs_frame(provider, AEA_VRS, i) for i in range(data.vrs_frame_count(AEA_VRS))]


def jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def down_up(frame: np.ndarray, factor: int) -> np.ndarray:
    h, w = frame.shape[:2]
    small = Image.fromarray(frame).resize((w // factor, h // factor), Image.BILINEAR)
    return np.asarray(small.resize((w, h), Image.BILINEAR))


# -- the classifier on real frames -------------------------------------------------------------
def test_real_model_is_torchvisions_v1_entry_with_its_preprocessing(mobilenet):
    assert "IMAGENET1K_V1" in mobilenet.description and len(mobilenet.categories) == 1000
    assert mobilenet.categories[0] == "tench"
    assert mobilenet.preprocess.resize_size == [256] and mobilenet.preprocess.crop_size == [224]
    assert tuple(mobilenet.prepare(sample_image(300, 500)).shape) == (3, 224, 224)


def test_aea_frame_label_survives_jpeg_q90_but_not_heavy_degradation(mobilenet, aea_frames):
    original = mobilenet.classify(aea_frames)
    assert all(isinstance(p, Prediction) and isinstance(p, ClipPrediction) for p in original)
    clear = original[2]  # the most confident of the 8 frames (p = 0.61)
    assert clear.label == "paper towel" and clear.prob > 0.4
    assert clear.top_labels[0] == clear.label and len(clear.top_labels) == 5
    assert clear.probs.shape == (1000,) and clear.probs.sum() == pytest.approx(1, abs=1e-4)
    assert clear.index == int(np.argmax(clear.probs)) and clear.prob == clear.top_probs[0]

    def figures(decoded):
        labels = [p.label for p in original]
        top1 = label_retention(labels, [d.label for d in decoded])
        top5 = top_k_retention(labels, [d.top_labels for d in decoded])
        kl = np.mean([kl_divergence(o.log_probs, d.log_probs) for o, d in zip(original, decoded)])
        return top1, top5, kl

    mild = mobilenet.classify([jpeg(f, 90) for f in aea_frames])
    assert mild[2].label == "paper towel"
    top1, top5, kl = figures(mild)
    assert top1.rate >= 0.75 and top5.rate == 1 and kl < 0.05
    heavy = mobilenet.classify([down_up(f, 16) for f in aea_frames])
    assert heavy[2].label != "paper towel"
    heavy_top1, heavy_top5, heavy_kl = figures(heavy)
    assert heavy_top1.rate <= 0.25
    assert heavy_top5.rate < top5.rate and heavy_kl > 1 > 20 * kl


def test_batches_equal_frames_one_by_one_and_grey_frames(mobilenet):
    frames = [sample_image(120 + 9 * i, 160, seed=i) for i in range(3)]
    batch = mobilenet.classify(frames)
    for frame, b in zip(frames, batch):
        [single] = mobilenet.classify([frame])
        assert single.index == b.index
        np.testing.assert_allclose(single.probs, b.probs, atol=1e-5)
    grey = frames[0][:, :, 0]
    assert mobilenet.classify([grey])[0].index == \
        mobilenet.classify([np.repeat(grey[:, :, None], 3, 2)])[0].index
    assert mobilenet.classify([]) == []
    with pytest.raises(ValueError, match="uint8"):
        mobilenet.classify([frames[0].astype(np.float32)])


def test_hub_cache_is_used_without_a_path(weights, tmp_path):
    previous = torch.hub.get_dir()
    try:
        torch.hub.set_dir(str(tmp_path))
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "checkpoints" / FILE).symlink_to(weights)
        found = load_image_classifier("mobilenet_v2")
        assert str(tmp_path / "checkpoints" / FILE) in found.description
    finally:
        torch.hub.set_dir(previous)


def test_renamed_file_is_recognised_by_its_hash(weights, tmp_path):
    renamed = tmp_path / "my_mobilenet.pth"
    renamed.symlink_to(weights)
    assert "IMAGENET1K_V1" in load_image_classifier("mobilenet_v2", renamed).description


def test_top_k_retention_and_kl():
    assert top_k_retention(["a", "b", "c"], [["x", "a"], ["b"], ["x", "y"]]).retained == 2
    assert top_k_retention(["a", "b"], [["a"], ["x"]], [0.9, 0.1], 0.5).total == 1
    log_p = np.log([0.5, 0.25, 0.25])
    assert kl_divergence(log_p, log_p) == 0
    assert kl_divergence(log_p, np.log([0.25, 0.5, 0.25])) == pytest.approx(0.25 * np.log(2))


# -- missing and wrong weights: one line naming the file ---------------------------------------
def _one_line(message: str) -> str:
    assert "\n" not in message
    return message


def test_missing_file_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(ClassifierWeightsError) as info:
        load_image_classifier("mobilenet_v2", tmp_path / FILE)
    message = _one_line(str(info.value))
    assert message.startswith("mobilenet_v2 weights not found: ") and FILE in message
    assert str(tmp_path / FILE) in message and "weights=PATH" in message


def test_empty_hub_cache_is_one_line(tmp_path):
    previous = torch.hub.get_dir()
    try:
        torch.hub.set_dir(str(tmp_path))
        with pytest.raises(ClassifierWeightsError) as info:
            load_image_classifier("mobilenet_v2")
    finally:
        torch.hub.set_dir(previous)
    message = _one_line(str(info.value))
    assert FILE in message and str(tmp_path / "checkpoints") in message


def test_unreadable_file_and_other_architecture_are_one_line(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ClassifierWeightsError) as info:
        load_image_classifier("mobilenet_v2", junk)
    assert "not a readable torch state dict" in _one_line(str(info.value))
    import torchvision
    other = tmp_path / "squeezenet.pth"
    torch.save(torchvision.models.squeezenet1_1().state_dict(), other)
    with pytest.raises(ClassifierWeightsError) as info:
        load_image_classifier("mobilenet_v2", other)
    message = _one_line(str(info.value))
    assert f"{other} does not fit mobilenet_v2" in message and "another architecture" in message
    with pytest.raises(ValueError, match="unknown torchvision classification model 'nonet'"):
        load_image_classifier("nonet", other)


# -- the classify node -------------------------------------------------------------------------
def bound(node, out: list):
    node.attach(lambda port, packet: out.append((port, packet)), threading.Event())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        node.setup()
    return node


def test_node_emits_labels_that_label_retention_consumes(weights, aea_frames):
    out, kept = [], []
    originals = bound(Classify(name="cls_original", weights=str(weights), device="cpu",
                               batch=4, min_confidence=0.5), out)
    decoded = bound(Classify(name="cls_decoded", weights=str(weights), device="cpu",
                             all_probs=False), out)
    retention = bound(LabelRetention(name="retention", print_every=0), kept)
    frames = [aea_frames[i] for i in (1, 2, 3)]
    packets = [image_packet("camera-rgb", 1000 + i, i, f) for i, f in enumerate(frames)]
    originals.handle_batch("image", packets)
    degraded = [p.replace(payload=down_up(p.payload, 16)) for p in packets]
    decoded.handle("image", degraded[0])
    decoded.handle_batch("image", degraded[1:])
    first = out[0][1].payload
    assert all(port == "predictions" and p.stream == "camera-rgb" for port, p in out)
    assert [p.timestamp_ns for _, p in out] == [1000, 1001, 1002] * 2
    assert {"label", "index", "probs", "max_logit", "confident"} <= set(first)  # clip's payload
    assert first["label"] == "paper towel" and first["confident"] is True  # p = 0.6
    assert len(first["probs"]) == 1000 and first["top_k"][0] == [first["label"], first["prob"]]
    assert len(first["top_k"]) == 5 and "probs" not in out[3][1].payload
    assert out[2][1].payload["confident"] is False  # frame 3: p = 0.29 < 0.5
    assert originals.counters["confident"] == 2 and originals.counters["largest_batch"] == 3
    assert decoded.counters["batches"] == 2
    json.dumps(first)  # travels as JSON
    for (_, o), (_, d) in zip(out[:3], out[3:]):
        retention.handle("original", o)
        retention.handle("decoded", d)
    last = kept[-1][1].payload
    assert (last["all_total"], last["confident_total"]) == (3, 2)
    assert last["all_retained"] == 0 and last["original"] == "paper towel"


def test_node_with_missing_weights_fails_setup_with_one_line(tmp_path):
    node = Classify(name="cls", weights=str(tmp_path / FILE))
    with pytest.raises(ClassifierWeightsError, match=f"mobilenet_v2 weights not found: .*{FILE}"):
        node.setup()
    graph = tmp_path / "g.yaml"
    graph.write_text(f"""
nodes:
  - {{name: glasses, type: aria_rgb, params: {{frames: 1, speed: 0}}}}
  - {{name: cls, type: classify, params: {{weights: {tmp_path / FILE}}}}}
edges:
  - glasses.image -> cls.image
""")
    result = dance("run", graph)   # refused when the graph loads, before any process starts
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert "cls" in errors[0] and f"{tmp_path / FILE} does not exist" in errors[0]


def test_graph_validates():
    if not WEIGHTS.is_file():  # validate checks that the weights file exists
        pytest.skip(f"MobileNetV2 weights not found at {WEIGHTS}")
    result = dance("validate", "graphs/aea_classify.yaml")
    assert result.returncode == 0, result.stderr


# -- dance eval image --classifier -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classify_eval") / "a"
    folder.mkdir()
    return tiny_checkpoint(folder / "tiny.pt", TINY_IMAGE)


@pytest.fixture
def two_frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(sample_image(180, 240, seed=i)).save(folder / f"f{i}.png")
    return folder


def _outputs(tmp_path):
    return ["--report", str(tmp_path / "r.json"), "--plot", str(tmp_path / "q.png"),
            "--figure", str(tmp_path / "fig2.png")]


def test_eval_image_with_the_real_classifier(tmp_path, tiny, two_frames, weights, capsys):
    assert main(["eval", "image", "--codec", str(tiny), "--data", str(two_frames),
                 "--classifier", "mobilenet_v2", "--classifier-weights", str(weights),
                 "--min-confidence", "0", *_outputs(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and "KL" in printed
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["classifier"].startswith("mobilenet_v2 (") and report["clip"] is None
    assert report["classifier_weights"] == str(weights) and report["min_confidence"] == 0
    rows = {m["method"]: m for m in report["methods"]}
    assert list(rows) == ["DANCE a/tiny", "RR+JPEG @ a/tiny", "RR+WebP @ a/tiny"]
    for row in rows.values():
        top1, top5 = row["label_retention"], row["top5_retention"]
        assert top1["total"] == top5["total"] == row["frames"]
        if row["frames"]:
            assert 0 <= top1["rate"] <= top5["rate"] <= 1
            assert top1["ci_low"] <= top1["rate"] <= top1["ci_high"]
            assert row["mean_kl"] >= 0
    assert rows["DANCE a/tiny"]["frames"] == 2


@pytest.mark.parametrize("extra, message", [
    (["--classifier", "mobilenet_v2", "--classifier-weights", "{missing}"],
     "--classifier-weights: mobilenet_v2 weights not found: {missing} does not exist"),
    (["--classifier", "mobilenet_v2", "--clip", "ViT-B-32"],
     "--clip and --classifier are mutually exclusive"),
    (["--classifier-weights", "{missing}"], "--classifier-weights needs --classifier MODEL"),
    (["--min-confidence", "0.5"], "--min-confidence needs --classifier MODEL"),
    (["--classifier", "mobilenet_v2", "--min-confidence", "2"], "--min-confidence 2.0: a "
                                                                 "probability"),
    (["--classifier", "mobilenet_v2", "--curve", "200,400"],
     "--curve cannot be combined with --classifier"),
])
def test_eval_image_bad_classifier_options_are_one_line(tmp_path, tiny, two_frames, capsys,
                                                       extra, message):
    missing = tmp_path / FILE
    extra = [a.format(missing=missing) for a in extra]
    assert main(["eval", "image", "--codec", str(tiny), "--data", str(two_frames), *extra,
                 *_outputs(tmp_path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ")
    assert message.format(missing=missing) in errors[0]
    assert not (tmp_path / "q.png").exists()


def test_eval_image_missing_weights_through_the_cli(tmp_path, tiny, two_frames):
    result = dance("eval", "image", "--codec", tiny, "--data", two_frames,
                   "--classifier", "mobilenet_v2", "--classifier-weights", tmp_path / FILE,
                   *_outputs(tmp_path))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: --classifier-weights: ")
    assert FILE in errors[0]
