"""Simulated 7-channel spatial audio on the Project Aria microphone geometry.

The public sample recording holds 0.34 s of audio, far too little to train an audio codec, so audio
codecs train on clips from this generator (the default ``aria-audio`` checkpoint on its first,
synthetic-only version): random shoebox rooms
(pyroomacoustics image-source RIRs) with the glasses at head height, 1-3 static or moving sources
0.3-4 m from the head, rendered by windowed overlap-add of per-position RIRs, sometimes a quiet
diffuse background (pink noise from 4-8 far sources), then the per-channel DC offset, slow drift
and noise floor measured on the real microphones, as int32 counts at 48 kHz.

Source signals are synthetic (glottal-pulse speech with formants, noise bursts, tones and chirps,
transients; nothing is downloaded) or, when mono recordings are given (:func:`load_recordings`,
e.g. ``../shared/data/train/audio``), mostly real recordings strung together with short gaps.
Recordings are split into "train" and "heldout" by a hash of the file name, so a held-out set
never replays a recording the training set used.

Everything is deterministic from the seed (and the recordings).  ``python -m dance.simulate --out
DIR --count N [--sources FOLDER --split train|heldout] [--workers W]`` writes a folder of 7-channel
PCM_32 WAV files that the WAV dataset in :mod:`dance.data` reads; re-running it only adds missing
clips, and ``DIR/simulation.json`` keeps clips made with other settings out of the folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatch
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
import torch
from scipy import signal

from .data import AUDIO_SUFFIXES, SPLITS, split_of
from .aria import MIC_CHANNELS as NUM_MICS
from .aria import MIC_SAMPLE_RATE as SAMPLE_RATE
from .geometry import ARIA_MIC_POSITIONS

# Bump when the same seed and settings would give a different clip: folders record it.
GENERATOR_VERSION = 2

# Real-microphone artefacts measured on the sample recording (counts): DC offsets ~4e4..4.7e7 with
# either sign, sub-20 Hz drift with std ~0.5e6..2e6, acoustic band std ~1.5e5..6e5, noise ~2e4..9e4.
DC_OFFSET_RANGE = (4e4, 4.7e7)
DRIFT_STD_RANGE = (0.5e6, 2e6)
ACOUSTIC_STD_RANGE = (1.5e5, 6e5)
NOISE_STD_RANGE = (1e4, 6e4)

MOVING_HOP_SECONDS = 0.05
MAX_IMAGE_ORDER = 10

SOURCE_DISTANCE = (0.3, 4.0)  # metres from the head, log-uniform: near talkers are common
BACKGROUND_PROB = 0.3
BACKGROUND_SOURCES = (4, 8)
BACKGROUND_DISTANCE = (2.0, 6.0)
BACKGROUND_DB_BELOW = (15.0, 30.0)  # at the mics, below the main sources

REAL_SOURCE_PROB = 0.7
MAX_GAP_SECONDS = 0.6
MIN_RECORDING_SECONDS = 0.3


def mic_positions_from_vrs(vrs_path: str | Path) -> np.ndarray:
    """Read the 7 microphone positions (7, 3) in metres from a VRS file's device calibration."""
    from .vrs import open_provider

    calib = open_provider(Path(vrs_path))[0].get_device_calibration()
    if calib is None:
        raise ValueError(f"{vrs_path}: the recording has no device calibration")
    return np.array(
        [np.asarray(calib.get_transform_device_sensor(f"mic{i}", True).translation()).reshape(3)
         for i in range(NUM_MICS)]
    )


# ----------------------------------------------------------------------------- source signals

def _envelope(rng: np.random.Generator, n: int, fs: int, mean_on: float, mean_off: float) -> np.ndarray:
    """On/off activity with short raised-cosine ramps, so sources start and stop like real ones."""
    env = np.zeros(n)
    t = int(rng.uniform(0, mean_off) * fs)
    while t < n:
        length = int(rng.exponential(mean_on) * fs) + fs // 20
        ramp = min(fs // 100, length // 2)
        seg = np.ones(length)
        seg[:ramp] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
        seg[-ramp:] = seg[:ramp][::-1]
        env[t:t + length] = seg[: max(0, min(length, n - t))]
        t += length + int(rng.exponential(mean_off) * fs)
    return env


def speech_like(rng: np.random.Generator, n: int, fs: int = SAMPLE_RATE) -> np.ndarray:
    """Voiced/unvoiced syllables: a jittered glottal pulse train through moving formant resonators."""
    f0_base = rng.uniform(90, 240)
    t = np.arange(n) / fs
    f0 = f0_base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t + rng.uniform(0, 6.3)))
    f0 *= 1 + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(n)
    phase = np.cumsum(f0 / fs)
    # Rosenberg-like pulse: sharp closing edge every period, then a glottal low-pass tilt.
    frac = phase % 1.0
    pulses = np.where(frac < 0.6, np.sin(np.pi * frac / 0.6) ** 2, 0.0)
    pulses = np.diff(pulses, prepend=0.0)
    noise = rng.standard_normal(n) * 0.02
    out = np.zeros(n)
    syllable = int(rng.uniform(0.12, 0.3) * fs)
    for start in range(0, n, syllable):
        stop = min(n, start + syllable)
        voiced = rng.random() < 0.8
        excitation = pulses[start:stop] if voiced else noise[start:stop] * 10
        seg = np.zeros(stop - start)
        for lo, hi, bw in ((250, 900, 80), (800, 2500, 120), (2000, 3500, 200)):
            fc = rng.uniform(lo, hi)
            b, a = _resonator(fc, bw, fs)
            seg += signal.lfilter(b, a, excitation) * rng.uniform(0.3, 1.0)
        win = np.hanning(stop - start) ** 0.3
        out[start:stop] += seg * win
    return out * _envelope(rng, n, fs, mean_on=1.2, mean_off=0.4)


def _resonator(fc: float, bandwidth: float, fs: int) -> tuple[np.ndarray, np.ndarray]:
    """Second-order formant resonator (pole pair at fc with the given bandwidth)."""
    r = np.exp(-np.pi * bandwidth / fs)
    theta = 2 * np.pi * fc / fs
    return np.array([1 - r]), np.array([1.0, -2 * r * np.cos(theta), r * r])


def noise_bursts(rng: np.random.Generator, n: int, fs: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited noise bursts (steps, clatter, running water, fans)."""
    lo = rng.uniform(50, 2000)
    hi = min(fs / 2 * 0.95, lo * rng.uniform(2, 20))
    sos = signal.butter(4, [lo, hi], btype="bandpass", fs=fs, output="sos")
    x = signal.sosfilt(sos, rng.standard_normal(n))
    return x * _envelope(rng, n, fs, mean_on=rng.uniform(0.05, 1.5), mean_off=0.5)


def tones_and_chirps(rng: np.random.Generator, n: int, fs: int = SAMPLE_RATE) -> np.ndarray:
    """Harmonic tones and chirps (appliances, alarms, music-like notes)."""
    t = np.arange(n) / fs
    if rng.random() < 0.5:
        f_start, f_end = rng.uniform(100, 4000, size=2)
        x = signal.chirp(t, f0=f_start, t1=t[-1] + 1 / fs, f1=f_end, method="logarithmic")
    else:
        f = rng.uniform(80, 2000)
        x = sum(rng.uniform(0.1, 1) / k * np.sin(2 * np.pi * k * f * t + rng.uniform(0, 6.3))
                for k in range(1, int(rng.integers(1, 6)) + 1))
    return x * _envelope(rng, n, fs, mean_on=rng.uniform(0.2, 2.0), mean_off=0.6)


def transients(rng: np.random.Generator, n: int, fs: int = SAMPLE_RATE) -> np.ndarray:
    """Clicks, claps, knocks and footsteps: exponentially decaying bursts, 0.5-6 per second."""
    out = np.zeros(n)
    for start in rng.integers(0, n, max(1, rng.poisson(rng.uniform(0.5, 6) * n / fs))):
        decay = rng.uniform(0.002, 0.04)
        t = np.arange(min(int(6 * decay * fs), n - start)) / fs
        burst = rng.standard_normal(len(t))
        if rng.random() < 0.4:  # knock: the struck object rings
            burst = 0.3 * burst + np.sin(2 * np.pi * rng.uniform(100, 1500) * t)
        out[start:start + len(t)] += burst * np.exp(-t / decay) * rng.uniform(0.2, 1.0)
    tilt = rng.uniform(-0.9, 0.95)  # one-pole spectral tilt: dull thumps (> 0) to bright clicks (< 0)
    return signal.lfilter([1.0], [1.0, -tilt], out)


def pink_noise(rng: np.random.Generator, n: int, fs: int = SAMPLE_RATE) -> np.ndarray:
    """Noise with a 1/f^a power spectrum (a = 0.7..1.3, pink on average) and nothing below 20 Hz."""
    f = np.fft.rfftfreq(n, 1 / fs)
    shape = np.where(f >= 20, np.maximum(f, 20) ** (-rng.uniform(0.7, 1.3) / 2), 0.0)
    return np.fft.irfft((rng.standard_normal(len(f)) + 1j * rng.standard_normal(len(f))) * shape, n)


SOURCE_KINDS = {"speech": speech_like, "noise": noise_bursts, "tone": tones_and_chirps,
                "transient": transients}
SOURCE_PROBS = {"speech": 0.4, "noise": 0.25, "tone": 0.15, "transient": 0.2}


# ----------------------------------------------------------------------------- real recordings

def split_files(folder: str | Path, split: str, include: str = "") -> list[Path]:
    """The audio files of ``folder`` (recursively, sorted) in ``split``; with ``include``
    (comma-separated file-name patterns, e.g. "ktuberling_*,alsa_*") only those matching one."""
    folder = Path(folder)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if not folder.is_dir():
        raise ValueError(f"{folder}: sources folder not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no {'/'.join(sorted(AUDIO_SUFFIXES))} files in this folder")
    patterns = [p.strip() for p in include.split(",") if p.strip()]
    chosen = [p for p in files if split_of(p.name) == split
              and (not patterns or any(fnmatch(p.name, pattern) for pattern in patterns))]
    if patterns and not chosen:
        raise ValueError(f"{folder}: no {split} file matches --include {include!r}")
    return chosen


def read_mono(path: str | Path, fs: int = SAMPLE_RATE) -> np.ndarray:
    """A file as mono float32 at ``fs``: channels averaged, other rates resampled."""
    import soundfile as sf

    try:
        x, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as e:
        raise ValueError(f"{path}: cannot read audio ({e})") from None
    x = x.mean(axis=1)
    if rate != fs:
        g = math.gcd(fs, rate)
        x = signal.resample_poly(x, fs // g, rate // g).astype(np.float32)
    return x


def load_recordings(folder: str | Path, split: str = "train", fs: int = SAMPLE_RATE,
                    include: str = "") -> list[np.ndarray]:
    """The mono recordings of one split, read once; those shorter than 0.3 s are skipped."""
    recordings = [x for f in split_files(folder, split, include)
                  if len(x := read_mono(f, fs)) >= MIN_RECORDING_SECONDS * fs]
    if not recordings:
        raise ValueError(f"{folder}: no {split} recordings of at least {MIN_RECORDING_SECONDS} s")
    return recordings


def recording_track(rng: np.random.Generator, recordings: list[np.ndarray], n: int,
                    fs: int = SAMPLE_RATE) -> np.ndarray:
    """Random recordings (each at -6..0 dB) end to end with 0-0.6 s gaps, entered at a random point,
    so a clip may start inside a recording, not always in silence."""
    pieces, total, offset = [], 0, None
    while offset is None or total < offset + n:
        x = recordings[rng.integers(len(recordings))] * 10 ** (rng.uniform(-6, 0) / 20)
        gap = int(rng.uniform(0, MAX_GAP_SECONDS) * fs)
        pieces += [x, np.zeros(gap)]
        total += len(x) + gap
        if offset is None:
            offset = int(rng.integers(0, total))
    return np.concatenate(pieces)[offset: offset + n].astype(np.float64)


def _source_signal(rng: np.random.Generator, n: int, fs: int,
                   recordings: list[np.ndarray] | None) -> np.ndarray:
    """A real recording track (probability 0.7 when there are recordings), else a synthetic kind."""
    if recordings and rng.random() < REAL_SOURCE_PROB:
        return recording_track(rng, recordings, n, fs)
    kind = rng.choice(list(SOURCE_PROBS), p=list(SOURCE_PROBS.values()))
    return SOURCE_KINDS[kind](rng, n, fs)


# ----------------------------------------------------------------------------- scenes

@dataclass
class Source:
    """A source signal and its trajectory: one position (static) or one per hop (moving)."""

    signal: np.ndarray
    positions: np.ndarray  # (P, 3) in room coordinates


@dataclass
class Scene:
    room_dim: np.ndarray
    absorption: float
    max_order: int
    mic_positions: np.ndarray  # (7, 3) in room coordinates
    sources: list[Source] = field(default_factory=list)
    background: list[Source] = field(default_factory=list)  # static, scaled as a whole:
    background_db: float = 20.0  # this many dB below the sources at the mics


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Random head pose: any yaw, pitch and roll within ±20°."""
    yaw, pitch, roll = rng.uniform(-np.pi, np.pi), *rng.uniform(-0.35, 0.35, size=2)
    cz, sz = np.cos(yaw), np.sin(yaw)
    cy, sy = np.cos(pitch), np.sin(pitch)
    cx, sx = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


def _point_near(rng: np.random.Generator, head: np.ndarray, distance: tuple[float, float]) -> np.ndarray:
    """A point at a log-uniform distance from the head, in a direction mostly near head height."""
    direction = rng.standard_normal(3) * np.array([1, 1, 0.4])
    direction /= np.linalg.norm(direction) + 1e-12
    return head + direction * np.exp(rng.uniform(np.log(distance[0]), np.log(distance[1])))


def _inside(points: np.ndarray, head: np.ndarray, room_dim: np.ndarray) -> np.ndarray:
    """Points clipped to the room, then pushed out to 0.3 m from the head (no source inside it).

    The head is at least 0.5 m from the walls and 0.6 m below the ceiling, so the push stays inside.
    """
    points = np.clip(points, 0.2, room_dim - 0.2)
    offset = points - head
    r = np.linalg.norm(offset, axis=-1, keepdims=True)
    near = SOURCE_DISTANCE[0]
    return np.where(r < near, head + offset / np.maximum(r, 1e-9) * near, points)


def random_scene(rng: np.random.Generator, seconds: float, recordings: list[np.ndarray] | None = None,
                 fs: int = SAMPLE_RATE, mic_positions: np.ndarray = ARIA_MIC_POSITIONS) -> Scene:
    """A shoebox room with the glasses at head height, 1-3 static or moving sources 0.3-4 m away
    (real recordings at ``fs`` when given, else synthetic) and, 30 % of the time, a background."""
    room_dim = np.array([rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.4, 3.5)])
    rt60 = rng.uniform(0.15, 0.7)
    absorption, order = pra.inverse_sabine(rt60, room_dim)
    margin = 0.5
    head = np.array([rng.uniform(margin, room_dim[0] - margin), rng.uniform(margin, room_dim[1] - margin),
                     rng.uniform(1.2, 1.8)])
    mics = head + mic_positions @ _rotation(rng).T
    n = int(round(seconds * fs))
    hops = int(np.ceil(seconds / MOVING_HOP_SECONDS)) + 1
    sources = []
    for _ in range(int(rng.integers(1, 4))):
        x = _source_signal(rng, n, fs, recordings)
        x = x / (np.std(x) + 1e-12) * 10 ** (rng.uniform(-12, 0) / 20)
        start = _point_near(rng, head, SOURCE_DISTANCE)
        if rng.random() < 0.4:  # walking talker: straight line at 0.3..1.5 m/s, kept inside the room
            direction = rng.standard_normal(3) * np.array([1, 1, 0.1])
            direction /= np.linalg.norm(direction) + 1e-12
            path = start + np.outer(np.arange(hops) * MOVING_HOP_SECONDS * rng.uniform(0.3, 1.5), direction)
            positions = _inside(path, head, room_dim)
        else:
            positions = _inside(start[None], head, room_dim)
        sources.append(Source(signal=x, positions=positions))
    background = []
    if rng.random() < BACKGROUND_PROB:  # far, static, quiet: diffuse-ish and partly coherent
        background = [Source(pink_noise(rng, n, fs),
                             _inside(_point_near(rng, head, BACKGROUND_DISTANCE)[None], head, room_dim))
                      for _ in range(int(rng.integers(BACKGROUND_SOURCES[0], BACKGROUND_SOURCES[1] + 1)))]
    return Scene(room_dim=room_dim, absorption=float(absorption), max_order=int(min(order, MAX_IMAGE_ORDER)),
                 mic_positions=mics, sources=sources, background=background,
                 background_db=float(rng.uniform(*BACKGROUND_DB_BELOW)))


def _render_source(s: Source, rirs: list[list[np.ndarray]], n: int, fs: int) -> np.ndarray:
    """One source at the mics, (n, 7): convolved whole (static) or by windowed overlap-add (moving)."""
    out = np.zeros((n, NUM_MICS))
    hop = int(MOVING_HOP_SECONDS * fs)
    if len(rirs) == 1:
        pieces = [(0, s.signal, rirs[0])]
    else:
        window = np.hanning(2 * hop + 1)[:-1]  # periodic Hann: overlaps sum to exactly one
        padded = np.concatenate([np.zeros(hop), s.signal, np.zeros(2 * hop)])
        pieces = []
        for k in range(min(len(rirs), int(np.ceil(n / hop)) + 1)):
            chunk = padded[k * hop: k * hop + 2 * hop]
            if len(chunk) < 2 * hop:
                break
            pieces.append((k * hop - hop, chunk * window, rirs[k]))
    for offset, chunk, rir in pieces:
        for m in range(NUM_MICS):
            y = signal.fftconvolve(chunk, rir[m])
            lo = max(offset, 0)
            hi = min(offset + len(y), n)
            if hi > lo:
                out[lo:hi, m] += y[lo - offset: hi - offset]
    return out


def render_scene(scene: Scene, fs: int = SAMPLE_RATE) -> np.ndarray:
    """Acoustic pressure at the mics, float (frames, 7).

    Moving sources are rendered by windowed overlap-add: the signal is cut into Hann windows of
    2·hop with 50% overlap (which sum to one), each window is convolved with the RIR of the source
    position at the window centre, and the results are added.  The background is scaled to
    ``background_db`` below the sources' active level at the mics (:func:`active_rms`).
    """
    n = max(len(s.signal) for s in scene.sources)
    room = pra.ShoeBox(scene.room_dim, fs=fs, materials=pra.Material(scene.absorption),
                       max_order=scene.max_order)
    room.add_microphone_array(scene.mic_positions.T)
    everything = scene.sources + scene.background
    for s in everything:
        for p in s.positions:
            room.add_source(p)
    room.compute_rir()
    column, rendered = 0, []
    for s in everything:
        rirs = [[np.asarray(room.rir[m][column + k]) for m in range(NUM_MICS)]
                for k in range(len(s.positions))]
        column += len(s.positions)
        rendered.append(_render_source(s, rirs, n, fs))
    out = sum(rendered[:len(scene.sources)])
    if scene.background:
        background = sum(rendered[len(scene.sources):])
        gain = active_rms(out, fs) / (active_rms(background, fs) + 1e-12) * 10 ** (-scene.background_db / 20)
        out = out + background * gain
    return out


def active_rms(x: np.ndarray, fs: int = SAMPLE_RATE) -> float:
    """RMS over the 20 ms frames within 40 dB of the loudest: the level while the sources sound."""
    frame = fs // 50
    usable = len(x) // frame * frame
    if usable == 0:
        return float(np.sqrt(np.mean(x ** 2)))
    power = np.mean(x[:usable].reshape(usable // frame, -1) ** 2, axis=1)
    return float(np.sqrt(np.mean(power[power >= power.max() * 1e-4])))


def add_microphone_artefacts(rng: np.random.Generator, pressure: np.ndarray,
                             fs: int = SAMPLE_RATE) -> np.ndarray:
    """Scale to counts and add DC offset, slow drift and noise floor per channel; int32 output."""
    n = len(pressure)
    acoustic = pressure / (np.std(pressure) + 1e-12) * rng.uniform(*ACOUSTIC_STD_RANGE)
    magnitude = np.exp(rng.uniform(np.log(DC_OFFSET_RANGE[0]), np.log(DC_OFFSET_RANGE[1]), NUM_MICS))
    offsets = magnitude * np.where(rng.random(NUM_MICS) < 0.7, 1.0, -1.0)
    # Drift: shared plus per-channel low-passed noise (cut-off 1..15 Hz), like the real mics.
    sos = signal.butter(2, rng.uniform(1, 15), fs=fs, output="sos")
    shared = signal.sosfiltfilt(sos, rng.standard_normal(n + fs))[fs // 2: fs // 2 + n]
    own = signal.sosfiltfilt(sos, rng.standard_normal((n + fs, NUM_MICS)), axis=0)[fs // 2: fs // 2 + n]
    drift = shared[:, None] * rng.uniform(0.3, 1.0) + own
    drift = drift / (drift.std(axis=0) + 1e-12) * rng.uniform(*DRIFT_STD_RANGE, NUM_MICS)
    noise = rng.standard_normal((n, NUM_MICS)) * rng.uniform(*NOISE_STD_RANGE, NUM_MICS)
    counts = acoustic + offsets + drift + noise
    info = np.iinfo(np.int32)
    return np.clip(np.round(counts), info.min, info.max).astype(np.int32)


def simulate_clip(seed: int, seconds: float, recordings: list[np.ndarray] | None = None,
                  fs: int = SAMPLE_RATE) -> np.ndarray:
    """One simulated clip as int32 counts, shape (frames, 7); identical for identical seeds and recordings."""
    rng = np.random.default_rng(seed)
    scene = random_scene(rng, seconds, recordings, fs)
    return add_microphone_artefacts(rng, render_scene(scene, fs), fs)


class SimulatedAudioDataset(torch.utils.data.Dataset):
    """Clips generated on the fly (seed = base_seed + index), returned as int32 tensors (7, frames)."""

    def __init__(self, count: int, seconds: float, base_seed: int = 0,
                 recordings: list[np.ndarray] | None = None):
        self.count, self.seconds, self.base_seed, self.recordings = count, seconds, base_seed, recordings

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return torch.from_numpy(simulate_clip(self.base_seed + index, self.seconds, self.recordings).T.copy())


# ----------------------------------------------------------------------------- folders of clips

SETTINGS_FILE = "simulation.json"
_recordings: list[np.ndarray] | None = None  # of this process (a Pool worker gets them at start)


def _use_recordings(recordings: list[np.ndarray] | None) -> None:
    global _recordings
    _recordings = recordings


def _write_clip(job: tuple[Path, int, float]) -> None:
    """Write one clip under a temporary name, then rename: a clip file present is a complete one."""
    import soundfile as sf

    out, seed, seconds = job
    path = out / f"sim_{seed:06d}.wav"
    partial = out / f".{path.name}.part"
    sf.write(partial, simulate_clip(seed, seconds, _recordings), SAMPLE_RATE, subtype="PCM_32", format="WAV")
    os.replace(partial, path)


def _folder_settings(seconds: float, sources: str | Path | None, split: str | None,
                     include: str = "") -> dict:
    """What a folder's clips depend on besides the seed; the recordings by file name and size."""
    files = split_files(sources, split, include) if sources is not None else []
    listing = "".join(f"{p.name}:{p.stat().st_size}\n" for p in files)
    fingerprint = hashlib.sha256(listing.encode()).hexdigest()
    return {"generator": GENERATOR_VERSION, "seconds": float(seconds),
            "sources": str(Path(sources).resolve()) if sources is not None else None, "split": split,
            "recordings": fingerprint[:16] if files else None, **({"include": include} if include else {})}


def _check_folder(out: Path, settings: dict) -> None:
    """Refuse a folder whose clips were made with other settings (or with no record of them)."""
    record = out / SETTINGS_FILE
    if record.exists():
        old = json.loads(record.read_text())
        changed = [f"{k} {old.get(k)!r}, now {v!r}" for k, v in settings.items() if old.get(k) != v]
        if changed:
            raise ValueError(f"{out} holds clips made with other settings ({'; '.join(changed)}); "
                             "use another --out")
    elif any(out.glob("sim_*.wav")):
        raise ValueError(f"{out} holds clips made with other settings (no {SETTINGS_FILE}); "
                         "use another --out")


def write_folder(out: Path, count: int, seconds: float, base_seed: int = 0, sources: str | Path | None = None,
                 split: str | None = None, workers: int = 1, include: str = "") -> list[Path]:
    """Write ``count`` clips as 7-channel 48 kHz PCM_32 WAV files named sim_<seed>.wav.

    Clips already in ``out`` are kept (the folder's settings must match), so a larger count only adds
    clips.  ``sources``: a folder of mono recordings, of which ``split`` (default "train") is used;
    ``include`` narrows them to matching file names; ``workers`` processes simulate in parallel.
    """
    from tqdm import tqdm

    out = Path(out)
    split = (split or "train") if sources is not None else None
    settings = _folder_settings(seconds, sources, split, include)
    _check_folder(out, settings)
    recordings = load_recordings(sources, split, include=include) if sources is not None else None
    out.mkdir(parents=True, exist_ok=True)
    (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    paths = [out / f"sim_{seed:06d}.wav" for seed in range(base_seed, base_seed + count)]
    jobs = [(out, base_seed + i, seconds) for i, p in enumerate(paths) if not p.exists()]
    progress = tqdm(total=count, initial=count - len(jobs), desc="simulating", unit="clip")
    if workers > 1 and len(jobs) > 1:
        with Pool(min(workers, len(jobs)), initializer=_use_recordings, initargs=(recordings,)) as pool:
            for _ in pool.imap_unordered(_write_clip, jobs):
                progress.update()
    else:
        _use_recordings(recordings)
        for job in jobs:
            _write_clip(job)
            progress.update()
    progress.close()
    return paths


def _check_args(args: argparse.Namespace) -> None:
    if args.count <= 0 or args.seconds <= 0:
        raise ValueError("--count and --seconds must be positive")
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    if (args.split or args.include) and args.sources is None:
        raise ValueError("--split and --include need --sources")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dance.simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder for WAV files")
    parser.add_argument("--count", type=int, default=100, help="number of clips")
    parser.add_argument("--seconds", type=float, default=6.0, help="clip length in seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first clip (clip i uses seed+i)")
    parser.add_argument("--sources", type=Path, help="folder of mono recordings to use as sources "
                        "(e.g. ../shared/data/train/audio); default: synthetic sources only")
    parser.add_argument("--split", choices=SPLITS, help="which recordings of --sources (default: train)")
    parser.add_argument("--include", default="", metavar="PATTERNS",
                        help="only recordings whose file name matches one of these comma-separated "
                             "patterns, e.g. 'ktuberling_*,alsa_*' (the speech)")
    parser.add_argument("--workers", type=int, default=1, help="processes simulating clips in parallel")
    args = parser.parse_args(argv)
    try:
        _check_args(args)
        write_folder(args.out, args.count, args.seconds, args.seed, args.sources, args.split, args.workers,
                     args.include)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
