"""`aria_rgb`: RGB frames from a VRS recording, or synthetic ones when no recording is given, so
one graph runs with and without data (`--set glasses.path=recording.vrs`)."""
from __future__ import annotations

from typing import Iterator

from pipeline.node import FILE, Output, Param, Source
from pipeline.packet import Packet

from .aria_vrs import AriaVrsSource
from .synthetic import SyntheticAriaSource


class AriaRgb(Source):
    """The RGB camera only: replayed from `path` by `aria_vrs`, or rendered by `synthetic_aria`
    when `path` is empty."""

    image = Output("image", "H×W×3 uint8 frames, stream 'camera-rgb'")
    path = Param(str, "", "VRS file to replay; empty: synthetic 1408×1408 Aria-like frames",
                 path=FILE)
    frames = Param(int, 0, "stop after this many frames; 0 = the whole recording (synthetic: 8)",
                   min=0)
    speed = Param(float, 1.0, "real-time factor; 0 = as fast as possible", min=0.0)
    loop = Param(bool, False, "replay the recording again and again (timestamps keep increasing)")
    seed = Param(int, 0, "synthetic frames: random seed")
    fps = Param(float, 1.0, "synthetic frames: frame rate", min=1e-3)

    @classmethod
    def check(cls, params: dict, wiring) -> Iterator[tuple[str, str]]:
        if params["path"]:
            yield from AriaVrsSource.check(params, wiring)

    def setup(self) -> None:
        if self.path:
            self.inner = AriaVrsSource(self.name, path=self.path, mic=False, speed=self.speed,
                                       loop=self.loop)
        else:
            self.inner = SyntheticAriaSource(self.name, frames=self.frames or 8, speed=self.speed,
                                             seed=self.seed, fps=self.fps, mic=False)
        self.inner.attach(self._emit, self._stop)
        self.inner.setup()

    def run(self) -> Iterator[Packet]:
        count = 0
        for port, packet in self.inner.run():
            if port != "image":
                continue
            yield packet
            count += 1
            if self.frames and count >= self.frames:
                return

    def teardown(self) -> None:
        if hasattr(self, "inner"):
            self.inner.teardown()
