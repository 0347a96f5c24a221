"""`encode` / `decode`: image and audio packets <-> DANCE bitstream packets.

Encode emits one container per image, and one lean stream block (bitstream version 3) per audio
block: the preprocessing filter state and a ratio/kbps target's byte reservoir carry across the
blocks of each stream, and the codec is named once per packet in the meta rather than in every
block's bytes. The encoded packet keeps stream, timestamp, seq and the original meta, adding
`codec` (name@hash), `kind` and `raw_bytes`; Decode restores the original packet type from it.

Audio blocks already notch-filtered and companded by the `notch` and `compand` nodes (meta
domain "mu-law") go into the model as they are, not filtered and companded a second time; their
μ and scale must be the checkpoint's. Decode returns such streams companded too (the codec's
output re-companded, exact to float32 rounding), for an `expand` node downstream.

Rate: `level`, `ratio`, `bytes` or `bitrate` (kb/s, audio) set the operating point of a
variable-rate codec per packet (none: its top level). A dict on the `control` input with any of
those keys replaces the target from the next packet on, so a controller can follow a link; a
control message that does not parse is counted (`control_rejected`) and ignored. A packet whose
meta carries `target` (a dict like the control input's, set by an `adapt` node upstream) is coded
at that target; a byte budget no level fits is coded at level 0 and counted (`target_missed`).
Encoded packets carry the `level` coded and `encode_ms`, and `encoded_ns` (monotonic clock) when
they leave, which a link controller reads from the acknowledgements.
"""
from __future__ import annotations

import os
import time
from importlib.resources import files
from pathlib import Path
from typing import Iterator

from pipeline.messages import did_you_mean
from pipeline.node import FILE_OR_NAME, Input, Node, Output, Param
from pipeline.packet import MU_LAW, Packet

CODEC_META = ("codec", "kind", "raw_bytes", "level", "encode_ms", "encoded_ns")
MAX_REMEMBERED_CODECS = 64  # names a hostile stream invents are not remembered past this


class Encode(Node):
    """Compress image frames or audio blocks with a DANCE codec (one checkpoint: one kind)."""

    image = Input("image", "H×W×3 uint8 frames (for an image codec)")
    audio = Input("audio", "frames×channels blocks (for an audio codec)")
    control = Input("metrics", "target changes: a dict with one of level, ratio, bytes, bitrate")
    encoded = Output("encoded", "one DANCE container per packet")
    checkpoint = Param(str, doc="checkpoint file or zoo name (aria-image, aria-audio-spatial, "
                                "aria-audio-fast)", path=FILE_OR_NAME)
    device = Param(str, "cpu", "torch device for the encoder (cpu, cuda, cuda:N)")
    precision = Param(str, "float32", "encoder arithmetic; bfloat16 is ~1.4x faster on CPUs "
                      "with AVX512-BF16, and its containers decode with the same decoder",
                      choices=("float32", "bfloat16"))
    engine = Param(str, "torch", "who runs the encoder network (onnxruntime: CPU float32 only)",
                   choices=("torch", "onnxruntime"))
    level = Param(int, None, "operating point of a variable-rate codec (0 = fewest bytes)", min=0)
    ratio = Param(float, None, "target compression ratio, raw bytes / container bytes", min=1.0)
    bytes = Param(int, None, "byte budget per packet (container included, never exceeded)",
                  min=1)
    bitrate = Param(float, None, "target kb/s of audio (container included)", min=0.001)

    @classmethod
    def check(cls, params: dict, wiring) -> Iterator[tuple[str, str]]:
        """The checkpoint exists, and its kind (image or audio) is the input that is wired."""
        kind, problem = checkpoint_kind(params["checkpoint"])
        if problem:
            yield "checkpoint", problem
            return
        other = "audio" if kind == "image" else "image"
        if other in wiring.inputs:
            yield "checkpoint", (f"{params['checkpoint']} is an {kind} codec but input "
                                 f"'{other}' is wired (it takes {other} packets)")
        if kind == "image" and params["bitrate"] is not None:
            yield "bitrate", "bitrate applies to audio codecs; use ratio or bytes for images"

    def setup(self) -> None:
        from dance.codec import load_codec
        self.codec = load_codec(self.checkpoint, device=self.device, precision=self.precision,
                                engine=self.engine)
        self.target = self._target({"level": self.level, "ratio": self.ratio,
                                    "bytes": self.bytes, "bitrate": self.bitrate})
        self._audio_streams: dict[str, object] = {}
        self.counters.update(control_accepted=0, control_rejected=0, target_missed=0)

    def _target(self, spec: dict):
        from dance.targets import Target
        spec = {("kbps" if k == "bitrate" else k): v for k, v in spec.items()}
        target = Target.parse(spec)
        if target.kbps is not None and self.codec.kind != "audio":
            raise ValueError("bitrate applies to audio codecs; use ratio or bytes for images")
        return target

    def on_control(self, packet: Packet) -> None:
        try:
            if not isinstance(packet.payload, dict):
                raise ValueError("not a dict")
            self.target = self._target(packet.payload)
            self.counters["control_accepted"] += 1
        except (TypeError, ValueError):
            self.counters["control_rejected"] += 1

    def _packet_target(self, packet: Packet):
        """The target a controller put in the packet's meta, else the node's own."""
        spec = packet.meta.get("target")
        if spec is None:
            return self.target
        try:
            if not isinstance(spec, dict):
                raise ValueError("not a dict")
            return self._target(spec)
        except (TypeError, ValueError):
            self.counters["control_rejected"] += 1
            return self.target

    def on_image(self, packet: Packet) -> None:
        from dance.targets import Target, TargetError

        self._require("image")
        started = time.perf_counter()
        target = self._packet_target(packet)
        try:
            data = self.codec.compress(packet.payload, target=target)
        except TargetError:
            if target.bytes is None:
                raise
            self.counters["target_missed"] += 1
            data = self.codec.compress(packet.payload, target=Target(level=0))
        self._emit_encoded(packet, "image", data, started)

    def on_audio(self, packet: Packet) -> None:
        self._require("audio")
        rate = int(packet.meta.get("sample_rate", 0))
        session = self._audio_streams.get(packet.stream)
        if session is None:
            companded = packet.meta.get("domain") == MU_LAW
            if companded:
                self._check_companding(packet)
            session = self._audio_streams[packet.stream] = self.codec.audio_encoder(
                rate, companded, blocks=True)
        started = time.perf_counter()
        self._emit_encoded(packet, "audio", session.encode(packet.payload, self.target), started)

    def _check_companding(self, packet: Packet) -> None:
        pre = self.codec.preprocessor
        mu, scale = packet.meta.get("mu"), packet.meta.get("scale")
        if (mu, scale) != (pre.mu, pre.scale):
            raise ValueError(f"node '{self.name}': stream '{packet.stream}' was companded with "
                             f"mu={mu}, scale={scale}; checkpoint {self.checkpoint} needs "
                             f"mu={pre.mu}, scale={pre.scale}")

    def _require(self, kind: str) -> None:
        if self.codec.kind != kind:
            raise ValueError(f"node '{self.name}': checkpoint {self.checkpoint} is an "
                             f"{self.codec.kind} codec but a packet arrived on input '{kind}'")

    def _emit_encoded(self, packet: Packet, kind: str, data: bytes, started: float) -> None:
        from dance.bitstream import is_block, unpack, unpack_block

        level = (unpack_block(data) if is_block(data) else unpack(data)).level
        meta = {**packet.meta, "codec": self.codec.id, "kind": kind, "raw_bytes": packet.nbytes,
                "level": level,
                "encode_ms": round((time.perf_counter() - started) * 1000, 3),
                "encoded_ns": time.monotonic_ns()}
        self.emit("encoded", packet.replace(payload=data, meta=meta))


class Decode(Node):
    """Decompress DANCE containers back into image or audio packets; a container that does not
    decode (damaged, crafted, another codec's) is counted as `rejected` and dropped."""

    encoded = Input("encoded", "DANCE containers")
    image = Output("image", "reconstructed frames")
    audio = Output("audio", "reconstructed audio blocks")
    checkpoint = Param(str, "", "checkpoint file or zoo name; empty: the zoo codec named in "
                                "each stream", path=FILE_OR_NAME)
    device = Param(str, "cpu", "torch device for the decoder (cpu, cuda, cuda:N)")

    @classmethod
    def check(cls, params: dict, wiring) -> Iterator[tuple[str, str]]:
        if params["checkpoint"]:
            problem = checkpoint_kind(params["checkpoint"])[1]
            if problem:
                yield "checkpoint", problem

    def setup(self) -> None:
        from dance.codec import load_codec, load_codec_for
        self._load = load_codec_for
        self._codecs: dict[tuple[str, bytes], object] = {}   # (name, hash) -> codec or None
        self._fixed = load_codec(self.checkpoint, device=self.device) if self.checkpoint else None

    def on_encoded(self, packet: Packet) -> None:
        from dance.bitstream import BitstreamError
        from dance.zoo import CheckpointError
        try:
            key = _codec_key(packet)
            codec = self._fixed or self._codecs.get(key)
            if codec is None and self._fixed is None and key not in self._codecs:
                try:
                    codec = self._load(*key, device=self.device)
                except CheckpointError:
                    codec = None
                if codec is not None or len(self._codecs) < MAX_REMEMBERED_CODECS:
                    self._codecs[key] = codec  # a missing one is looked up once, then rejected
            if codec is None:
                raise BitstreamError(f"no installed checkpoint is {key[0]}@{key[1].hex()}")
            array, container = codec.decode(packet.payload,
                                            companded=packet.meta.get("domain") == MU_LAW)
        except BitstreamError:  # damaged, crafted or unknown: counted, the stream goes on
            self.counters["rejected"] = self.counters.get("rejected", 0) + 1
            return
        meta = {k: v for k, v in packet.meta.items() if k not in CODEC_META}
        if container.kind == "image":
            meta.update(height=int(array.shape[0]), width=int(array.shape[1]),
                        channels=int(array.shape[2]))
        else:
            meta.update(channels=int(array.shape[1]))
            meta.setdefault("sample_rate", container.sample_rate)
        self.emit(container.kind, packet.replace(payload=array, meta=meta))


def _codec_key(packet: Packet) -> tuple[str, bytes]:
    """(name, hash prefix) of the codec that wrote a packet: from a container's header, or for a
    stream block (which names no codec) from the packet's `codec` meta, `name@hexhash`."""
    from dance.bitstream import HASH_BYTES, BitstreamError, is_block, unpack
    if not isinstance(packet.payload, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"payload is {type(packet.payload).__name__}, not bytes")
    if not is_block(packet.payload):
        container = unpack(packet.payload)
        return container.codec_name, container.codec_hash
    name, _, digest = str(packet.meta.get("codec", "")).rpartition("@")
    try:
        prefix = bytes.fromhex(digest)
    except ValueError:
        prefix = b""
    if not name or len(prefix) != HASH_BYTES:
        raise BitstreamError("a stream block needs its codec in the packet meta (name@hash)")
    return name, prefix


def checkpoint_kind(name: str) -> tuple[str | None, str | None]:
    """(kind, None) of a checkpoint file or zoo name, or (None, why it cannot be loaded). A
    trained zoo name is looked up in its config without importing torch (validate stays
    light); a file is loaded and verified (weights only)."""
    import yaml
    package = Path(str(files("dance")))
    config = package / "configs" / f"{name}.yaml"
    if "/" not in name and config.is_file() and (package / "checkpoints" / f"{name}.pt").is_file():
        kind = yaml.safe_load(config.read_text()).get("kind")
        return kind, None
    from dance import zoo
    try:
        if os.path.isfile(name) or name in zoo.config_names():
            path = zoo.resolve_checkpoint(name)     # an untrained zoo name raises here
            return zoo.load_checkpoint(path)["config"].get("kind"), None
    except zoo.CheckpointError as exc:
        return None, str(exc)
    if "/" in name or os.sep in name:
        return None, f"no such checkpoint file: {name}"
    return None, (f"'{name}' is neither a checkpoint file nor a zoo codec"
                  f"{did_you_mean(name, zoo.config_names())} (zoo codecs: "
                  f"{', '.join(zoo.config_names())})")
