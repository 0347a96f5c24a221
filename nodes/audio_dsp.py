"""`notch`, `compand`, `expand`: the audio preprocessing chain of the DANCE paper as graph nodes.

notch (DC + optional mains) -> compand (μ-law) -> [codec] -> expand. The library code is
dance.preprocess (the same filter and companding train the codec); docs/spatial-audio.md has the
design. Packets say which domain they are in with meta `domain`: "linear" (float at full scale
±1 = int32 full scale) after notch/expand, "mu-law" (with `mu`, `scale`) after compand. The
`encode` node takes "mu-law" blocks as the model's input directly instead of filtering and
companding them again, and `decode` returns such streams in the same domain.
"""
from __future__ import annotations

import numpy as np

from dance.preprocess import (FLOAT_FULL_SCALE, NotchFilter, PreprocessError, compand, expand,
                              full_scale, notch_sos)
from pipeline.node import FILE_OR_NAME, Input, Node, Output, Param
from pipeline.packet import MU_LAW, Packet

LINEAR = "linear"


def codec_preprocess(node: Node, checkpoint: str) -> dict:
    """The preprocess settings stored in a DANCE audio checkpoint (file or zoo name)."""
    from dance.zoo import CheckpointError, load_checkpoint, resolve_checkpoint
    try:
        config = load_checkpoint(resolve_checkpoint(checkpoint))["config"]
    except CheckpointError as exc:
        raise ValueError(f"node '{node.name}': {exc}") from None
    spec = dict(config.get("preprocess") or {})
    if spec.get("type") != "audio":
        raise ValueError(f"node '{node.name}': checkpoint {checkpoint} is not an audio codec")
    return spec


def _samples(node: Node, packet: Packet) -> np.ndarray:
    try:
        return full_scale(np.asarray(packet.payload))
    except PreprocessError as exc:
        raise ValueError(f"node '{node.name}': stream '{packet.stream}' seq {packet.seq}: "
                         f"{exc}") from None


class Notch(Node):
    """Remove each microphone's DC offset and drift (a notch at 0 Hz), optionally mains hum.

    Output: float32 at full scale (int32 counts / 2^31), meta domain "linear". The filter state
    carries across the blocks of each stream, so block size does not change the output."""

    audio = Input("audio", "frames×channels int32/int64 counts or float at full scale")
    filtered = Output("audio", "notch-filtered float32 blocks (full scale ±1)")
    dc_cutoff_hz = Param(float, 10.0, "-3 dB corner of the DC notch (pole radius "
                                      "exp(-2π·fc/fs)); 10 Hz as the aria-audio codec was "
                                      "trained with", min=0.001)
    mains_hz = Param(float, 0.0, "mains frequency to notch out with its harmonics (50 or 60; "
                                 "0: off)", min=0.0)
    mains_harmonics = Param(int, 3, "how many multiples of mains_hz to notch", min=1)
    mains_q = Param(float, 30.0, "quality factor of each mains notch (width = f/Q)", min=0.1)
    checkpoint = Param(str, "", "a DANCE audio codec (file or zoo name) whose stored notch "
                                "settings replace the ones above, so its input matches training",
                       path=FILE_OR_NAME)

    def setup(self) -> None:
        self._filters: dict[str, NotchFilter] = {}
        if self.checkpoint:
            spec = codec_preprocess(self, self.checkpoint)
            for key in ("dc_cutoff_hz", "mains_hz", "mains_harmonics", "mains_q"):
                if key in spec:
                    setattr(self, key, type(getattr(self, key))(spec[key]))

    def on_audio(self, packet: Packet) -> Packet:
        samples = _samples(self, packet)
        notch = self._filters.get(packet.stream)
        if notch is None:
            rate = int(packet.meta.get("sample_rate", 0))
            if rate <= 2 * self.dc_cutoff_hz:
                raise ValueError(f"node '{self.name}': stream '{packet.stream}' has sample_rate "
                                 f"{rate}, too low for a {self.dc_cutoff_hz} Hz notch")
            sos = notch_sos(rate, self.dc_cutoff_hz, self.mains_hz, self.mains_harmonics,
                            self.mains_q)
            notch = self._filters[packet.stream] = NotchFilter(sos)
        meta = {**packet.meta, "domain": LINEAR}
        return packet.replace(payload=notch(samples).astype(np.float32), meta=meta)


class Compand(Node):
    """μ-law companding, y = sign(x)·ln(1+μ|x|)/ln(1+μ) of x = clip(v·2^31/scale, ±1).

    Gives quiet microphone signals (~60 dB below int32 full scale) the resolution the codec
    needs; `expand` inverts it exactly. Meta gets domain "mu-law", mu, scale."""

    audio = Input("audio", "linear audio (float at full scale, or int32 counts)")
    companded = Output("audio", "float32 blocks in [-1, 1]")
    mu = Param(float, 65535.0, "μ of the μ-law (the paper's 65535; the shipped aria-audio "
                               "checkpoints use 255 at scale 2^26: set `checkpoint` to follow "
                               "a codec)", min=1.0)
    scale = Param(float, FLOAT_FULL_SCALE, "int32 counts that map to ±1 before companding",
                  min=1.0)
    checkpoint = Param(str, "", "a DANCE audio codec (file or zoo name) whose stored mu and "
                                "scale replace the ones above (the encode node requires them)",
                       path=FILE_OR_NAME)

    def setup(self) -> None:
        if self.checkpoint:
            spec = codec_preprocess(self, self.checkpoint)
            self.mu, self.scale = float(spec.get("mu", self.mu)), float(spec.get("scale",
                                                                                self.scale))

    def on_audio(self, packet: Packet) -> Packet:
        if packet.meta.get("domain") == MU_LAW:
            raise ValueError(f"node '{self.name}': stream '{packet.stream}' is companded "
                             f"already")
        gain = FLOAT_FULL_SCALE / self.scale
        y = compand(_samples(self, packet), self.mu, gain).astype(np.float32)
        meta = {**packet.meta, "domain": MU_LAW, "mu": self.mu, "scale": self.scale}
        return packet.replace(payload=y, meta=meta)


class Expand(Node):
    """Undo `compand` (its mu and scale travel in the packet meta): back to linear float32."""

    audio = Input("audio", "μ-law blocks (meta domain mu-law, mu, scale)")
    linear = Output("audio", "float32 blocks at full scale")

    def on_audio(self, packet: Packet) -> Packet:
        meta = dict(packet.meta)
        if meta.get("domain") != MU_LAW or "mu" not in meta or "scale" not in meta:
            raise ValueError(f"node '{self.name}': stream '{packet.stream}' seq {packet.seq} "
                             f"is not μ-law audio (meta domain={meta.get('domain')!r}); "
                             f"put a compand node upstream")
        samples = np.asarray(packet.payload)
        if samples.ndim != 2 or samples.dtype.kind != "f":
            raise ValueError(f"node '{self.name}': stream '{packet.stream}' seq {packet.seq}: "
                             f"μ-law audio must be frames×channels float, got "
                             f"{samples.shape} {samples.dtype}")
        gain = FLOAT_FULL_SCALE / float(meta.pop("scale"))
        x = expand(samples, float(meta.pop("mu")), gain).astype(np.float32)
        meta["domain"] = LINEAR
        return packet.replace(payload=x, meta=meta)
