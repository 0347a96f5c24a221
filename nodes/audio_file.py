"""`audio_file`: replay a WAV/FLAC file as a microphone stream, so speech models and audio
codecs run on recorded clips (e.g. the 7-channel rooms of `python -m dance.simulate`), no VRS
file needed."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from nodes.synthetic import sample_time_ns
from pipeline.node import FILE, Output, Param, Source
from pipeline.packet import Packet, audio_packet


class AudioFileSource(Source):
    """Replay a multichannel audio file (anything libsndfile reads) as int32 audio blocks.

    Blocks look like the `mic` stream of `synthetic_aria` and `aria_vrs`: frames×channels int32
    counts (16-bit files scaled to int32 full scale), timestamps on the same device-like clock,
    advancing by samples. The file is read block by block, so long files need little memory."""

    audio = Output("audio", "block×channels int32 at the file's rate, on stream `stream`")
    path = Param(str, doc="audio file to replay (WAV, FLAC, ...)", path=FILE)
    block = Param(int, 4096, "samples per block; the last block of the file may be shorter",
                  min=1)
    speed = Param(float, 1.0, "real-time factor; 0 = as fast as possible", min=0.0)
    start_s = Param(float, 0.0, "skip this many seconds at the start of the file", min=0.0)
    end_s = Param(float, 0.0, "stop this many seconds into the file; 0 = at the end", min=0.0)
    loop = Param(bool, False, "start over at the end, timestamps continuing to increase")
    stream = Param(str, "mic", "stream name of the blocks")

    @classmethod
    def check(cls, params: dict, wiring) -> Iterator[tuple[str, str]]:
        """The file's header is one libsndfile reads (the path exists: a FILE parameter)."""
        import soundfile as sf
        try:
            sf.info(params["path"])
        except (sf.SoundFileError, RuntimeError) as exc:
            yield "path", (f"{params['path']}: cannot read audio "
                           f"({getattr(exc, 'error_string', exc)})")

    def setup(self) -> None:
        import soundfile as sf

        path = Path(self.path)
        where = f"node '{self.name}': {path}"
        if not path.is_file():
            raise ValueError(f"{where}: no such audio file")
        try:
            self._file = sf.SoundFile(str(path))
        except (sf.SoundFileError, RuntimeError) as exc:
            raise ValueError(f"{where}: cannot read audio "
                             f"({getattr(exc, 'error_string', exc)})") from None
        try:
            self._check(where)
        except ValueError:
            self.teardown()
            raise

    def _check(self, where: str) -> None:
        rate, frames = self._file.samplerate, self._file.frames
        if frames <= 0:
            raise ValueError(f"{where}: no audio frames")
        self._first = round(self.start_s * rate)
        if self._first >= frames:
            raise ValueError(f"{where}: start_s {self.start_s} is beyond the end of the file "
                             f"({frames / rate:.3f} s long)")
        if self.end_s and self.end_s <= self.start_s:
            raise ValueError(f"{where}: end_s {self.end_s} must exceed start_s {self.start_s}")
        self._last = min(frames, round(self.end_s * rate)) if self.end_s else frames

    def run(self) -> Iterator[Packet]:
        import soundfile as sf

        file, rate = self._file, self._file.samplerate
        span = self._last - self._first
        seq = played = 0  # played: frames emitted over all passes, so time keeps advancing
        while True:
            file.seek(self._first)
            done = 0
            while done < span:
                if self.stopping:
                    return
                try:
                    samples = file.read(min(self.block, span - done), dtype="int32",
                                        always_2d=True)
                except (sf.SoundFileError, RuntimeError) as exc:
                    raise ValueError(f"node '{self.name}': {self.path}: cannot read audio at "
                                     f"{(self._first + done) / rate:.3f} s "
                                     f"({getattr(exc, 'error_string', exc)})") from None
                if not len(samples):  # the file holds fewer frames than its header says
                    break
                index = self._first + played
                # A block is complete (and so due) at its last sample.
                self.pace(sample_time_ns(index + len(samples), rate))
                yield audio_packet(self.stream, sample_time_ns(index, rate), seq, samples, rate)
                seq += 1
                done += len(samples)
                played += len(samples)
            if not self.loop or not done:
                return

    def teardown(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None
