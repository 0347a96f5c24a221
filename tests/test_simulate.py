"""dance.simulate with real mono recordings as sources: the split by recording, clips that are
deterministic and agree with the Aria geometry, transients, background, and the caching CLI.

Tests that need ../shared/data/train/audio are skipped when it is absent."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from dance import simulate
from dance.geometry import SPEED_OF_SOUND

from .conftest import ROOT, SHARED

AUDIO = SHARED / "data" / "train" / "audio"
FS = simulate.SAMPLE_RATE
needs_audio = pytest.mark.skipif(not AUDIO.is_dir(),
                                 reason=f"training recordings not found at {AUDIO} "
                                        "(needs ../shared beside the repo)")


@pytest.fixture(scope="module")
def heldout() -> list[np.ndarray]:
    return simulate.load_recordings(AUDIO, "heldout")


def _gcc_phat_lag(y: np.ndarray, ref: np.ndarray, max_lag: int) -> int:
    """Lag of y against ref (samples) at the GCC-PHAT peak, 200 Hz-8 kHz, searched within ±max_lag."""
    size = 2 * len(y)
    cross = np.fft.rfft(y, size) * np.conj(np.fft.rfft(ref, size))
    f = np.fft.rfftfreq(size, 1 / FS)
    cc = np.fft.irfft(np.where((f > 200) & (f < 8000), cross / (np.abs(cross) + 1e-12), 0), size)
    lags = np.r_[np.arange(max_lag + 1), np.arange(-max_lag, 0)]
    return int(lags[np.argmax(cc[lags])])


# ----------------------------------------------------------------------------- recordings

@needs_audio
def test_split_by_file_name_is_disjoint_covers_every_file_and_holds_out_about_15_percent():
    train, held = simulate.split_files(AUDIO, "train"), simulate.split_files(AUDIO, "heldout")
    every = sorted(p for p in AUDIO.rglob("*") if p.suffix.lower() in {".flac", ".wav"})
    assert not set(train) & set(held)
    assert sorted(train + held) == every
    assert 0.1 < len(held) / len(every) < 0.2
    # the split is a hash of the name alone: these must never change sides
    names = ("alsa_001.flac", "alsa_002.flac", "alsa_005.flac", "pyannote_001.flac")
    assert [simulate.split_of(n) for n in names] == ["train", "heldout", "heldout", "train"]
    assert {simulate.split_of(p.name) for p in held} == {"heldout"}


def test_include_keeps_only_matching_names_of_the_split(tmp_path):
    names = [f"{kind}_{i}.wav" for kind in ("speech", "music") for i in range(30)]
    for name in names:
        sf.write(tmp_path / name, np.zeros(100), FS)
    held = [n for n in names if simulate.split_of(n) == "heldout"]
    chosen = [p.name for p in simulate.split_files(tmp_path, "heldout", "speech_*, music_1*")]
    assert chosen == sorted(n for n in held if n.startswith("speech_") or n.startswith("music_1"))
    assert chosen and set(chosen) < set(held)
    with pytest.raises(ValueError, match="no heldout file matches --include 'noise_\\*'"):
        simulate.split_files(tmp_path, "heldout", "noise_*")
    assert simulate.main(["--out", str(tmp_path / "o"), "--include", "speech_*"]) == 2


def test_read_mono_averages_channels_and_resamples_to_48k(tmp_path):
    t = np.arange(16000) / 16000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    sf.write(tmp_path / "a.wav", stereo, 16000)
    x = simulate.read_mono(tmp_path / "a.wav")
    assert x.dtype == np.float32 and len(x) == 48000
    np.testing.assert_allclose(np.abs(x[1000:-1000]).max(), 0.375, atol=0.01)  # (0.5 + 0.25) / 2
    (tmp_path / "broken.flac").write_bytes(b"fLaC garbage")
    with pytest.raises(ValueError, match="broken.flac: cannot read audio"):
        simulate.read_mono(tmp_path / "broken.flac")


def test_load_recordings_skips_short_files_and_names_problems(tmp_path):
    train_names = [n for n in (f"clip{i}.wav" for i in range(50)) if simulate.split_of(n) == "train"]
    sf.write(tmp_path / train_names[0], np.full(int(0.5 * FS), 0.1), FS)
    sf.write(tmp_path / train_names[1], np.full(int(0.2 * FS), 0.1), FS)  # under 0.3 s: skipped
    assert [len(x) for x in simulate.load_recordings(tmp_path, "train")] == [int(0.5 * FS)]
    with pytest.raises(ValueError, match="sources folder not found"):
        simulate.load_recordings(tmp_path / "missing", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .* files in this folder"):
        simulate.load_recordings(tmp_path / "empty", "train")


def test_recording_track_fills_the_clip_with_short_gaps_from_a_random_entry_point():
    recordings = [np.full(int(0.4 * FS), 1.0), np.full(int(0.5 * FS), -1.0)]
    starts_silent = []
    for seed in range(20):
        track = simulate.recording_track(np.random.default_rng(seed), recordings, 3 * FS)
        assert len(track) == 3 * FS
        silent = np.r_[0, (track == 0).astype(int), 0]
        edges = np.flatnonzero(np.diff(silent))
        assert np.all(edges[1::2] - edges[::2] <= simulate.MAX_GAP_SECONDS * FS)
        assert np.all(np.abs(track[track != 0]) >= 10 ** (-6 / 20) - 1e-9)
        starts_silent.append(track[0] == 0)
    assert not all(starts_silent)


# ----------------------------------------------------------------------------- scenes and clips

def test_transients_are_short_decaying_bursts():
    assert "transient" in simulate.SOURCE_KINDS and abs(sum(simulate.SOURCE_PROBS.values()) - 1) < 1e-9
    x = simulate.transients(np.random.default_rng(4), 2 * FS)
    kurtosis = np.mean((x - x.mean()) ** 4) / np.var(x) ** 2
    assert kurtosis > 10  # impulsive: most of the energy in a few short bursts


def test_sources_are_0_3_to_4_m_from_the_head_inside_the_room_and_backgrounds_appear():
    backgrounds = []
    for seed in range(40):
        scene = simulate.random_scene(np.random.default_rng(seed), 0.3)
        centre = scene.mic_positions.mean(axis=0)  # within 0.1 m of the head
        for s in scene.sources + scene.background:
            assert np.all(s.positions >= 0.2 - 1e-9) and np.all(s.positions <= scene.room_dim - 0.2 + 1e-9)
            assert np.linalg.norm(s.positions - centre, axis=1).min() > 0.3 - 0.1
        for s in scene.sources:
            if len(s.positions) == 1:
                assert np.linalg.norm(s.positions[0] - centre) < 4 + 0.1
        backgrounds.append(len(scene.background))
    assert 0.1 < np.mean(np.array(backgrounds) > 0) < 0.5
    assert set(backgrounds) - {0} <= set(range(4, 9))


def test_background_is_as_far_below_the_sources_active_level_as_drawn():
    seed = next(s for s in range(100) if simulate.random_scene(np.random.default_rng(s), 0.5).background)
    scene = simulate.random_scene(np.random.default_rng(seed), 0.5)
    full = simulate.render_scene(scene)
    sources = simulate.render_scene(dataclasses.replace(scene, background=[]))
    measured = 20 * np.log10(simulate.active_rms(sources) / np.std(full - sources))  # the noise is steady
    assert 15 <= scene.background_db <= 30
    assert abs(measured - scene.background_db) < 0.5
    # far static sources in a room: partly coherent across the mics, far from identical
    noise = full - sources
    coherence = np.corrcoef(noise[:, 0], noise[:, 5])[0, 1]
    assert 0.05 < abs(coherence) < 0.95


@needs_audio
def test_real_source_clips_are_deterministic_7_channel_int32_and_agree_with_the_geometry(heldout,
                                                                                          monkeypatch):
    monkeypatch.setattr(simulate, "REAL_SOURCE_PROB", 1.0)  # every source a real recording
    a = simulate.simulate_clip(11, 0.5, heldout)
    assert a.dtype == np.int32 and a.shape == (FS // 2, 7)
    assert np.array_equal(a, simulate.simulate_clip(11, 0.5, heldout))
    assert not np.array_equal(a, simulate.simulate_clip(11, 0.5))  # synthetic sources differ
    spacing = np.linalg.norm(simulate.ARIA_MIC_POSITIONS[0] - simulate.ARIA_MIC_POSITIONS[5])
    max_lag = spacing / SPEED_OF_SOUND * FS
    for seed in (11, 12, 13):
        clip = simulate.simulate_clip(seed, 0.5, heldout).astype(np.float64)
        sound = signal.sosfiltfilt(signal.butter(4, 100, "highpass", fs=FS, output="sos"), clip, axis=0)
        assert np.all(sound.std(axis=0) > 1e5)  # well above the noise floor (std <= 6e4) on every mic
        assert abs(_gcc_phat_lag(sound[:, 5], sound[:, 0], 200)) <= max_lag + 2


# ----------------------------------------------------------------------------- CLI

@needs_audio
def test_cli_caches_clips_adds_only_missing_ones_and_refuses_other_settings(tmp_path, heldout, capsys):
    out = tmp_path / "sim"
    args = ["--out", str(out), "--seconds", "0.5", "--seed", "3", "--sources", str(AUDIO),
            "--split", "heldout"]
    assert simulate.main([*args, "--count", "1"]) == 0
    first = (out / "sim_000003.wav").stat()
    assert simulate.main([*args, "--count", "3", "--workers", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["sim_000003.wav", "sim_000004.wav", "sim_000005.wav",
                                                     "simulation.json"]
    assert (out / "sim_000003.wav").stat().st_mtime_ns == first.st_mtime_ns  # kept, not rewritten
    audio, rate = sf.read(out / "sim_000005.wav", dtype="int32")
    assert rate == FS and np.array_equal(audio, simulate.simulate_clip(5, 0.5, heldout))  # same in a worker
    settings = json.loads((out / "simulation.json").read_text())
    assert settings["seconds"] == 0.5 and settings["split"] == "heldout"
    assert settings["sources"] == str(AUDIO.resolve())
    capsys.readouterr()
    assert simulate.main([*args[:2], "--seconds", "1", "--seed", "3", "--sources", str(AUDIO), "--split",
                          "heldout", "--count", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {out} holds clips made with other settings (seconds 0.5")
    assert err[0].endswith("; use another --out") and not (out / "sim_000006.wav").exists()


@pytest.mark.parametrize("extra, message", [
    (["--count", "0"], "--count and --seconds must be positive"),
    (["--sources", "MISSING"], "sources folder not found"),
    (["--sources", "EMPTY"], "no .flac/.wav files in this folder"),
    (["--split", "heldout"], "--split and --include need --sources"),
])
def test_bad_arguments_give_one_error_line_and_exit_2(tmp_path, capsys, extra, message):
    (tmp_path / "EMPTY").mkdir()
    extra = [str(tmp_path / e) if e in ("MISSING", "EMPTY") else e for e in extra]
    assert simulate.main(["--out", str(tmp_path / "out"), "--seconds", "0.2", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "out").exists()


def test_bad_arguments_from_the_command_line_print_no_traceback(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dance.simulate", "--out", str(tmp_path / "out"),
                          "--sources", str(tmp_path / "missing")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {tmp_path / 'missing'}: sources folder not found"
