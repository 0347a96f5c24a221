"""Named codecs: reference configs (dance/configs/*.yaml) and checkpoints (dance/checkpoints/).

A checkpoint is a plain dict, loadable with `torch.load(..., weights_only=True)`:
    format "dance-checkpoint", version, config (dict), state_dict (tensors, without the
    bottleneck's table buffers), entropy (int32 CDF tables + float32 medians),
    hash (sha256 hex of config + state_dict + entropy), extra (free-form, not hashed).
The hash names the exact codec: it goes into every bitstream and decoding checks it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

from .entropy import EntropyTables
from .models import build_model

if TYPE_CHECKING:
    from .codec import Codec

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"
CHECKPOINT_DIR = PACKAGE_DIR / "checkpoints"
FORMAT, VERSION = "dance-checkpoint", 1
_TABLE_BUFFERS = tuple(f"entropy_bottleneck.{n}" for n in ("_quantized_cdf", "_offset",
                                                          "_cdf_length"))


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


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, config: dict,
                    extra: dict | None = None) -> str:
    """Update the entropy tables, write the checkpoint, return its hash."""
    model.update(force=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
             if k not in _TABLE_BUFFERS}
    entropy = model.entropy_tables().to_dict()
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
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a DANCE checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')} is not "
                              f"supported (expected {VERSION})")
    if checkpoint_hash(ckpt["config"], ckpt["state_dict"], ckpt["entropy"]) != ckpt["hash"]:
        raise CheckpointError(f"{path}: content does not match its hash (corrupt file?)")
    return ckpt


def model_from_checkpoint(ckpt: dict, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model of a loaded checkpoint, with its stored entropy tables, in eval mode."""
    model = build_model(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"], strict=False)
    missing = set(model.state_dict()) - set(ckpt["state_dict"]) - set(_TABLE_BUFFERS)
    if missing:
        raise CheckpointError(f"checkpoint lacks weights: {sorted(missing)[:5]}")
    model.set_entropy_tables(EntropyTables.from_dict(ckpt["entropy"]))
    return model.to(device).eval()


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


def load_codec(name_or_path: str | os.PathLike, device: str = "cpu",
               precision: str = "float32", engine: str = "torch") -> "Codec":
    """A ready-to-use Codec from a zoo name (`aria-image`) or a checkpoint path; `precision`
    and `engine` choose how the encoder network runs (`dance.codec.PRECISIONS`, `ENGINES`)."""
    from .codec import Codec
    ckpt = load_checkpoint(resolve_checkpoint(name_or_path))
    return Codec.from_checkpoint(ckpt, device, precision, engine)
