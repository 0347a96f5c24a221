"""Named codecs: reference configs (dance/configs/*.yaml) and checkpoints (dance/checkpoints/).

A checkpoint is a plain dict, loadable with `torch.load(..., weights_only=True)`:
    format "dance-checkpoint", version, config (dict, with its `family`), state_dict (tensors,
    `CodecModel.network_state()`), entropy (`CodecModel.entropy_state()`: the family's integer
    CDF tables and float32 constants), hash (sha256 hex of config + state_dict + entropy),
    extra (free-form, not hashed).
The hash names the exact codec: it goes into every bitstream and decoding checks it. Version 1
(the dance family's only) has the same layout, so both load alike.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
import torch
import yaml

from .models import CodecModel, build_model

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"
CHECKPOINT_DIR = PACKAGE_DIR / "checkpoints"
FORMAT, VERSION = "dance-checkpoint", 2
READABLE_VERSIONS = (1, 2)


class CheckpointError(ValueError):
    """A checkpoint or config that cannot be found or does not verify."""


def config_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str | os.PathLike) -> dict:
    """A model config by zoo name (`aria-image`) or from a YAML file."""
    path = Path(name_or_path)
    if not path.is_file():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise CheckpointError(f"no config '{name_or_path}' (known: {', '.join(config_names())})")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or "dims" not in config:
        raise CheckpointError(f"{path}: not a model config (needs dims, in_channels, ...)")
    config.setdefault("name", path.stem)
    return config


def checkpoint_hash(config: dict, state_dict: dict, entropy: dict) -> str:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for prefix, tensors in (("state_dict", state_dict), ("entropy", entropy)):
        for key in sorted(tensors):
            t = tensors[key].detach().cpu().contiguous()
            digest.update(f"{prefix}.{key}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: CodecModel, config: dict,
                    extra: dict | None = None) -> str:
    """Update the entropy tables, write the checkpoint, return its hash."""
    model.update(force=True)
    # a family outside dance/ keeps its importable module:Class reference
    config = {**config, "family": config.get("family") or model.family or "dance"}
    state = model.network_state()
    entropy = {k: v.detach().cpu().clone() for k, v in model.entropy_state().items()}
    digest = checkpoint_hash(config, state, entropy)
    ckpt = {"format": FORMAT, "version": VERSION, "config": config, "state_dict": state,
            "entropy": entropy, "hash": digest, "extra": extra or {}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return digest


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and verify a checkpoint (weights_only: no code is unpickled)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except pickle.UnpicklingError:  # torch's text here advises weights_only=False: never
        raise CheckpointError(f"{path}: not a checkpoint (not tensors and plain data saved "
                              "by torch.save)") from None
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a DANCE checkpoint")
    if ckpt.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')} is not "
                              f"supported (this reads {READABLE_VERSIONS})")
    if checkpoint_hash(ckpt["config"], ckpt["state_dict"], ckpt["entropy"]) != ckpt["hash"]:
        raise CheckpointError(f"{path}: content does not match its hash (corrupt file?)")
    return ckpt


def model_from_checkpoint(ckpt: dict, device: str | torch.device = "cpu") -> CodecModel:
    """The model of a loaded checkpoint, with its stored entropy state, in eval mode."""
    from .sizeguard import allocation_limit
    name = ckpt["config"].get("name", "checkpoint")
    try:
        with allocation_limit(what=f"{name}: the model its config describes"):
            model = build_model(ckpt["config"])
        model.load_network_state(ckpt["state_dict"])
        model.load_entropy_state(ckpt["entropy"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    return model.to(device).eval()


def find_checkpoint(name: str, hash_prefix: bytes) -> Path | None:
    """The installed checkpoint (dance/checkpoints/*.pt) whose config name and hash begin as a
    container's, or None: how files written with an earlier default (aria-image-v1.pt still
    names itself aria-image) keep decoding after the default is retrained."""
    for path in sorted(CHECKPOINT_DIR.glob("*.pt")):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - an unreadable file is not the one we look for
            continue
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict):
            continue
        try:
            digest = bytes.fromhex(str(ckpt.get("hash", "")))
        except ValueError:
            continue
        if ckpt["config"].get("name") == name and digest[:len(hash_prefix)] == hash_prefix:
            return path
    return None


def zoo_checkpoint(name: str) -> Path:
    """The installed checkpoint of a zoo name, never a path: what a container's codec name
    (data from outside) may select."""
    if name not in config_names() or not (CHECKPOINT_DIR / f"{name}.pt").is_file():
        raise CheckpointError(f"no installed zoo codec is named {name[:80]!r}")
    return CHECKPOINT_DIR / f"{name}.pt"


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """Path of a checkpoint given as a file or as a zoo name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    if name in config_names():
        default = CHECKPOINT_DIR / f"{name}.pt"
        if default.is_file():
            return default
        train_config = CONFIG_DIR / "train" / f"{name}.yaml"
        how = (f"`dance train --config {train_config.relative_to(PACKAGE_DIR.parent)}`"
               if train_config.is_file() else "`dance train --config FILE` (docs/codecs.md)")
        raise CheckpointError(f"no trained checkpoint for '{name}' at {default}; train one "
                              f"with {how} or pass a checkpoint file")
    raise CheckpointError(f"'{name}' is neither a checkpoint file nor a zoo codec "
                          f"(known: {', '.join(config_names())})")
