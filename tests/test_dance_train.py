"""`dance train` end to end on the sample recording: tiny model, few steps, resume, checkpoint."""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dance import train, zoo
from dance.codec import load_codec

from .conftest import dance

TINY = "dance/configs/train/tiny-image.yaml"
# A tiny model: narrow decoder and latent, 64-pixel crops; seconds per run on one core.
TINY_MODEL = ["--set", "model.decoder.widths=[8,8,8,8,8]", "--set", "model.latent_channels=8",
              "--set", "data.crop=64", "--set", "batch_size=2", "--set", "log_every=1"]


def _overrides(out: Path, steps: int) -> list[str]:
    # float32: bf16 autocast (on where the CPU has AMX) rounds differently in a subprocess with
    # other thread counts, which would hide the resume check's 1e-5 tolerance
    return ["--set", f"out={out}", "--set", f"steps={steps}", "--set", "checkpoint_every=2",
            "--set", "val_every=2", "--set", "amp=false", *TINY_MODEL]


def _train_in_process(out: Path, steps: int, resume: bool = False) -> int:
    sets = [v for k, v in zip(_overrides(out, steps)[::2], _overrides(out, steps)[1::2])]
    return train.main(argparse.Namespace(config=TINY, set=sets, resume=resume, device="cpu"))


def _log(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_train_resume_and_checkpoint(tmp_path, aea_vrs):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    first = dance("train", "--config", TINY, *_overrides(straight, 4), timeout=300)  # as a user would
    assert first.returncode == 0, first.stderr[-2000:]
    assert "holding out its last 1 of 8 frames" in first.stderr  # split by recording/time, noted

    # the final checkpoint is plain tensors + config: loads with weights_only=True
    raw = torch.load(straight / "final.pt", map_location="cpu", weights_only=True)
    assert raw["config"]["latent_channels"] == 8 and raw["config"]["kind"] == "image"
    assert raw["extra"]["summary"]["steps"] == 4
    codec = load_codec(straight / "final.pt")
    frame = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    assert codec.decompress(codec.compress(frame)).shape == frame.shape

    # 2 steps, then --resume to 4: same weights as 4 steps straight (model, optimizers, RNG restored)
    assert _train_in_process(resumed, 2) == 0
    halfway = torch.load(resumed / "last.pt", weights_only=True)
    assert halfway["step"] == 2
    assert _train_in_process(resumed, 4, resume=True) == 0
    steps = [int(r["step"]) for r in _log(resumed) if r["split"] == "train"]
    assert steps == [1, 2, 3, 4]
    a = zoo.load_checkpoint(straight / "final.pt")["state_dict"]
    b = zoo.load_checkpoint(resumed / "final.pt")["state_dict"]
    assert a.keys() == b.keys()
    # equal up to float summation order (~1e-6); a lost RNG or optimizer state shows as >1e-4,
    # the size of the two steps' updates
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert max((a[k] - halfway["model"][k]).abs().max().item() for k in a) > 1e-4

    # the CSV log has validation rows with a PSNR; TensorBoard events exist
    val = [r for r in _log(straight) if r["split"] == "val"]
    assert [int(r["step"]) for r in val] == [2, 4] and all(float(r["quality_db"]) > 0 for r in val)
    assert list((straight / "tensorboard").glob("events.out.tfevents.*"))


def test_ddp_on_two_cpu_processes_with_gloo(tmp_path, aea_vrs):
    # what a multi-GPU run does (torchrun, one process per rank, DistributedDataParallel), on
    # the CPU with the gloo backend: each rank trains on its shard and they end in sync
    out = tmp_path / "ddp"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "dance.train", "--config", TINY, "--device", "cpu", *_overrides(out, 4)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 replicas hold identical weights" in run.stderr
    summary = torch.load(out / "final.pt", weights_only=True)["extra"]["summary"]
    assert summary["steps"] == 4
    assert [int(r["step"]) for r in _log(out) if r["split"] == "train"] == [1, 2, 3, 4]


def _image_folder(path):
    """Two small PNGs: data that exists without ../shared, for checks after the data's."""
    from PIL import Image

    from .dance_testing import sample_image
    path.mkdir()
    for i in range(2):
        Image.fromarray(sample_image(64, 64, seed=i)).save(path / f"{i}.png")
    return f"data.sources=[{path}]"


def test_bad_config_and_data_give_one_line_errors(tmp_path):
    unknown = dance("train", "--config", TINY, "--set", "bogus=1")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines()[-1].startswith("error: --set bogus")
    missing = dance("train", "--config", TINY, "--set", f"out={tmp_path}",
                    "--set", f"data.sources=[{tmp_path}/none.vrs]")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == f"error: {tmp_path}/none.vrs: no such file or folder"
    no_resume = dance("train", "--config", TINY, "--set", f"out={tmp_path / 'fresh'}",
                      "--set", _image_folder(tmp_path / "images"), "--resume")
    assert no_resume.returncode == 2 and "no training state" in no_resume.stderr


@pytest.mark.parametrize("setting, expected", [
    ("lmbda=abc", "lmbda must be a number > 0 or [low, high], got str 'abc'"),
    ("batch_size=2.5", "batch_size must be an integer >= 1, got float 2.5"),
    ("amp=1", "amp must be true, false or auto, got int 1"),
])
def test_typed_config_values_are_one_line_naming_key_and_type(setting, expected):
    result = dance("train", "--config", TINY, "--set", setting)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: --set {setting}: {expected}"


def test_rate_is_bits_per_input_element():
    x = torch.zeros(2, 3, 8, 8)
    likelihoods = torch.full((2, 4, 2, 2), 0.5)  # 1 bit per latent element
    out = {"x_hat": torch.full_like(x, 0.1), "likelihoods": {"y": likelihoods}}
    terms = train.rate_distortion(out, x, lmbda=100.0)
    assert terms["rate"].item() == pytest.approx(likelihoods.numel() / x.numel())
    assert terms["mse"].item() == pytest.approx(0.01)
    assert terms["loss"].item() == pytest.approx(terms["rate"].item() + 100.0 * 0.01)


def test_relative_linear_distortion_weights_loud_passages_in_the_linear_domain(tmp_path):
    from dance.preprocess import AudioPreprocessor, compand
    pre = AudioPreprocessor(channels=2, scale=2.0 ** 26, mu=255.0)
    rng = np.random.default_rng(0)
    linear = rng.normal(0, 1e-4, (2, 2, 480))                       # full-scale floats
    linear[1] *= 30                                                  # a 30x louder example
    x = torch.from_numpy(compand(linear, pre.mu, pre.gain)).float()
    assert torch.allclose(train.expand_torch(x, pre), torch.from_numpy(linear).float(),
                          rtol=1e-3, atol=1e-9)
    noisy_linear = linear * 0.9                                      # -20 dB error on each
    x_hat = torch.from_numpy(compand(noisy_linear, pre.mu, pre.gain)).float()
    out = {"x_hat": x_hat, "likelihoods": {"y": torch.full((2, 4, 4), 0.5)}}
    rel = train.rate_distortion(out, x, 1.0, "relative_linear", pre)
    assert rel["mse"].item() == pytest.approx(0.01, rel=1e-3)      # same relative error: 0.01
    shrunk = train.rate_distortion(out, x, 1.0, "relative_linear", pre, gain_weight=4.0)
    assert shrunk["mse"].item() == pytest.approx(0.04, rel=1e-3)   # all of it is gain error
    plain = train.rate_distortion(out, x, 1.0)
    assert plain["mse"].item() != pytest.approx(0.01, rel=0.1)      # companded MSE differs
    image = dance("train", "--config", TINY, "--set", "distortion=relative_linear",
                  "--set", _image_folder(tmp_path / "images"))
    assert image.returncode == 2 and "distortion" in image.stderr.strip().splitlines()[-1]


def test_overrides_edit_the_resolved_model_and_heuristic_targets(tmp_path):
    config = train.load_config(TINY, ["model.decoder.widths=[8,8,8,8,8]", "lmbda=3"])
    assert config["model"]["name"] == "aria-image-v1" and config["model"]["decoder"]["widths"] == [8] * 5
    assert config["lmbda"] == 3 and config["out"] == "runs/tiny-image"
    spec = tmp_path / "h.yaml"
    spec.write_text("model: {heuristic: {dims: 1, channels: 7, target_ratio: 601}, kind: audio,\n"
                    "        preprocess: {type: audio}}\n")
    audio = train.load_config(spec)["model"]
    assert audio["encoder"]["strides"] == [2, 3, 4, 5] and audio["kind"] == "audio"


def test_command_line_beats_the_configs_model_overrides():
    config = "dance/configs/train/aria-audio.yaml"           # model_overrides: mu 255
    assert train.load_config(config)["model"]["preprocess"]["mu"] == 255.0
    assert train.load_config(config, ["model.preprocess.mu=1000"])["model"]["preprocess"]["mu"] == 1000


def test_cpu_autocast_follows_what_the_cpu_has(monkeypatch):
    cpu = torch.device("cpu")
    assert train._autocast_setting(False, cpu) == (False, torch.bfloat16)
    assert train._autocast_setting(True, cpu) == (True, torch.bfloat16)       # forced
    for speedup, enabled in ((0.01, False), (3.8, True)):                     # emulated / AMX
        monkeypatch.setattr(train, "cpu_bfloat16_speedup", lambda: speedup)
        assert train._autocast_setting("auto", cpu) == (enabled, torch.bfloat16)
    with pytest.raises(train.ConfigError, match="amp"):
        train._autocast_setting("sometimes", cpu)
    monkeypatch.undo()
    assert train.cpu_bfloat16_speedup() > 0                                   # measures
