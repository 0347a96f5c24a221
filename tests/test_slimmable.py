"""The slimmable-ensemble family (seed 001): operating points (ensemble size x bit depth) from one
checkpoint, an encoder that runs only the members a level needs, sandwich-rule training."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dance import bitstream, train, zoo
from dance.analysis import count_macs
from dance.codec import Codec, load_codec
from dance.families.slimmable import SlimmableEnsemble
from dance.models import build_model
from dance.targets import Target
from nodes.codec import Decode, Encode
from pipeline.packet import Packet, image_packet

from .conftest import AEA_VRS, ROOT, dance
from .dance_testing import sample_image, tiny_checkpoint

TINY_SLIM = {
    "name": "tiny-slim", "kind": "image", "family": "slimmable", "dims": 2, "in_channels": 3,
    "latent_channels": 8, "members": 3,
    "encoder": {"pool": 2, "widths": [8, 8, 8], "kernels": [3, 3, 3, 3], "strides": [2, 2, 2, 2]},
    "decoder": {"widths": [16, 8, 8, 8, 8], "attention": False, "upsample": "subpel"},
    "bit_depths": [2, 4, 8], "random_sizes": 1, "preprocess": {"type": "image"},
}


@pytest.fixture(scope="module")
def slim_codec(tmp_path_factory) -> Codec:
    return load_codec(tiny_checkpoint(tmp_path_factory.mktemp("slim") / "slim.pt", TINY_SLIM))


def test_levels_are_sizes_by_bit_depths_and_forward_runs_at_each():
    model = build_model(TINY_SLIM)
    assert isinstance(model, SlimmableEnsemble) and model.levels == 9
    # ordered by bit depth, then ensemble size: level 0 = one member at 2 bits
    assert [model.point(k) for k in range(9)] == [(m, d) for d in range(3) for m in (1, 2, 3)]
    for level in range(9):
        members, depth = model.point(level)
        assert model.level_of(members, model.bit_depths[depth]) == level
    assert model.entropy_bottleneck.steps.tolist() == pytest.approx([2 / 3, 2 / 15, 2 / 255])
    x = torch.rand(2, 3, 64, 64)
    for training in (True, False):
        model.train(training)
        for level in range(model.levels):
            out = model(x, level)
            assert out["x_hat"].shape == x.shape
            likelihoods = out["likelihoods"]["y"]
            assert likelihoods.shape == (2, 8, 2, 2) and torch.isfinite(likelihoods).all()
    with pytest.raises(ValueError, match="bit_depths"):
        build_model({**TINY_SLIM, "bit_depths": [4, 2]})
    with pytest.raises(ValueError, match="members"):
        build_model({**TINY_SLIM, "members": 0})


def test_every_level_round_trips_real_entropy_coded_bytes(slim_codec):
    model, pixels = slim_codec.model, sample_image(70, 90)
    sizes = {}
    for level in range(model.levels):
        data = slim_codec.compress(pixels, target=Target(level=level))
        container = bitstream.unpack(data)
        assert container.family == "slimmable" and container.level == level
        out = slim_codec.decompress(data)
        assert out.shape == pixels.shape and out.dtype == np.uint8
        sizes[model.point(level)] = len(data)
    for members in (1, 2, 3):    # more bits, more bytes, for every ensemble size
        assert sizes[(members, 0)] < sizes[(members, 1)] < sizes[(members, 2)]
    # the string is the latent's symbols, entropy-coded: it decodes to exactly them
    x = torch.rand(1, 3, 32, 32)
    for level in (0, 4, 8):
        outputs = slim_codec.encoder_at(level)(x)
        members, depth = model.point(level)
        strings, shapes = model.code(outputs, level)
        prior = model.entropy_bottleneck
        symbols = torch.from_numpy(prior.symbols(outputs[members - 1][0], depth)[0])
        assert torch.equal(prior.decode(strings[0], shapes[0], depth),
                           prior.dequantize(symbols.reshape(shapes[0]), depth))
    with pytest.raises(ValueError, match="encoder ran 1"):
        model.code(slim_codec.encoder_at(0)(x), 8)


def test_a_level_runs_only_its_members_with_shared_weights(slim_codec):
    full = slim_codec.encoder
    calls = []
    hooks = [member.register_forward_hook(lambda mod, i, o, k=k: calls.append(k))
             for k, member in enumerate(full.members)]
    try:
        for level, ran in ((0, [0]), (4, [0, 1]), (8, [0, 1, 2]), (2, [0, 1, 2])):
            calls.clear()
            slim_codec.compress(sample_image(64, 64), target=Target(level=level))
            assert calls == ran
        calls.clear()
        slim_codec.compress(sample_image(64, 64), target=Target(ratio=50))   # a search: all
        assert calls == [0, 1, 2]
    finally:
        for hook in hooks:
            hook.remove()
    x = torch.rand(1, 3, 64, 64)
    macs = [count_macs(slim_codec.encoder_at(level), x)["conv"] for level in (0, 1, 2)]
    assert macs[1] == 2 * macs[0] and macs[2] == 3 * macs[0]
    one = slim_codec.encoder_at(0)
    assert one is slim_codec.encoder_at(3) and one.members[0] is full.members[0]
    assert all(a.data_ptr() == b.data_ptr() for a, b in
               zip(one.members[0].parameters(), full.members[0].parameters()))


def test_the_combined_latent_keeps_its_range_across_ensemble_sizes():
    torch.manual_seed(0)
    model = build_model({**TINY_SLIM, "members": 4}).eval()
    x = torch.from_numpy(sample_image(128, 128).transpose(2, 0, 1).copy()).float()[None] / 255
    with torch.no_grad():
        spread = [float(model.latent(x, m).std()) for m in (1, 2, 3, 4)]
        assert all(0.75 < s / spread[0] < 1.33 for s in spread), spread
        encoder = model.export_encoder()
        exported = encoder(x)
    assert len(exported) == 4 and all(y.abs().max() < 1 for y in exported)
    assert torch.allclose(exported[1], model.latent(x, 2), atol=1e-5)


def test_sandwich_levels_hold_both_ends_and_lmbda_follows_the_bit_depth():
    model = build_model({**TINY_SLIM, "members": 4, "random_sizes": 1})
    rng, ends = random.Random(0), set()
    for _ in range(200):
        points = model.training_levels(rng)
        sizes = [model.point(level)[0] for level, _ in points]
        assert sizes[0] == 1 and sizes[-1] == 4 and len(sizes) == 3 and 1 < sizes[1] < 4
        for level, position in points:
            depth = model.point(level)[1]
            assert position == depth * (model.levels - 1) / 2     # λ ladder over bit depths only
            ends.add((model.point(level)[0], depth))
    assert {(1, d) for d in range(3)} | {(4, d) for d in range(3)} <= ends
    two = build_model({**TINY_SLIM, "members": 2, "random_sizes": 3})
    assert [two.point(level)[0] for level, _ in two.training_levels(random.Random(1))] == [1, 2]


def test_trainer_averages_the_loss_over_the_sandwich(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(sample_image(64, 64, seed=i)).save(images / f"{i}.png")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({
        "model": TINY_SLIM, "data": {"sources": [str(images)], "crop": 64}, "lmbda": [1.0, 100.0],
        "batch_size": 2, "threads": 1, "amp": False, "out": str(tmp_path / "run")}))
    trainer = train.Trainer(train.load_config(tmp_path / "t.yaml"), torch.device("cpu"),
                            train.Dist(), False)
    batch, seen = next(iter(trainer.loader)), []
    hook = trainer.model.register_forward_hook(lambda mod, args, out: seen.append(args[1]))
    points = trainer.model.training_levels(random.Random(3))
    random.seed(3)                     # the trainer draws from the global, checkpointed RNG
    terms = trainer.gradients(batch)
    hook.remove()
    assert seen == [level for level, _ in points] and len(seen) == 3
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for member in trainer.model.members for p in member.parameters())
    assert float(terms["loss"]) > 0 and {"rate", "mse"} <= set(terms)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step `dance train` of the tiny slimmable config on crops of the sample recording."""
    if not AEA_VRS.exists():
        pytest.skip(f"sample AEA recording not found at {AEA_VRS} (needs ../shared beside the repo)")
    tmp = tmp_path_factory.mktemp("slim-train")
    (tmp / "train.yaml").write_text(yaml.safe_dump({
        "model": TINY_SLIM, "data": {"sources": [str(AEA_VRS)], "crop": 64},
        "lmbda": [1.0, 100.0], "batch_size": 2, "steps": 3, "threads": 1, "log_every": 1,
        "val_every": 3, "checkpoint_every": 3, "amp": False, "out": str(tmp / "run"),
        "final": str(tmp / "slim.pt")}))
    result = dance("train", "--config", tmp / "train.yaml", timeout=600,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp / "slim.pt"


def test_dance_train_writes_a_checkpoint_that_decodes_per_packet_levels(trained):
    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    assert ckpt["config"]["family"] == "slimmable" and ckpt["entropy"]["steps"].numel() == 3
    assert zoo.load_checkpoint(trained)["hash"] == ckpt["hash"]
    encoder = Encode(checkpoint=str(trained), level=0)
    sent = []
    encoder.attach(lambda port, packet: sent.append(packet), threading.Event())
    encoder.setup()
    frames = [sample_image(96, 128, seed=i) for i in range(5)]
    for i, (frame, level) in enumerate(zip(frames, (0, 8, 4, 1, 8))):
        encoder.handle("control", Packet("ctl", i, i, {"level": level}))
        encoder.handle("image", image_packet("rgb", i, i, frame))
    assert [bitstream.unpack(p.payload).level for p in sent] == [0, 8, 4, 1, 8]
    decoder, decoded = Decode(checkpoint=str(trained)), []
    decoder.attach(lambda port, packet: decoded.append(packet), threading.Event())
    decoder.setup()
    for packet in sent:
        decoder.handle("encoded", packet)
    codec = load_codec(trained)
    assert len(decoded) == 5
    for packet, out in zip(sent, decoded):
        assert np.array_equal(out.payload, codec.decompress(packet.payload))


def test_operating_point_table_goes_into_a_copy_of_the_checkpoint(trained, tmp_path):
    out = tmp_path / "points.pt"
    result = subprocess.run([sys.executable, "benchmarks/slim_points.py", str(trained), "--data",
                             str(AEA_VRS), "--frames", "0:1", "--crop", "128", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    print(result.stdout)      # the table and the switching cost (pytest -s shows them)
    assert "switching levels" in result.stdout
    copy = zoo.load_checkpoint(out)
    assert copy["hash"] == zoo.load_checkpoint(trained)["hash"]
    rows = copy["extra"]["points"]
    assert [r["level"] for r in rows] == list(range(9))
    assert [(r["members"], r["bit_depth"]) for r in rows[:4]] == [(1, 2), (2, 2), (3, 2), (1, 4)]
    for members in (1, 2, 3):
        sizes = [r["bytes"] for r in rows if r["members"] == members]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert all(r["encoder_ms"] > 0 and 0 < r["psnr_db"] < 100 for r in rows)
    bad = subprocess.run([sys.executable, "benchmarks/slim_points.py", str(tmp_path / "none.pt"),
                          "--data", str(AEA_VRS)], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_onnxruntime_engine_runs_each_member_count_once(tmp_path):
    path = tiny_checkpoint(tmp_path / "slim.pt", TINY_SLIM)
    codec = load_codec(path, engine="onnxruntime")
    pixels = sample_image(64, 64)
    for level in (0, 3, 8, 2):
        data = codec.compress(pixels, target=Target(level=level))
        assert bitstream.unpack(data).level == level
        assert codec.decompress(data).shape == pixels.shape
    assert len(codec._part_runners) == 2      # sizes 1 and 3 (levels 0 and 3 share one)
