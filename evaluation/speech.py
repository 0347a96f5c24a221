"""Speech retention: does a speech model hear in the decoded audio what it hears in the original?

Two figures, both against the model's output on the original (not a human transcript: the
question is what the codec changed, and simulated rooms have no ground truth of their own):
- **word error rate** of the decoded audio's Whisper transcript with the original's transcript
  as reference: (substitutions + deletions + insertions) / reference words, summed over clips
  (jiwer's alignment, after lower-casing and removing punctuation); words heard in a clip whose
  original transcript is empty count as insertions;
- **VAD agreement**: the share of 32 ms frames on which silero-vad's speech decision
  (probability ≥ 0.5) is the same for both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception.speech import MIX, VAD_THRESHOLD, SpeechInput, Transcriber, load_voice_activity


@dataclass
class Heard:
    """What the speech models made of one clip."""
    text: str
    vad_probs: np.ndarray


@dataclass
class SpeechScore:
    """Errors of one decoded clip against its original."""
    edits: int              # word substitutions + deletions + insertions
    words: int              # words of the original's transcript
    vad_agree: int          # frames with the same speech decision
    vad_frames: int
    speech_frames: int      # frames the original has speech in

    @property
    def wer(self) -> float | None:
        return self.edits / self.words if self.words else None


def listen(audio: np.ndarray, rate: int, transcriber: Transcriber, channel: int | str = MIX) -> Heard:
    """Transcript and VAD probabilities of a frames×channels clip (counts or full-scale float)."""
    speech = SpeechInput(rate, channel).push(audio)
    return Heard(transcriber.transcribe(speech), load_voice_activity().push(speech))


def _words(text: str) -> list[str]:
    import jiwer
    normalise = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(),
                               jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
                               jiwer.ReduceToListOfListOfWords()])
    return normalise(text)[0] if text.strip() else []


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edits, reference words) of a hypothesis transcript against a reference transcript."""
    import jiwer
    ref, hyp = _words(reference), _words(hypothesis)
    if not ref:
        return len(hyp), 0
    if not hyp:
        return len(ref), len(ref)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return out.substitutions + out.deletions + out.insertions, len(ref)


def score(original: Heard, decoded: Heard) -> SpeechScore:
    edits, words = word_errors(original.text, decoded.text)
    n = min(len(original.vad_probs), len(decoded.vad_probs))
    said = original.vad_probs[:n] >= VAD_THRESHOLD
    heard = decoded.vad_probs[:n] >= VAD_THRESHOLD
    return SpeechScore(edits, words, int((said == heard).sum()), n, int(said.sum()))
