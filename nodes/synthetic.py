"""`synthetic_aria`: Aria-shaped streams generated on the fly, so demos and tests need no data.

Frames look like the RGB camera's: a 1408×1408 fisheye image circle with dark corners over a
textured scene that pans and has a moving object. Audio looks like the 7 microphones: int32
samples at 48 kHz with large per-channel DC offsets that drift slowly, plus a source (tones and
noise bursts) reaching each microphone with its own delay. Everything follows from `seed`.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from PIL import Image
from scipy.signal import lfilter

from dance.aria import MIC_CHANNELS as CHANNELS
from dance.aria import MIC_SAMPLE_RATE as SAMPLE_RATE
from dance.aria import RGB_SIZE as SIZE
from dance.geometry import ARIA_MIC_POSITIONS, SPEED_OF_SOUND
from pipeline.node import Output, Param, Source
from pipeline.packet import Packet, audio_packet, image_packet

START_NS = 86_000_000_000  # device clocks count from boot; start where the sample recording does


def sample_time_ns(sample_index: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Device time of an audio sample: exact, so consecutive blocks are contiguous."""
    return START_NS + round(sample_index * 1_000_000_000 / sample_rate)


class SceneRenderer:
    """Renders frame k of a panning textured scene through a fisheye image circle."""

    def __init__(self, rng: np.random.Generator, size: int = SIZE):
        self.size = size
        self.pan_room = size // 2
        height, width = size, size + self.pan_room
        # Smooth, mostly neutral walls and floor: low-frequency noise, upsampled bilinearly.
        coarse = rng.random((height // 64, width // 64), dtype=np.float32)
        light = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
        tint = rng.uniform(0.8, 1.2, 3).astype(np.float32)
        scene = (60 + 120 * light)[..., None] * tint
        scene[int(height * 0.62):] *= 0.6  # a floor, darker than the walls
        # Furniture-like blocks with hard edges.
        for _ in range(14):
            top, left = rng.integers(0, height - 200), rng.integers(0, width - 200)
            h, w = rng.integers(80, 400), rng.integers(60, 300)
            scene[top:top + h, left:left + w] = rng.uniform(20, 235, 3)
        # Fine texture everywhere, so the frames are not trivially compressible.
        y, x = np.ogrid[0:height, 0:width]
        scene += (10 * np.sin(x / 4.3) * np.sin(y / 6.1)).astype(np.float32)[..., None]
        scene += rng.normal(0, 3, scene.shape).astype(np.float32)
        self.scene = np.clip(scene, 0, 255).astype(np.uint8)
        # The lens: black outside the image circle, darker towards its rim (uint16 weights/256).
        yy, xx = np.ogrid[0:size, 0:size]
        radius = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2) / (size / 2)
        vignette = np.clip((1.0 - radius) / 0.02, 0, 1) * (1 - 0.4 * radius ** 2)
        self.vignette = np.repeat((256 * vignette).astype(np.uint16)[..., None], 3, axis=2)
        self.object_color = rng.integers(0, 256, 3).astype(np.uint16)

    def render(self, k: int) -> np.ndarray:
        pan = int((0.5 + 0.5 * math.sin(k * 0.35)) * self.pan_room)
        frame = self.scene[:, pan:pan + self.size].astype(np.uint16)
        # A moving bright object, at a position that depends on the frame number only.
        size, r = self.size, self.size // 14
        cy = int(size * (0.5 + 0.25 * math.sin(k * 0.9)))
        cx = int(size * (0.5 + 0.25 * math.cos(k * 0.6)))
        frame[cy - r:cy + r, cx - r:cx + r] = self.object_color
        frame *= self.vignette
        frame >>= 8
        return frame.astype(np.uint8)


class MicArray:
    """Streams 7-channel int32 audio block by block; state carries over between blocks."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.dc = np.exp(rng.uniform(np.log(4e4), np.log(4.6e7), CHANNELS))
        self.drift_hz = rng.uniform(0.02, 0.1, CHANNELS)
        self.drift_phase = rng.uniform(0, 2 * np.pi, CHANNELS)
        self.gain = rng.uniform(0.5e6, 2e6, CHANNELS)
        source = rng.normal(size=3)
        source *= 1.5 / np.linalg.norm(source)  # a talker 1.5 m away
        distance = np.linalg.norm(ARIA_MIC_POSITIONS - source, axis=1)
        self.delay_s = (distance - distance.min()) / SPEED_OF_SOUND
        self.tones_hz = rng.uniform(150, 3000, 3)
        self.noise_state = np.zeros((1, CHANNELS))
        self.next_sample = 0

    def block(self, frames: int) -> np.ndarray:
        n = np.arange(self.next_sample, self.next_sample + frames)
        self.next_sample += frames
        t = n / SAMPLE_RATE
        heard = t[:, None] - self.delay_s[None, :]  # each microphone hears the source later
        bursts = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * heard) ** 2  # speech-like envelope
        signal = sum(np.sin(2 * np.pi * f * heard) for f in self.tones_hz) / len(self.tones_hz)
        drift = 0.02 * self.dc * np.sin(2 * np.pi * self.drift_hz * t[:, None] + self.drift_phase)
        # Sensor noise, low-passed by a one-pole filter whose state continues across blocks.
        white = self.rng.normal(0, 0.1, (frames, CHANNELS))
        noise, self.noise_state = lfilter([1.0], [1.0, -0.9], white, axis=0, zi=self.noise_state)
        values = self.dc + drift + self.gain * (bursts * signal + noise)
        return np.clip(np.round(values), -2**31, 2**31 - 1).astype(np.int32)


class RoomRecording:
    """Streams a clip from the room simulator of dance.simulate (pyroomacoustics rooms, moving
    talkers and transients on the Aria mic geometry, real-mic DC and drift): audio a codec
    trained on that simulator sees as in-distribution, rendered once at setup and looped."""

    # simulator seeds clear of those the default aria-audio checkpoint trained on (0-99) and
    # the benchmarks' held-out clips (1,000,000+): the live metrics are on unseen rooms
    SEED_OFFSET = 2_000_000

    def __init__(self, seed: int, seconds: float):
        from dance.simulate import simulate_clip
        self.clip = simulate_clip(self.SEED_OFFSET + seed, max(seconds, 1.0))
        self.next_sample = 0

    def block(self, frames: int) -> np.ndarray:
        index = np.arange(self.next_sample, self.next_sample + frames) % len(self.clip)
        self.next_sample += frames
        return self.clip[index]


class SyntheticAriaSource(Source):
    """Aria-shaped RGB frames and 7-channel int32 audio, deterministic from `seed`.

    Packets are interleaved in timestamp order on a device-like nanosecond clock."""

    image = Output("image", "1408×1408×3 uint8 fisheye-like frames, stream 'camera-rgb'")
    audio = Output("audio", "block×7 int32 at 48 kHz, stream 'mic'")
    seed = Param(int, 0, "random seed; the same seed gives the same streams")
    frames = Param(int, 4, "image frames to produce (audio covers the same time); 0 = endless",
                   min=0)
    fps = Param(float, 1.0, "image frame rate", min=1e-3)
    block = Param(int, 4096, "audio samples per block", min=1)
    speed = Param(float, 1.0, "real-time factor; 0 = as fast as possible", min=0.0)
    mic = Param(bool, True, "produce the audio stream (false: frames only)")
    sound = Param(str, "tones", "tones: one talker-like tone mix, instant to make; room: a "
                  "simulated room (dance.simulate), seconds to render, looped",
                  choices=("tones", "room"))

    def setup(self) -> None:
        rng = np.random.default_rng(self.seed)
        self._scene = SceneRenderer(np.random.default_rng(rng.integers(2**63)))
        mic_rng = np.random.default_rng(rng.integers(2**63))
        if self.sound == "room" and self.mic:
            self._mics = RoomRecording(self.seed, self.frames / self.fps if self.frames else 6.0)
        else:
            self._mics = MicArray(mic_rng)

    def run(self) -> Iterator[tuple[str, Packet]]:
        end_ns = START_NS + round(self.frames * 1e9 / self.fps) if self.frames else None
        frame, block = 0, 0
        while not self.stopping:
            frame_ns = START_NS + round(frame * 1e9 / self.fps)
            if self.frames and frame >= self.frames:
                frame_ns = None
            block_ns = sample_time_ns(block * self.block) if self.mic else None
            if end_ns is not None and block_ns is not None and block_ns >= end_ns:
                block_ns = None
            if frame_ns is None and block_ns is None:
                return
            if block_ns is None or (frame_ns is not None and frame_ns <= block_ns):
                self.pace(frame_ns)
                yield "image", image_packet("camera-rgb", frame_ns, frame,
                                            self._scene.render(frame))
                frame += 1
            else:
                self.pace(block_ns)
                yield "audio", audio_packet("mic", block_ns, block,
                                            self._mics.block(self.block), SAMPLE_RATE)
                block += 1
