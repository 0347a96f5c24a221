"""Training datasets (real sample VRS, image and WAV folders) and the spatial-audio simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from scipy import signal

from dance import data, simulate
from dance.geometry import SPEED_OF_SOUND

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SAMPLE_VRS = SHARED / "data" / "aea" / "recording.vrs"
needs_sample = pytest.mark.skipif(not SAMPLE_VRS.is_file(),
                                  reason=f"sample recording not found at {SAMPLE_VRS} (../shared is absent)")


# ----------------------------------------------------------------------------- datasets

@needs_sample
def test_vrs_frames_single_recording_holds_out_last_frame_in_time():
    splits = data.build_datasets({"sources": [str(SAMPLE_VRS)], "crop": 96, "val_fraction": 0.1}, "image")
    assert len(splits.train) == 7 and len(splits.val) == 1
    assert "last 1 of 8 frames" in splits.notes[0]
    item = splits.train[0]
    assert item.dtype == torch.uint8 and item.shape == (3, 96, 96)
    # validation crops are centred and deterministic; the held-out frame is frame 7
    full = data.read_vrs_frame(data.open_vrs(SAMPLE_VRS), SAMPLE_VRS, 7)
    c = (1408 - 96) // 2
    expected = torch.from_numpy(full[c:c + 96, c:c + 96].transpose(2, 0, 1).copy())
    assert torch.equal(splits.val[0], expected)


@needs_sample
def test_vrs_audio_segments_are_int32_frames_by_seven():
    seg = int(0.05 * data.AUDIO_RATE)
    ds = data.VrsAudio([SAMPLE_VRS], seg, crop=None, train=False)
    assert len(ds) == 16384 // seg  # 4 records x 4096 samples
    first = ds[0]
    assert first.dtype == torch.int32 and first.shape == (7, seg)
    raw = data.read_vrs_audio(data.open_vrs(SAMPLE_VRS), SAMPLE_VRS)
    assert raw.shape == (16384, 7)
    # a segment that straddles two 4096-sample records reads the right samples
    k = 4096 // seg
    assert torch.equal(ds[k], torch.from_numpy(raw[k * seg:(k + 1) * seg].T.copy()))


@needs_sample
def test_short_recording_is_padded_or_skipped(capsys):
    six_seconds = 6 * data.AUDIO_RATE
    padded = data.VrsAudio([SAMPLE_VRS], six_seconds, crop=None, train=False, short="pad")
    assert len(padded) == 1 and padded[0].shape == (7, six_seconds)
    assert torch.equal(padded[0][:, -1], padded[0][:, 16383])  # edge values, not zeros
    skipped = data.VrsAudio([SAMPLE_VRS], six_seconds, crop=None, train=False, short="skip")
    assert len(skipped) == 0
    assert "shorter than one 6.000 s segment; skipped" in capsys.readouterr().err


def test_split_by_recording_never_shares_a_file(tmp_path):
    files = []
    for i in range(10):
        path = tmp_path / f"clip{i}.wav"
        samples = (np.arange(4800 * 7).reshape(4800, 7) * (i + 1)).astype(np.int32)
        sf.write(path, samples, 48000, subtype="PCM_32")
        files.append(path)
    splits = data.build_datasets({"sources": [str(tmp_path)], "segment_seconds": 0.025, "val_fraction": 0.2},
                                 "audio", seed=3)
    train_files = {s.path for part in splits.train.datasets for s in part.index}
    val_files = {s.path for part in splits.val.datasets for s in part.index}
    assert len(val_files) == 2 and len(train_files) == 8 and not train_files & val_files
    assert len(splits.train) == 8 * 4 and splits.train[0].shape == (7, 1200)
    # the split is a function of the seed, not of the run
    again = data.build_datasets({"sources": [str(tmp_path)], "segment_seconds": 0.025, "val_fraction": 0.2},
                                "audio", seed=3)
    assert {s.path for part in again.val.datasets for s in part.index} == val_files


def test_image_folder_random_crops_and_padding(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    ds = data.ImageFiles(sorted(tmp_path.glob("*.png")), crop=48, train=True)
    assert ds[0].shape == (3, 48, 48) and ds[0].dtype == torch.uint8  # 40 rows padded to 48
    torch.manual_seed(0)
    a = ds[2]
    torch.manual_seed(0)
    assert torch.equal(a, ds[2])  # crops come from torch's RNG, so resuming restores them


def test_missing_and_corrupt_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(data.DataError, match="no such file or folder"):
        data.find_recordings([tmp_path / "nope"], data.IMAGE_SUFFIXES)
    bad = tmp_path / "bad.vrs"
    bad.write_bytes(b"not a vrs file" * 10)
    with pytest.raises(data.DataError, match="bad.vrs"):
        data.build_datasets({"sources": [str(bad)]}, "image")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG garbage")
    with pytest.raises(data.DataError, match="broken.png: cannot read image"):
        data.ImageFiles([broken], crop=None, train=False)[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.DataError, match="no .* files in this folder"):
        data.find_recordings([empty], data.AUDIO_SUFFIXES)


# ----------------------------------------------------------------------------- simulator

def test_simulated_clip_is_deterministic_int32_with_real_mic_offsets():
    a = simulate.simulate_clip(7, 0.5)
    b = simulate.simulate_clip(7, 0.5)
    c = simulate.simulate_clip(8, 0.5)
    assert a.dtype == np.int32 and a.shape == (24000, 7)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    means = np.abs(a.astype(np.float64).mean(axis=0))
    # DC offsets of the real mics (4e4..4.7e7 counts), different per channel, plus drift
    assert means.max() > 1e6 and len(np.unique(np.round(means, -3))) == 7
    assert np.all(a.astype(np.float64).std(axis=0) > 1e5)


def _delay(y: np.ndarray, ref: np.ndarray) -> float:
    """Lag (samples, sub-sample by parabolic fit) of the cross-correlation peak of y against ref."""
    cc = signal.correlate(y, ref, mode="full")
    lags = signal.correlation_lags(len(y), len(ref))
    k = int(np.argmax(cc))
    a, b, c = cc[k - 1], cc[k], cc[k + 1]
    return lags[k] + 0.5 * (a - c) / (a - 2 * b + c)


def test_inter_mic_delays_match_the_aria_geometry():
    rng = np.random.default_rng(1)
    head = np.array([2.0, 2.5, 1.6])
    mics = head + simulate.ARIA_MIC_POSITIONS
    source = np.array([4.5, 1.0, 1.2])
    scene = simulate.Scene(room_dim=np.array([6.0, 5.0, 3.0]), absorption=1.0, max_order=0,
                           mic_positions=mics,
                           sources=[simulate.Source(rng.standard_normal(24000), source[None])])
    y = simulate.render_scene(scene)
    distance = np.linalg.norm(mics - source, axis=1)
    expected = (distance - distance[0]) / SPEED_OF_SOUND * simulate.SAMPLE_RATE
    measured = np.array([_delay(y[:, m], y[:, 0]) for m in range(7)])
    np.testing.assert_allclose(measured, expected, atol=0.3)
    # the array spans ~0.17 m: no pair can be more than ~24 samples apart
    span = max(np.linalg.norm(p - q) for p in simulate.ARIA_MIC_POSITIONS
               for q in simulate.ARIA_MIC_POSITIONS)
    assert np.abs(measured).max() <= span / SPEED_OF_SOUND * simulate.SAMPLE_RATE + 0.5


def test_moving_source_delay_follows_its_path():
    """A source walking past the array: the mic0-mic5 delay changes sign like the geometry says."""
    n = simulate.SAMPLE_RATE
    hop = int(simulate.MOVING_HOP_SECONDS * simulate.SAMPLE_RATE)
    hops = n // hop + 2
    head = np.array([3.0, 3.0, 1.6])
    mics = head + simulate.ARIA_MIC_POSITIONS
    axis = simulate.ARIA_MIC_POSITIONS[5] - simulate.ARIA_MIC_POSITIONS[0]
    axis /= np.linalg.norm(axis)
    path = head + np.outer(np.linspace(-2.0, 2.0, hops), axis) + 0.8 * np.cross(axis, [0, 0, 1])
    rng = np.random.default_rng(2)
    scene = simulate.Scene(room_dim=np.array([6.0, 6.0, 3.0]), absorption=1.0, max_order=0,
                           mic_positions=mics, sources=[simulate.Source(rng.standard_normal(n), path)])
    y = simulate.render_scene(scene)
    quarter = n // 4
    early = _delay(y[:quarter, 5], y[:quarter, 0])
    late = _delay(y[-quarter:, 5], y[-quarter:, 0])
    assert early > 2 and late < -2  # source first nearer mic0, later nearer mic5


def test_simulate_cli_writes_readable_wavs(tmp_path):
    assert simulate.main(["--out", str(tmp_path), "--count", "2", "--seconds", "0.2", "--seed", "5"]) == 0
    files = sorted(tmp_path.glob("*.wav"))
    assert [f.name for f in files] == ["sim_000005.wav", "sim_000006.wav"]
    audio, rate = sf.read(files[0], dtype="int32")
    assert rate == 48000 and audio.shape == (9600, 7)
    assert np.array_equal(audio, simulate.simulate_clip(5, 0.2))  # PCM_32 WAV is lossless
    ds = data.AudioFiles(files, segment_frames=4800, crop=None, train=False, channels=7)
    assert len(ds) == 4 and ds[0].dtype == torch.int32
