"""CLIP zero-shot classification of camera frames with open_clip, weights from local files only.

    classifier = load_classifier("ViT-B-32", "laion2b_s34b_b79k")   # a tag already in the cache
    classifier = load_classifier("ViT-B-32", "/models/open_clip_model.safetensors")
    [pred] = classifier.classify([frame])       # H×W×3 uint8
    pred.label, pred.max_logit

Nothing is downloaded: a pretrained tag is looked up in the Hugging Face hub cache and in
open_clip's URL cache (~/.cache/clip), and a missing file raises `ClipWeightsError` whose one-line
message says how to provide it. `weights="random"` builds a randomly initialised model (tests,
plumbing checks); its predictions mean nothing. The tiny `dance-tiny-clip` architecture
(32² input, 2+2 layers) is registered with open_clip so that tests run the real code path in
seconds.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_LABELS = ("kitchen", "cooking", "food", "drink", "spill", "table", "television", "phone",
                  "laptop", "video game", "board game", "clothes", "laundry")  # paper, Table 1
PROMPT_TEMPLATE = "a photo of {}."
RANDOM = "random"
TINY_MODEL = "dance-tiny-clip"
_CONFIGS = Path(__file__).parent / "model_configs"
_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".npz")


class ClipWeightsError(RuntimeError):
    """CLIP weights that are not available locally; the message says how to provide them."""


@dataclass
class Prediction:
    """Top-1 zero-shot prediction on one frame; `probs` is the softmax over all labels."""
    label: str
    index: int
    probs: np.ndarray
    max_logit: float


class ZeroShotClassifier:
    """An open_clip model with the label prompts already embedded."""

    def __init__(self, model, preprocess, text_features, labels: Sequence[str], device: str,
                 description: str):
        self.model, self.preprocess, self.device = model, preprocess, device
        self.text_features = text_features
        self.labels = list(labels)
        self.description = description

    def classify(self, frames: Sequence[np.ndarray]) -> list[Prediction]:
        """Predictions for H×W×3 (or H×W / H×W×1 grey) uint8 frames, in one batch."""
        if not frames:
            return []
        import torch
        from PIL import Image

        pixels = torch.stack([self.preprocess(Image.fromarray(_rgb(frame))) for frame in frames])
        with torch.inference_mode():
            features = self.model.encode_image(pixels.to(self.device), normalize=True)
            logits = self.model.logit_scale.exp() * features @ self.text_features.T
            if getattr(self.model, "logit_bias", None) is not None:
                logits = logits + self.model.logit_bias
            probs = logits.softmax(dim=-1)
        logits, probs = logits.float().cpu().numpy(), probs.float().cpu().numpy()
        best = logits.argmax(axis=1)
        return [Prediction(self.labels[i], int(i), p, float(row[i]))
                for i, p, row in zip(best, probs, logits)]


def _rgb(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 or H×W frame, got shape {frame.shape}")
    return frame


def register_tiny_config() -> None:
    """Make `dance-tiny-clip` (and any config in perception/model_configs) known to open_clip."""
    import open_clip

    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(_CONFIGS)


def load_classifier(model: str, weights: str | None, labels: Sequence[str] = DEFAULT_LABELS,
                    template: str = PROMPT_TEMPLATE, device: str = "cpu") -> ZeroShotClassifier:
    """Build a zero-shot classifier from local weights only.

    `weights`: a checkpoint file (.bin/.pt/.safetensors from the model's open_clip release), an
    open_clip pretrained tag found in the local cache, None for the first cached tag of `model`,
    or "random" for random initialisation (meaningless predictions; tests only).
    """
    if not labels:
        raise ValueError("labels: need at least one class name")
    if "{}" not in template:
        raise ValueError(f"template {template!r} needs a '{{}}' where the label goes")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # open_clip must never reach the network
    import open_clip
    import torch

    register_tiny_config()
    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r}; known: {', '.join(open_clip.list_models())}")
    checkpoint, tag_cfg = _resolve_weights(model, weights)
    if checkpoint is None:
        warnings.warn(f"CLIP {model} is randomly initialised: its predictions and label retention "
                      "are meaningless (use it only to test the plumbing)", stacklevel=2)
    net, _, preprocess = open_clip.create_model_and_transforms(
        model, pretrained=checkpoint, device=device, weights_only=True,
        force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
        image_mean=tag_cfg.get("mean"), image_std=tag_cfg.get("std"),
        image_interpolation=tag_cfg.get("interpolation"),
        image_resize_mode=tag_cfg.get("resize_mode"))
    net.eval()
    tokenizer = open_clip.get_tokenizer(model)
    with torch.inference_mode():
        tokens = tokenizer([template.format(label) for label in labels]).to(device)
        text_features = net.encode_text(tokens, normalize=True)
    return ZeroShotClassifier(net, preprocess, text_features, labels, device,
                              f"{model} ({checkpoint or 'random init'})")


def _resolve_weights(model: str, weights: str | None) -> tuple[str | None, dict]:
    """(checkpoint path or None for random init, the pretrained tag's config or {})."""
    import open_clip

    if weights == RANDOM:
        return None, {}
    tags = open_clip.list_pretrained_tags_by_model(model)
    if weights is None:
        for tag in tags:
            path = _cached_checkpoint(open_clip.get_pretrained_cfg(model, tag))
            if path:
                return path, open_clip.get_pretrained_cfg(model, tag)
        raise ClipWeightsError(_how_to_provide(model, None, tags))
    if weights in tags:
        cfg = open_clip.get_pretrained_cfg(model, weights)
        path = _cached_checkpoint(cfg)
        if path is None:
            raise ClipWeightsError(_how_to_provide(model, weights, tags))
        return path, cfg
    path = Path(weights).expanduser()
    if path.is_file():
        return str(path), {}
    if path.suffix in _WEIGHT_SUFFIXES or os.sep in weights:
        raise ClipWeightsError(f"CLIP weights file {weights} not found; "
                               + _how_to_provide(model, None, tags))
    raise ClipWeightsError(f"{weights!r} is neither a file nor a pretrained tag of {model}; "
                           + _how_to_provide(model, None, tags))


def _cached_checkpoint(cfg: dict) -> str | None:
    """Local file of a pretrained tag, from the HF hub cache or open_clip's URL cache; no network."""
    if "file" in cfg:
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo, filename = os.path.split(hub)
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = cfg.get("url", "")
    if url:
        path = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def _how_to_provide(model: str, tag: str | None, tags: list[str]) -> str:
    """One line telling where weights come from and where they are looked for."""
    import open_clip
    from huggingface_hub.constants import HF_HUB_CACHE

    what = f"pretrained tag '{tag}' of {model} is not in the local cache" if tag else \
        f"no local weights for CLIP {model}"
    quick = model.endswith("quickgelu")  # a checkpoint only fits the matching activation
    example = tag or next((t for t in tags if open_clip.get_pretrained_cfg(model, t)
                           .get("quick_gelu", False) == quick), tags[0] if tags else "")
    cfg = open_clip.get_pretrained_cfg(model, example)
    source = (f"https://huggingface.co/{os.path.split(cfg['hf_hub'])[0]}"
              if cfg.get("hf_hub") else cfg.get("url", ""))
    from_where = f" (e.g. {source})" if source else ""
    cached = f"; or a tag ({', '.join(tags[:4])}{', ...' if len(tags) > 4 else ''}) whose " \
             f"file is already in {HF_HUB_CACHE} or ~/.cache/clip" if tags else ""
    return (f"{what}: set weights to the path of the model's open_clip checkpoint "
            f"(open_clip_model.safetensors or open_clip_pytorch_model.bin){from_where}{cached}; "
            f"weights=random gives a meaningless random-init model for tests")
