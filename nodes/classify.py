"""`classify`: ImageNet labels for camera frames with a torchvision model (perception/classifier.py
does the work)."""
from __future__ import annotations

import os
from typing import Iterator

from pipeline.messages import did_you_mean
from pipeline.node import FILE_OR_NAME, Input, Node, Output, Param
from pipeline.packet import Packet

from perception.classifier import DEFAULT_MODEL, RANDOM


class Classify(Node):
    """Top-1 ImageNet label, its probability and logit, and the top-k labels of every frame,
    from a pretrained torchvision classifier (MobileNetV2 by default).

    Weights come from local files only (nothing is downloaded): the torchvision weights file at
    `weights`, or, when empty, the model's file already in torch's hub cache; a missing or
    mismatched file stops the graph with one line naming the file to provide. Preprocessing is
    that of the weights (MobileNetV2 V1: shorter side 256, centre crop 224, ImageNet mean/std).
    Frames queued while the model runs are classified together, up to `batch` at a time.
    Packets have the payload of `clip_zero_shot` (so `label_retention` takes them) plus `prob`
    and `top_k`; frames whose top-1 probability is below `min_confidence` are marked
    `confident: false`."""

    image = Input("image", "H×W×3 (or grey) uint8 frames", batch="batch")
    predictions = Output("labels", "per frame {label, index, prob, max_logit, confident, "
                                   "top_k: [[label, prob], ...], probs (all classes, unless "
                                   "all_probs is false)}, with the frame's stream, timestamp "
                                   "and seq")
    model = Param(str, DEFAULT_MODEL, "torchvision classification model name "
                                      "(`torchvision.models.list_models()`)")
    weights = Param(str, "", "torchvision state-dict file of that model (e.g. "
                             "mobilenet_v2-b0353104.pth); empty: the model's file in "
                             "torch.hub.get_dir()/checkpoints; 'random' (meaningless random "
                             "init, for plumbing checks)", path=FILE_OR_NAME)
    device = Param(str, "auto", "torch device (cpu, cuda, cuda:N); auto: cuda when available")
    top_k = Param(int, 5, "labels with probabilities listed per frame", min=1)
    batch = Param(int, 8, "most queued frames classified in one forward pass", min=1)
    min_confidence = Param(float, 0.0, "confidence filter: frames whose top-1 probability is "
                                       "below it are marked confident: false", min=0.0, max=1.0)
    all_probs = Param(bool, True, "include `probs`, the softmax over all classes (1000 numbers "
                                  "for ImageNet); false: only top_k")

    @classmethod
    def check(cls, params: dict, wiring) -> Iterator[tuple[str, str]]:
        """The model is a torchvision classifier and its weights file is here (the hub cache's
        when `weights` is empty), found as setup() finds them."""
        from perception.classifier import (classification_models, hub_checkpoints,
                                           weights_file_names)
        model, weights = params["model"], params["weights"]
        known = classification_models()
        if model not in known:
            yield "model", (f"unknown torchvision classification model '{model}'"
                            f"{did_you_mean(model, known)}")
            return
        names = weights_file_names(model)
        if weights == RANDOM:
            return
        if not weights:
            if not any((hub_checkpoints() / name).is_file() for name in names):
                yield "weights", (f"{model} weights not found: put {' or '.join(names)} in "
                                  f"{hub_checkpoints()} or pass weights=PATH")
        elif not os.path.isfile(weights):
            yield "weights", (f"{model} weights not found: {weights} "
                              f"{'is a folder' if os.path.isdir(weights) else 'does not exist'}")

    def setup(self) -> None:
        import torch

        from perception.classifier import load_image_classifier
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.classifier = load_image_classifier(self.model, self.weights or None, device,
                                                self.top_k, self.batch)
        self.counters.update(model=self.classifier.description, device=device, batches=0,
                             largest_batch=0, confident=0)

    def on_image(self, packets: list[Packet]) -> None:
        predictions = self.classifier.classify([p.payload for p in packets])
        self.counters["batches"] += 1
        self.counters["largest_batch"] = max(self.counters["largest_batch"], len(packets))
        for packet, pred in zip(packets, predictions):
            payload = prediction_payload(pred, self.min_confidence, self.all_probs)
            self.counters["confident"] += payload["confident"]
            self.emit("predictions", Packet(packet.stream, packet.timestamp_ns, packet.seq,
                                           payload, {"model": self.model}))


def prediction_payload(pred, min_confidence: float, all_probs: bool) -> dict:
    """The `labels` payload of a classifier's prediction (what label_retention reads)."""
    payload = {"label": pred.label, "index": pred.index, "prob": round(pred.prob, 6),
               "max_logit": round(pred.max_logit, 4), "confident": pred.prob >= min_confidence,
               "top_k": [[label, round(p, 6)]
                         for label, p in zip(pred.top_labels, pred.top_probs)]}
    if all_probs:
        payload["probs"] = [round(float(p), 6) for p in pred.probs]
    return payload
