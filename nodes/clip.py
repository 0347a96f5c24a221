"""`clip_zero_shot`: CLIP zero-shot labels for camera frames (perception/clip.py does the work)."""
from __future__ import annotations

import os
from typing import Iterator

from pipeline.messages import did_you_mean
from pipeline.node import FILE_OR_NAME, Input, Node, Output, Param
from pipeline.packet import Packet

from perception.clip import _WEIGHT_SUFFIXES, DEFAULT_LABELS, PROMPT_TEMPLATE, RANDOM


class ClipZeroShot(Node):
    """Top-1 CLIP zero-shot label, class probabilities and max logit of every frame.

    Weights come from local files only (nothing is downloaded): a checkpoint path, or a
    pretrained tag already in the Hugging Face / open_clip cache; a missing file stops the
    graph with one line saying how to provide it. Frames queued while the model runs are
    classified together, up to `batch` at a time. The max logit (100 × cosine similarity for
    trained CLIP models) is the paper's confidence: frames below `min_logit` are marked
    `confident: false`."""

    image = Input("image", "H×W×3 (or grey) uint8 frames", batch="batch")
    predictions = Output("labels", "per frame {label, index, probs, max_logit, confident}, "
                                   "with the frame's stream, timestamp and seq")
    model = Param(str, "ViT-B-32", "open_clip model name (`open_clip.list_models()`; "
                                   "dance-tiny-clip is a tiny test architecture)")
    weights = Param(str, "", "checkpoint file (.safetensors/.bin), a pretrained tag found in the "
                             "local cache (e.g. laion2b_s34b_b79k), 'random' (meaningless "
                             "random init, for tests); empty: the first cached tag of the model",
                    path=FILE_OR_NAME)
    labels = Param(list, list(DEFAULT_LABELS), "class names (default: the 13 of the DANCE "
                                               "paper's Table 1)")
    template = Param(str, PROMPT_TEMPLATE, "prompt per class; {} is replaced by the label")
    device = Param(str, "auto", "torch device (cpu, cuda, cuda:N); auto: cuda when available")
    batch = Param(int, 8, "most queued frames classified in one forward pass", min=1)
    min_logit = Param(float, 18.0, "confidence filter: frames whose max logit is below it are "
                                   "marked confident: false (the paper keeps >= 18)")

    @classmethod
    def check(cls, params: dict, wiring) -> Iterator[tuple[str, str]]:
        """Labels, model name and local weights, found as setup() finds them (no download)."""
        labels, model, weights = params["labels"], params["model"], params["weights"]
        if not labels or not all(isinstance(x, str) and x for x in labels):
            yield "labels", "must be a non-empty list of names"
        if weights == RANDOM:
            return
        if "/" in weights or os.sep in weights or weights.endswith(_WEIGHT_SUFFIXES):
            if not os.path.isfile(weights):
                yield "weights", f"CLIP weights file not found: {weights}"
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # looking in the cache, never the network
        import open_clip

        from perception.clip import ClipWeightsError, _resolve_weights, register_tiny_config
        register_tiny_config()
        if model not in open_clip.list_models():
            yield "model", (f"unknown open_clip model '{model}'"
                            f"{did_you_mean(model, open_clip.list_models())}")
            return
        try:
            _resolve_weights(model, weights or None)
        except ClipWeightsError as exc:
            yield "weights", str(exc)

    def setup(self) -> None:
        if not self.labels or not all(isinstance(x, str) and x for x in self.labels):
            raise ValueError(f"node '{self.name}': labels must be a non-empty list of names, "
                             f"got {self.labels!r}")
        import torch

        from perception.clip import load_classifier
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.classifier = load_classifier(self.model, self.weights or None, self.labels,
                                          self.template, device)
        self.counters.update(model=self.classifier.description, device=device, batches=0,
                             largest_batch=0, confident=0)

    def on_image(self, packets: list[Packet]) -> None:
        predictions = self.classifier.classify([p.payload for p in packets])
        self.counters["batches"] += 1
        self.counters["largest_batch"] = max(self.counters["largest_batch"], len(packets))
        for packet, pred in zip(packets, predictions):
            confident = pred.max_logit >= self.min_logit
            self.counters["confident"] += confident
            payload = {"label": pred.label, "index": pred.index,
                       "probs": [round(float(p), 6) for p in pred.probs],
                       "max_logit": round(pred.max_logit, 4), "confident": confident}
            self.emit("predictions", Packet(packet.stream, packet.timestamp_ns, packet.seq,
                                           payload, {"model": self.model}))
