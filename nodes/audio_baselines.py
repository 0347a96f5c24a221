"""`audio_baseline_encode` / `audio_baseline_decode`: MP3 or Opus in place of the DANCE codec.

Same interface as `encode` / `decode`: audio blocks in, one container of bytes per block out
(meta `codec`, `kind`, `raw_bytes`), and back. Details and the container layout are in
baselines/audio.py. `raw_bytes` counts the block as int32 (4 bytes a sample) whatever dtype
arrives, so compression ratios are against the microphones' int32 samples.
"""
from __future__ import annotations

from pipeline.node import Input, Node, Output, Param
from pipeline.packet import Packet

CODEC_META = ("codec", "kind", "raw_bytes")


class AudioBaselineEncode(Node):
    """Encode audio with MP3 (LAME) or Opus (libopus): one mono stream per channel."""

    audio = Input("audio", "frames×channels blocks: int32 counts or float at full scale")
    encoded = Output("encoded", "one container per block (audio baseline format)")
    codec = Param(str, "opus", "which codec", choices=("mp3", "opus"))
    bitrate = Param(int, 6000, "bits/s per channel (MP3 at 48 kHz: 32000..320000 CBR steps; "
                               "48000 is ~31:1 against int32)", min=1000)
    gain_db = Param(float, 40.0, "gain before encoding, removed after decoding: brings the "
                                 "quiet Aria microphones (~-70 dBFS) into the codec's range")

    def setup(self) -> None:
        self._encoders: dict[str, object] = {}
        self._last: dict[str, Packet] = {}

    def on_audio(self, packet: Packet) -> None:
        from baselines.audio import AudioBaselineEncoder
        encoder = self._encoders.get(packet.stream)
        if encoder is None:
            channels = packet.payload.shape[1] if packet.payload.ndim == 2 else 0
            try:
                encoder = AudioBaselineEncoder(self.codec, self.bitrate, channels,
                                               int(packet.meta.get("sample_rate", 0)),
                                               self.gain_db)
            except ValueError as exc:
                raise ValueError(f"node '{self.name}': stream '{packet.stream}': {exc}") from None
            self._encoders[packet.stream] = encoder
        try:
            data = encoder.encode(packet.payload)
        except ValueError as exc:
            raise ValueError(f"node '{self.name}': stream '{packet.stream}' seq {packet.seq}: "
                             f"{exc}") from None
        self._last[packet.stream] = packet
        self._send(packet, data, 4 * packet.payload.size)

    def end_of_input(self) -> None:
        """The stream ends: send what the encoders still hold (and the stream's length)."""
        super().end_of_input()
        for stream, encoder in self._encoders.items():
            last = self._last[stream]
            rate = int(last.meta["sample_rate"])
            end_ns = last.timestamp_ns + round(len(last.payload) * 1e9 / rate)
            meta = {**last.meta, "first_sample_ns": end_ns}
            self._send(last.replace(timestamp_ns=end_ns, seq=last.seq + 1, meta=meta),
                       encoder.flush(), 0)
        self._encoders.clear()

    def _send(self, packet: Packet, data: bytes, raw_bytes: int) -> None:
        meta = {**packet.meta, "codec": f"{self.codec}@{self.bitrate}", "kind": "audio",
                "raw_bytes": raw_bytes}
        self.emit("encoded", packet.replace(payload=data, meta=meta))


class AudioBaselineDecode(Node):
    """Decode MP3/Opus baseline containers back into float32 audio lined up with the input."""

    encoded = Input("encoded", "audio baseline containers, in order per stream")
    audio = Output("audio", "float32 frames×channels at full scale")

    def setup(self) -> None:
        self._decoders: dict[str, object] = {}
        self._seq: dict[str, int] = {}
        self.counters.update(gaps=0)

    def on_encoded(self, packet: Packet) -> Packet | None:
        from baselines.audio import AudioBaselineDecoder
        decoder = self._decoders.setdefault(packet.stream, AudioBaselineDecoder())
        gaps = decoder.gaps
        try:
            block = decoder.decode(packet.payload)
        except ValueError as exc:
            raise ValueError(f"node '{self.name}': stream '{packet.stream}' seq {packet.seq}: "
                             f"{exc}") from None
        self.counters["gaps"] += decoder.gaps - gaps
        if not len(block):
            return None
        rate = decoder.settings[2]
        # the container's block started at input index container_first, at packet.timestamp_ns
        first_ns = packet.timestamp_ns + round((decoder.block_start - decoder.container_first)
                                               * 1e9 / rate)
        seq = self._seq.get(packet.stream, 0)
        self._seq[packet.stream] = seq + 1
        meta = {k: v for k, v in packet.meta.items() if k not in CODEC_META}
        meta.update(sample_rate=rate, channels=int(block.shape[1]), first_sample_ns=first_ns)
        return packet.replace(timestamp_ns=first_ns, seq=seq, payload=block, meta=meta)
