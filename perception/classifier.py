"""ImageNet classification of camera frames with a torchvision model, weights from local files only.

    classifier = load_image_classifier("mobilenet_v2", "../shared/models/mobilenet_v2-b0353104.pth")
    [pred] = classifier.classify([frame])        # H×W×3 uint8
    pred.label, pred.prob, pred.top_labels, pred.top_probs

Any classification model of torchvision (`torchvision.models.list_models(module=torchvision.models)`)
is built with `weights=None` and loaded from a local state-dict file: the path given, or (without
one) the model's torchvision file already in torch's hub cache
(`torch.hub.get_dir()/checkpoints/<file>`, where torchvision would have downloaded it). Nothing is
downloaded. The file decides the preprocessing and the category names: a torchvision file
(recognised by its name, else by the sha256 prefix torchvision puts in it) gets the transforms of
its own weights entry (MobileNetV2 IMAGENET1K_V1, `mobilenet_v2-b0353104.pth`: resize the shorter
side to 256, centre crop 224, ImageNet mean/std); any other file those of the model's DEFAULT entry.
A missing or unreadable file, or weights of another architecture, raise `ClassifierWeightsError`
with a one-line message saying what to provide. `weights="random"` builds a randomly initialised
model (speed benchmarks, plumbing): its predictions mean nothing.

`Prediction` extends the CLIP node's prediction (label, index, probs, max_logit), so
`evaluation.retention.label_retention` and the `label_retention` node take either.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from perception.clip import Prediction as _ClipPrediction
from perception.clip import _rgb

DEFAULT_MODEL = "mobilenet_v2"
RANDOM = "random"
_HASHED = re.compile(r"-([0-9a-f]{8,})\.[a-z]+$")  # torchvision: <name>-<sha256 prefix>.pth


class ClassifierWeightsError(RuntimeError):
    """Classifier weights that are missing, unreadable or of another model; one-line message."""


@dataclass
class Prediction(_ClipPrediction):
    """Top-1 label, its index and logit, the softmax over all classes (`probs`) and its log
    (`log_probs`, for KL divergences), and the `top_k` labels with their probabilities."""
    log_probs: np.ndarray
    top_labels: list[str]
    top_probs: list[float]

    @property
    def prob(self) -> float:
        """Probability of the top-1 label (the classifier's confidence)."""
        return self.top_probs[0]


class ImageClassifier:
    """A torchvision classifier in eval mode with its preprocessing and category names."""

    def __init__(self, model, preprocess, categories: Sequence[str], device: str, top_k: int,
                 batch: int, description: str, weights_path: str | None):
        self.model, self.preprocess, self.device = model, preprocess, device
        self.categories = list(categories)
        self.top_k, self.batch = top_k, batch
        self.description, self.weights_path = description, weights_path

    def prepare(self, frame: np.ndarray):
        """The model's input tensor (3×224×224 float for ImageNet models) for one uint8 frame."""
        import torch

        frame = np.ascontiguousarray(_rgb(frame))
        if not frame.flags.writeable:  # e.g. a frame received over ZeroMQ; torch wants to own it
            frame = frame.copy()
        pixels = torch.from_numpy(frame).permute(2, 0, 1)
        return self.preprocess(pixels)

    def classify(self, frames: Sequence[np.ndarray]) -> list[Prediction]:
        """Predictions for H×W×3 (or H×W / H×W×1 grey) uint8 frames, `batch` at a time."""
        import torch

        out: list[Prediction] = []
        for start in range(0, len(frames), self.batch):
            pixels = torch.stack([self.prepare(f) for f in frames[start:start + self.batch]])
            with torch.inference_mode():
                out += self.predictions(self.model(pixels.to(self.device)))
        return out

    def predictions(self, logits) -> list[Prediction]:
        """Predictions from the model's logits (N×classes), e.g. of a split model's tail."""
        import torch

        k = min(self.top_k, len(self.categories))
        with torch.inference_mode():
            logits = logits.float()
            log_probs = logits.log_softmax(dim=-1)
            top_probs, top_index = log_probs.exp().topk(k, dim=-1)
        out = []
        for row, logp, tp, ti in zip(logits.cpu().numpy(), log_probs.cpu().numpy(),
                                     top_probs.cpu().numpy(), top_index.cpu().numpy()):
            best = int(ti[0])
            out.append(Prediction(self.categories[best], best, np.exp(logp), float(row[best]),
                                  logp, [self.categories[i] for i in ti], [float(p) for p in tp]))
        return out


def classification_models() -> list[str]:
    """Names of torchvision's ImageNet classification models."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def load_image_classifier(model: str = DEFAULT_MODEL, weights: str | Path | None = None,
                          device: str = "cpu", top_k: int = 5,
                          batch: int = 8) -> ImageClassifier:
    """A torchvision classifier from local weights only.

    `weights`: a state-dict file (.pth as torchvision publishes it), None or "" for the model's
    torchvision file in torch's hub cache, or "random" (meaningless predictions; benchmarks).
    """
    if top_k < 1 or batch < 1:
        raise ValueError(f"top_k ({top_k}) and batch ({batch}) must be at least 1")
    import torchvision

    known = classification_models()
    if model not in known:
        raise ValueError(f"unknown torchvision classification model {model!r}; e.g. "
                         f"{', '.join(n for n in known if n.startswith(('mobilenet', 'resnet')))}")
    entries = list(torchvision.models.get_model_weights(model))
    default = torchvision.models.get_model_weights(model).DEFAULT
    if weights == RANDOM:
        path, matched, entry = None, None, default
        warnings.warn(f"{model} is randomly initialised: its predictions and label retention are "
                      "meaningless (use it for speed and plumbing only)", stacklevel=2)
    else:
        path = _resolve(model, weights, entries, default)
        matched = _entry_of(path, entries)
        entry = matched or default
    net = torchvision.models.get_model(model, weights=None,
                                       num_classes=len(entry.meta["categories"]))
    if path is not None:
        net.load_state_dict(_state_dict(model, path, net))
    net.eval().to(device)
    if path is None:
        which = "random init"
    elif matched is not None:
        which = f"{path}, {type(entry).__name__}.{entry.name}"
    else:
        which = f"{path}, preprocessing of {type(entry).__name__}.{entry.name}"
    return ImageClassifier(net, entry.transforms(), entry.meta["categories"], device, top_k,
                           batch, f"{model} ({which})", None if path is None else str(path))


def weights_file_names(model: str) -> list[str]:
    """The file names torchvision publishes the model's weights under, DEFAULT first."""
    import torchvision

    enum = torchvision.models.get_model_weights(model)
    entries = [enum.DEFAULT] + [e for e in enum if e is not enum.DEFAULT]
    return [os.path.basename(e.url) for e in entries]


def hub_checkpoints() -> Path:
    """Where torch.hub (and so torchvision) keeps downloaded weights."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _resolve(model: str, weights, entries, default) -> Path:
    """The weights file: the given path, or the model's torchvision file in the hub cache."""
    names = weights_file_names(model)
    if weights in (None, ""):
        for name in names:
            if (hub_checkpoints() / name).is_file():
                return hub_checkpoints() / name
        raise ClassifierWeightsError(
            f"{model} weights not found: put {' or '.join(names)} (torchvision's file, e.g. "
            f"{default.url}) in {hub_checkpoints()} or pass weights=PATH")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ClassifierWeightsError(
            f"{model} weights not found: {path} "
            f"{'is a folder' if path.is_dir() else 'does not exist'}; put {' or '.join(names)} "
            f"(torchvision's file, e.g. {default.url}) there or pass weights=PATH")
    return path


def _entry_of(path: Path | None, entries):
    """The torchvision weights entry a file is, by its name or its content's sha256 prefix."""
    if path is None:
        return None
    for entry in entries:
        if os.path.basename(entry.url) == path.name:
            return entry
    hashed = {m.group(1): e for e in entries if (m := _HASHED.search(os.path.basename(e.url)))}
    if hashed and path.stat().st_size < 2 ** 31:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        for prefix, entry in hashed.items():
            if digest.hexdigest().startswith(prefix):
                return entry
    return None


def _state_dict(model: str, path: Path, net) -> dict:
    """The file's tensors, checked against the model: one-line errors for every mismatch."""
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip, EOF and weights_only errors all mean "not usable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ClassifierWeightsError(
            f"{model} weights file {path} is not a readable torch state dict "
            f"({type(exc).__name__}{': ' + first[:160] if first else ''}); pass torchvision's "
            f"{weights_file_names(model)[0]} or a state_dict saved with torch.save") from None
    for key in ("state_dict", "model"):  # training checkpoints that wrap the state dict
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor)
                                               for v in loaded.values()):
        raise ClassifierWeightsError(
            f"{model} weights file {path} holds a {type(loaded).__name__}, not a state dict of "
            f"tensors; pass torchvision's {weights_file_names(model)[0]}")
    loaded = {k.removeprefix("module."): v for k, v in loaded.items()}  # DataParallel saves
    expected = net.state_dict()
    missing = [k for k in expected if k not in loaded]
    unexpected = [k for k in loaded if k not in expected]
    if missing or unexpected:
        raise ClassifierWeightsError(
            f"{model} weights file {path} does not fit {model} ({len(missing)} of its "
            f"{len(expected)} tensors missing{', e.g. ' + missing[0] if missing else ''}; "
            f"{len(unexpected)} unknown{', e.g. ' + unexpected[0] if unexpected else ''}): "
            f"weights of another architecture? pass {model}'s own file "
            f"({' or '.join(weights_file_names(model))}) or choose the model it belongs to")
    for key, tensor in expected.items():
        if loaded[key].shape != tensor.shape:
            raise ClassifierWeightsError(
                f"{model} weights file {path} does not fit {model}: {key} has shape "
                f"{tuple(loaded[key].shape)}, the model expects {tuple(tensor.shape)} "
                "(another variant or number of classes?)")
    return loaded
