"""`split_head` and `split_tail`: a torchvision classifier cut at a layer (perception/split.py),
the head on the device, the tail on the server, the tensor between them coded by an ECQ feature
codec (dance/feature_codec.py, designed by `dance split-fit`)."""
from __future__ import annotations

import numpy as np

from nodes.classify import prediction_payload
from pipeline.node import FILE, FILE_OR_NAME, Input, Node, Output, Param
from pipeline.packet import Packet

from perception.classifier import DEFAULT_MODEL


def _load(node: Node):
    """(classifier, head, tail, codec) of a node's model, weights and codec file."""
    from dance.feature_codec import EcqFeatureCodec, FeatureCodecError
    from perception.classifier import load_image_classifier
    from perception.split import SplitError, split_model
    try:
        codec = EcqFeatureCodec.load(node.codec)
        if codec.model != node.model:
            raise FeatureCodecError(f"{node.codec} codes {codec.model} {codec.layer}, not "
                                    f"{node.model}")
        classifier = load_image_classifier(node.model, node.weights or None)
        head, tail = split_model(classifier.model, codec.layer)
    except (FeatureCodecError, SplitError) as exc:
        raise ValueError(f"node '{node.name}': {exc}") from None
    return classifier, head, tail, codec


class SplitHead(Node):
    """The device half: preprocessing and the layers up to the codec's split point, then the
    ECQ feature codec; sends the coded tensor. A few MMACs of the network instead of a codec
    (`dance split-info` lists the cost of every split point)."""

    image = Input("image", "H×W×3 uint8 frames")
    encoded = Output("encoded", "the coded feature tensor, meta codec (the codec file's tag), "
                                "layer, point, raw_bytes (the frame's)")
    model = Param(str, DEFAULT_MODEL, "torchvision classification model")
    weights = Param(str, "", "its weights file (empty: torch's hub cache)", path=FILE_OR_NAME)
    codec = Param(str, doc="feature codec JSON made by `dance split-fit` for this model",
                  path=FILE)
    point = Param(int, 0, "operating point of the codec, 0 = most bytes", min=0)

    def setup(self) -> None:
        self.classifier, self.head, _, self.feature_codec = _load(self)
        if self.point >= len(self.feature_codec.points):
            raise ValueError(f"node '{self.name}': point {self.point}: {self.codec} has "
                             f"{len(self.feature_codec.points)} operating points")
        self.feature_codec.compress(np.zeros(self.feature_codec.shape), self.point)  # warm up
        self.counters.update(layer=self.feature_codec.layer, bytes=0)

    def on_image(self, packet: Packet) -> Packet:
        import torch
        with torch.inference_mode():
            features = self.head(self.classifier.prepare(packet.payload)[None])[0].numpy()
        data = self.feature_codec.compress(features, self.point)
        self.counters["bytes"] += len(data)
        return Packet(packet.stream, packet.timestamp_ns, packet.seq, data,
                      {"codec": self.feature_codec.tag.hex(), "kind": "features",
                       "layer": self.feature_codec.layer, "point": self.point,
                       "raw_bytes": int(np.asarray(packet.payload).nbytes)})


class SplitTail(Node):
    """The server half: decodes the feature tensor and runs the rest of the network; emits the
    same predictions as `classify`, so `label_retention` compares them with the unsplit model
    on the original frames. A payload that does not decode (damaged, another codec's) is
    counted as `rejected` and dropped."""

    encoded = Input("encoded", "payloads of `split_head` with the same codec file")
    predictions = Output("labels", "per frame {label, index, prob, max_logit, confident, "
                                   "top_k: [[label, prob], ...]}, with the frame's stream, "
                                   "timestamp and seq")
    model = Param(str, DEFAULT_MODEL, "torchvision classification model")
    weights = Param(str, "", "its weights file (empty: torch's hub cache)", path=FILE_OR_NAME)
    codec = Param(str, doc="the feature codec JSON the head uses", path=FILE)
    top_k = Param(int, 5, "labels with probabilities listed per frame", min=1)
    min_confidence = Param(float, 0.0, "frames whose top-1 probability is below it are marked "
                                       "confident: false", min=0.0, max=1.0)

    def setup(self) -> None:
        self.classifier, _, self.tail, self.feature_codec = _load(self)
        self.classifier.top_k = self.top_k
        self.feature_codec.decompress(self.feature_codec.compress(
            np.zeros(self.feature_codec.shape), 0))              # warm up: the coder's imports
        self.counters.update(layer=self.feature_codec.layer, rejected=0)

    def on_encoded(self, packet: Packet) -> Packet | None:
        import torch

        from dance.feature_codec import FeatureCodecError
        try:
            if not isinstance(packet.payload, (bytes, bytearray, memoryview)):
                raise FeatureCodecError(f"payload is {type(packet.payload).__name__}, not bytes")
            features = self.feature_codec.decompress(bytes(packet.payload))
        except FeatureCodecError:
            self.counters["rejected"] += 1
            return None
        with torch.inference_mode():
            [pred] = self.classifier.predictions(self.tail(torch.from_numpy(features)[None]))
        return Packet(packet.stream, packet.timestamp_ns, packet.seq,
                      prediction_payload(pred, self.min_confidence, all_probs=False),
                      {"model": self.model, "layer": self.feature_codec.layer})
