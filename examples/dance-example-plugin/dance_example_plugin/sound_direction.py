"""Where a sound comes from, from two microphones of the Aria array (GCC-PHAT).

The worked example of docs/custom-nodes.md: a streaming perception node on (decoded) audio.
"""
from __future__ import annotations

import numpy as np

from dance.geometry import ARIA_MIC_POSITIONS, SPEED_OF_SOUND
from pipeline.node import Input, Node, Output, Param
from pipeline.packet import Packet


def gcc_phat(x: np.ndarray, y: np.ndarray, max_lag: int, upsample: int) -> tuple[int, float]:
    """Delay of `y` behind `x` in 1/`upsample` samples, searched within ±`max_lag` samples, and
    the height of the correlation peak (1 for one clean source, near 0 for diffuse noise).

    Cross-power spectrum with every frequency weighted alike (the phase transform), so the
    delay is not dominated by the loudest band; zero-padded to avoid circular wrap-around.
    """
    n = 2 * len(x)
    cross = np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n))
    cross /= np.maximum(np.abs(cross), 1e-12)
    corr = np.fft.irfft(cross, n * upsample)
    reach = max_lag * upsample
    corr = np.concatenate((corr[-reach:], corr[:reach + 1]))  # lags -reach..reach
    best = int(np.argmax(corr))
    return best - reach, float(corr[best] * upsample)


class SoundDirection(Node):
    """Direction of the dominant sound between two microphones, once per `window` samples:
    the time difference of arrival (GCC-PHAT) and the angle it implies between the source and
    the axis from `mic_a` to `mic_b` (0° beyond mic_b, 90° equally far, 180° beyond mic_a).
    Block sizes do not matter: samples are buffered across packets."""

    audio = Input("audio", "frames×channels blocks on the Aria channel order, raw or decoded")
    direction = Output("metrics", "{tdoa_us, angle_deg, peak} per window, stream "
                                  "'sound-direction', timestamped at the window's first sample")
    mic_a = Param(int, 0, "first microphone (Aria mic0..mic6; 0 and 5 are 16 cm apart)",
                  min=0, max=6)
    mic_b = Param(int, 5, "second microphone", min=0, max=6)
    window = Param(int, 4096, "samples per estimate", min=64)
    upsample = Param(int, 8, "interpolation of the correlation, for sub-sample delays", min=1)

    def setup(self) -> None:
        if self.mic_a == self.mic_b:
            raise ValueError("mic_a and mic_b must differ")
        self.distance_m = float(np.linalg.norm(ARIA_MIC_POSITIONS[self.mic_b]
                                               - ARIA_MIC_POSITIONS[self.mic_a]))
        self.pending = np.zeros((0, 2))  # samples not yet in a window: state across packets
        self.pending_ns = 0              # device time of pending[0]
        self.next_ns = None              # where the next block should start, to spot gaps
        self.windows = 0

    def on_audio(self, packet: Packet) -> None:
        if packet.payload.shape[1] <= max(self.mic_a, self.mic_b):
            raise ValueError(f"stream '{packet.stream}' has {packet.payload.shape[1]} channels; "
                             f"mic_a/mic_b need {max(self.mic_a, self.mic_b) + 1}")
        rate = packet.meta["sample_rate"]
        tick_ns = 1e9 / rate
        if self.next_ns is None or abs(packet.timestamp_ns - self.next_ns) > tick_ns:
            self.pending = self.pending[:0]  # first block, or blocks were lost: start over
            self.pending_ns = packet.timestamp_ns
        self.next_ns = packet.timestamp_ns + len(packet.payload) * tick_ns
        pair = packet.payload[:, [self.mic_a, self.mic_b]].astype(np.float64)
        self.pending = np.concatenate((self.pending, pair))
        max_lag = int(np.ceil(self.distance_m / SPEED_OF_SOUND * rate))
        while len(self.pending) >= self.window:
            chunk = self.pending[:self.window]
            chunk = chunk - chunk.mean(axis=0)  # the Aria mics carry large DC offsets
            lag, peak = gcc_phat(chunk[:, 0], chunk[:, 1], max_lag, self.upsample)
            tdoa_s = lag / (rate * self.upsample)
            cosine = np.clip(-tdoa_s * SPEED_OF_SOUND / self.distance_m, -1.0, 1.0)
            self.emit("direction", Packet(
                "sound-direction", round(self.pending_ns), self.windows,
                {"tdoa_us": round(tdoa_s * 1e6, 2), "angle_deg": round(float(
                    np.degrees(np.arccos(cosine))), 1), "peak": round(peak, 3)},
                {"source": packet.stream, "mics": [self.mic_a, self.mic_b]}))
            self.windows += 1
            self.pending = self.pending[self.window:]
            self.pending_ns += self.window * tick_ns
