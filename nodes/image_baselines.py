"""`image_baseline_encode` / `image_baseline_decode`: RR+JPEG/WebP/AVIF and JPEG/WebP/AVIF as codec nodes.

Same ports and packet meta as `encode` / `decode` (nodes/codec.py), so a graph switches between
the learned codec and a baseline by changing the encoder's line. The decoder also decodes DANCE
image containers, so the server side stays as it is whichever codec the device runs.
"""
from __future__ import annotations

from baselines.image import METHODS
from pipeline.node import FILE_OR_NAME, Input, Node, Output, Param
from pipeline.packet import Packet

from .codec import CODEC_META, Decode


class ImageBaselineEncode(Node):
    """Compress frames with resolution reduction + JPEG/WebP/AVIF (budget or ratio met by
    searching scale and quality, never exceeded) or plain JPEG/WebP/AVIF at a quality."""

    image = Input("image", "H×W×3 uint8 frames")
    encoded = Output("encoded", "one baseline container per frame (baselines/image.py)")
    method = Param(str, doc="rr_jpeg, rr_webp, rr_avif: reduced resolution to meet "
                   "budget_bytes or ratio; jpeg, webp, avif: full resolution",
                   choices=METHODS)
    budget_bytes = Param(int, None, "bytes per frame, container included", min=1)
    ratio = Param(float, None, "compression ratio per frame: raw H·W·3 bytes / bytes", min=1.0)
    quality = Param(int, None, "jpeg / webp / avif only: fixed quality (JPEG 1-100, WebP and "
                               "AVIF 0-100)")
    scale = Param(float, None, "rr_* only: one fixed reduction factor instead of the search "
                               "(the DANCE paper's RR+JPEG: 8)", min=1.0)

    def setup(self) -> None:
        from baselines.image import ImageBaseline
        try:
            self.codec = ImageBaseline(self.method, quality=self.quality,
                                       budget_bytes=self.budget_bytes, ratio=self.ratio,
                                       scale=self.scale)
        except ValueError as exc:
            raise ValueError(f"node '{self.name}': {exc}") from None

    def on_image(self, packet: Packet) -> None:
        try:
            data = self.codec.compress(packet.payload)
        except ValueError as exc:
            raise ValueError(f"node '{self.name}': {exc}") from None
        meta = {**packet.meta, "codec": self.codec.id, "kind": "image",
                "raw_bytes": packet.nbytes}
        self.emit("encoded", packet.replace(payload=data, meta=meta))


class ImageBaselineDecode(Decode):
    """Decompress image baseline containers (and DANCE image containers) back into frames at
    their original size."""

    encoded = Input("encoded", "image baseline or DANCE image containers")
    image = Output("image", "reconstructed frames")
    audio = None    # images only
    checkpoint = Param(str, "", "DANCE containers: checkpoint file or zoo name; empty: the zoo "
                                "codec named in each stream", path=FILE_OR_NAME)
    device = Param(str, "cpu", "DANCE containers: torch device (cpu, cuda, cuda:N)")

    def on_encoded(self, packet: Packet) -> None:
        from baselines.image import BaselineError, decode
        from dance.bitstream import MAGIC as DANCE_MAGIC
        payload = bytes(packet.payload)
        if payload.startswith(DANCE_MAGIC):
            if packet.meta.get("kind", "image") != "image":
                raise ValueError(f"node '{self.name}': decodes images; {packet.meta['kind']} "
                                 f"containers need a `decode` node")
            return super().on_encoded(packet)
        try:
            frame = decode(payload)
        except BaselineError as exc:
            raise ValueError(f"node '{self.name}': packet {packet.stream}#{packet.seq}: "
                             f"{exc}") from None
        meta = {k: v for k, v in packet.meta.items() if k not in CODEC_META}
        meta.update(height=int(frame.shape[0]), width=int(frame.shape[1]), channels=3)
        self.emit("image", packet.replace(payload=frame, meta=meta))
