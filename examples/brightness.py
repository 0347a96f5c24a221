"""A custom perception node: mean brightness and motion energy of each camera frame.

A second example of docs/custom-nodes.md, on camera frames; examples/brightness.yaml runs it.
"""
from __future__ import annotations

import numpy as np

from pipeline.node import Input, Node, Output, Param
from pipeline.packet import Packet

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 weights for R, G, B


class SceneStats(Node):
    """Per-frame mean brightness (0-255 luma) and motion energy (mean |Δluma| to the previous
    frame, null for the first) as `metrics` packets on stream 'scene', one per frame."""

    image = Input("image", "RGB or grey frames")
    metrics = Output("metrics", "{brightness, motion} per frame, timestamped like the frame")
    stride = Param(int, 8, "look at every stride-th pixel in each direction", min=1)

    def setup(self) -> None:
        self.previous = None  # luma of the last frame: motion needs state across packets

    def on_image(self, packet: Packet) -> Packet:
        pixels = packet.payload[::self.stride, ::self.stride].astype(np.float32)
        luma = pixels @ LUMA if pixels.ndim == 3 else pixels
        motion = None if self.previous is None else float(np.abs(luma - self.previous).mean())
        self.previous = luma
        return Packet("scene", packet.timestamp_ns, packet.seq,
                      {"brightness": float(luma.mean()), "motion": motion},
                      {"source": packet.stream})
