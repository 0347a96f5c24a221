"""Simulated 7-channel spatial audio on the Project Aria microphone geometry.

The public sample recording holds 0.34 s of audio, far too little to train an audio codec, so the
default ``aria-audio`` checkpoint is trained on clips from this generator: random shoebox rooms
(pyroomacoustics image-source RIRs), static and moving sources rendered by windowed overlap-add of
per-position RIRs, synthetic source signals (glottal-pulse speech with formants, noise bursts,
tones and chirps; nothing is downloaded), then the per-channel DC offset, slow drift and noise
floor measured on the real microphones, as int32 counts at 48 kHz.

Everything is deterministic from the seed.  ``python -m dance.simulate --out DIR --count N``
writes a folder of 7-channel PCM_32 WAV files that the WAV dataset in :mod:`dance.data` reads.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
import torch
from scipy import signal

from .geometry import ARIA_MIC_POSITIONS

SAMPLE_RATE = 48_000
NUM_MICS = 7

# Real-microphone artefacts measured on the sample recording (counts): DC offsets ~4e4..4.7e7 with
# either sign, sub-20 Hz drift with std ~0.5e6..2e6, acoustic band std ~1.5e5..6e5, noise ~2e4..9e4.
DC_OFFSET_RANGE = (4e4, 4.7e7)
DRIFT_STD_RANGE = (0.5e6, 2e6)
ACOUSTIC_STD_RANGE = (1.5e5, 6e5)
NOISE_STD_RANGE = (1e4, 6e4)

MOVING_HOP_SECONDS = 0.05
MAX_IMAGE_ORDER = 10


def mic_positions_from_vrs(vrs_path: str | Path) -> np.ndarray:
    """Read the 7 microphone positions (7, 3) in metres from a VRS file's device calibration."""
    from projectaria_tools.core import data_provider

    provider = data_provider.create_vrs_data_provider(str(vrs_path))
    if provider is None:
        raise ValueError(f"{vrs_path}: cannot open as a VRS recording")
    calib = provider.get_device_calibration()
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


SOURCE_KINDS = {"speech": speech_like, "noise": noise_bursts, "tone": tones_and_chirps}
SOURCE_PROBS = {"speech": 0.5, "noise": 0.3, "tone": 0.2}


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


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Random head pose: any yaw, pitch and roll within ±20°."""
    yaw, pitch, roll = rng.uniform(-np.pi, np.pi), *rng.uniform(-0.35, 0.35, size=2)
    cz, sz, cy, sy, cx, sx = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


def random_scene(rng: np.random.Generator, seconds: float, fs: int = SAMPLE_RATE,
                 mic_positions: np.ndarray = ARIA_MIC_POSITIONS) -> Scene:
    """A shoebox room with the glasses at head height and 1-3 static or moving sources."""
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
        kind = rng.choice(list(SOURCE_PROBS), p=list(SOURCE_PROBS.values()))
        x = SOURCE_KINDS[kind](rng, n, fs)
        x = x / (np.std(x) + 1e-12) * 10 ** (rng.uniform(-12, 0) / 20)
        start = np.array([rng.uniform(0.3, room_dim[0] - 0.3), rng.uniform(0.3, room_dim[1] - 0.3),
                          rng.uniform(0.3, room_dim[2] - 0.3)])
        if rng.random() < 0.4:  # walking talker: straight line at 0.3..1.5 m/s, kept inside the room
            direction = rng.standard_normal(3) * np.array([1, 1, 0.1])
            direction /= np.linalg.norm(direction) + 1e-12
            path = start + np.outer(np.arange(hops) * MOVING_HOP_SECONDS * rng.uniform(0.3, 1.5), direction)
            positions = np.clip(path, 0.2, room_dim - 0.2)
        else:
            positions = start[None]
        sources.append(Source(signal=x, positions=positions))
    return Scene(room_dim=room_dim, absorption=float(absorption), max_order=int(min(order, MAX_IMAGE_ORDER)),
                 mic_positions=mics, sources=sources)


def render_scene(scene: Scene, fs: int = SAMPLE_RATE) -> np.ndarray:
    """Acoustic pressure at the mics, float (frames, 7).

    Moving sources are rendered by windowed overlap-add: the signal is cut into Hann windows of
    2·hop with 50% overlap (which sum to one), each window is convolved with the RIR of the source
    position at the window centre, and the results are added.
    """
    n = max(len(s.signal) for s in scene.sources)
    room = pra.ShoeBox(scene.room_dim, fs=fs, materials=pra.Material(scene.absorption),
                       max_order=scene.max_order)
    room.add_microphone_array(scene.mic_positions.T)
    for s in scene.sources:
        for p in s.positions:
            room.add_source(p)
    room.compute_rir()
    out = np.zeros((n + fs, NUM_MICS))
    column = 0
    hop = int(MOVING_HOP_SECONDS * fs)
    for s in scene.sources:
        rirs = [[np.asarray(room.rir[m][column + k]) for m in range(NUM_MICS)] for k in range(len(s.positions))]
        column += len(s.positions)
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
                hi = min(offset + len(y), len(out))
                out[lo:hi, m] += y[lo - offset: hi - offset]
    return out[:n]


def add_microphone_artefacts(rng: np.random.Generator, pressure: np.ndarray, fs: int = SAMPLE_RATE) -> np.ndarray:
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


def simulate_clip(seed: int, seconds: float, fs: int = SAMPLE_RATE) -> np.ndarray:
    """One simulated clip as int32 counts, shape (frames, 7); identical for identical seeds."""
    rng = np.random.default_rng(seed)
    scene = random_scene(rng, seconds, fs)
    return add_microphone_artefacts(rng, render_scene(scene, fs), fs)


class SimulatedAudioDataset(torch.utils.data.Dataset):
    """Clips generated on the fly (seed = base_seed + index), returned as int32 tensors (7, frames)."""

    def __init__(self, count: int, seconds: float, base_seed: int = 0):
        self.count, self.seconds, self.base_seed = count, seconds, base_seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return torch.from_numpy(simulate_clip(self.base_seed + index, self.seconds).T.copy())


def write_folder(out: Path, count: int, seconds: float, base_seed: int = 0) -> list[Path]:
    """Write ``count`` clips as 7-channel 48 kHz PCM_32 WAV files named sim_<seed>.wav."""
    import soundfile as sf
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in tqdm(range(base_seed, base_seed + count), desc="simulating", unit="clip"):
        path = out / f"sim_{seed:06d}.wav"
        sf.write(path, simulate_clip(seed, seconds), SAMPLE_RATE, subtype="PCM_32")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dance.simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder for WAV files")
    parser.add_argument("--count", type=int, default=100, help="number of clips")
    parser.add_argument("--seconds", type=float, default=6.0, help="clip length in seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first clip (clip i uses seed+i)")
    args = parser.parse_args(argv)
    if args.count <= 0 or args.seconds <= 0:
        print("error: --count and --seconds must be positive", file=sys.stderr)
        return 2
    write_folder(args.out, args.count, args.seconds, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
