"""Does a codec keep where sounds come from? Sound direction (GCC-PHAT, the example plugin node of
docs/custom-nodes.md) on raw and on encoded+decoded 7-channel audio of simulated rooms.

Each trial renders a broadband source at a random direction 1-3 m from the Aria microphone
array in a random reverberant shoebox room (pyroomacoustics), scales it to Aria-like int32
counts with the real DC offsets, and compares the time difference of arrival the node estimates
between two microphones with the geometric one (exact path lengths).

    python benchmarks/sound_direction.py [--checkpoint aria-audio-spatial] [--ratio 600]
                                         [--trials 8] [--mics 0 5]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples" / "dance-example-plugin")]

from dance.geometry import ARIA_MIC_POSITIONS, SPEED_OF_SOUND  # noqa: E402
from dance_example_plugin.sound_direction import SoundDirection  # noqa: E402
from nodes.codec import Decode, Encode  # noqa: E402
from pipeline.packet import audio_packet  # noqa: E402
from pipeline.testing import feed  # noqa: E402

RATE, BLOCK, BLOCKS = 48_000, 4096, 4
DC_OFFSETS = np.array([4e4, 2e6, -3e6, 4.6e7, 1e5, -8e5, 3e6])  # as on the sample recording


def simulated_blocks(rng: np.random.Generator) -> tuple[list, np.ndarray]:
    """Audio blocks of one source in one room, and the source position relative to the array."""
    size = rng.uniform([5, 4, 2.6], [9, 7, 3.5])
    room = pra.ShoeBox(size, fs=RATE, max_order=8,
                       materials=pra.Material(rng.uniform(0.3, 0.7)))
    centre = size / 2
    direction = rng.normal(size=3)
    direction[2] *= 0.3  # mostly around the wearer, not above or below
    distance = rng.uniform(1.0, size[:2].min() / 2 - 0.3)
    source = np.clip(centre + distance * direction / np.linalg.norm(direction), 0.2, size - 0.2)
    room.add_source(source, signal=rng.normal(size=BLOCK * BLOCKS + RATE // 10))
    room.add_microphone_array((centre + ARIA_MIC_POSITIONS).T)
    room.simulate()
    signal = room.mic_array.signals.T[RATE // 20:RATE // 20 + BLOCK * BLOCKS]
    counts = (signal / signal.std() * 5e5 + DC_OFFSETS).astype(np.int32)
    blocks = [audio_packet("mic", 10**9 + round(i * 1e9 / RATE), i // BLOCK, counts[i:i + BLOCK],
                           RATE) for i in range(0, len(counts), BLOCK)]
    return blocks, source - centre


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="aria-audio-spatial")
    parser.add_argument("--ratio", type=float, default=600.0,
                        help="target compression ratio (variable-rate codecs; 0: top level)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--mics", type=int, nargs=2, default=[0, 5])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    a, b = args.mics
    rng = np.random.default_rng(args.seed)
    encode = Encode(name="enc", checkpoint=args.checkpoint, ratio=args.ratio or None)
    decode = Decode(name="dec")
    errors: dict[str, list] = {"raw": [], "decoded": []}
    raw_bytes = coded_bytes = 0
    for _ in tqdm(range(args.trials), desc="rooms"):
        blocks, source = simulated_blocks(rng)
        truth_us = (np.linalg.norm(source - ARIA_MIC_POSITIONS[b])
                    - np.linalg.norm(source - ARIA_MIC_POSITIONS[a])) / SPEED_OF_SOUND * 1e6
        coded = [p for _, p in feed(encode, "audio", blocks)]
        raw_bytes += sum(p.payload.nbytes for p in blocks)
        coded_bytes += sum(len(p.payload) for p in coded)
        decoded = [p for _, p in feed(decode, "encoded", coded)]
        for kind, audio in (("raw", blocks), ("decoded", decoded)):
            node = SoundDirection(name=kind, mic_a=a, mic_b=b)
            errors[kind] += [abs(p.payload["tdoa_us"] - truth_us)
                             for _, p in feed(node, "audio", audio)]
    print(f"mics {a}-{b}, {args.trials} rooms x {BLOCKS} windows of {BLOCK} samples; "
          f"{args.checkpoint} at {raw_bytes / coded_bytes:.0f}:1")
    print(f"{'audio':<10}{'median |error| us':>18}{'within 1 sample':>17}")
    for kind, values in errors.items():
        values = np.asarray(values)
        print(f"{kind:<10}{np.median(values):>18.1f}{np.mean(values <= 1e6 / RATE):>17.0%}")


if __name__ == "__main__":
    main()
