"""Project Aria (gen 1) device facts: the streams this project reads and their formats.

One place for them, so that the replay and live sources, the datasets, the synthetic source and
the evaluations cannot disagree. Plain constants: importing this loads nothing.
"""
from __future__ import annotations

RGB_STREAM = "214-1"   # camera-rgb
MIC_STREAM = "231-1"   # the microphone array
STREAM_NAMES = {RGB_STREAM: "camera-rgb", MIC_STREAM: "mic"}

MIC_SAMPLE_RATE = 48_000  # a live stream carries no audio configuration, so it is assumed
MIC_CHANNELS = 7
RGB_SIZE = 1408           # the RGB camera's full-resolution frames are 1408×1408
