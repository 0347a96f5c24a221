"""The Project Aria (gen 1) microphone array: positions, level and the speed of sound.

numpy only, so that nodes needing the geometry (sound direction, synthetic sources) load
without torch or pyroomacoustics.
"""
from __future__ import annotations

import numpy as np

SPEED_OF_SOUND = 343.0

# The array records quietly in its int32 counts: a talker near the wearer peaks around -50 dBFS
# (the sample recording, after the DC notch: -52.6 dBFS; simulated rooms -59..-47). Speech models
# trained on normalised audio (Whisper, silero-vad) hear it this much louder.
ARIA_SPEECH_GAIN_DB = 40.0

# CAD positions (metres, device frame) of mic0..mic6 from the sample recording's calibration
# (get_transform_device_sensor("micN", True)); see ../shared/data/aea/README.md.
ARIA_MIC_POSITIONS = np.array(
    [
        [0.03403842, -0.08962666, -0.07034876],
        [-0.00627213, -0.05238159, -0.03048510],
        [0.03110628, -0.01678870, -0.01453394],
        [-0.00931785, -0.00218180, -0.00681978],
        [-0.00706444, -0.09812104, -0.07209650],
        [-0.00166552, 0.06295085, -0.08091487],
        [0.00278801, -0.04784307, -0.16585494],
    ]
)
