"""Export the encoder alone (what runs on the glasses) to TorchScript or ONNX.

The exported graph takes the preprocessed float tensor N×C×(spatial...) — spatial sizes a
multiple of the model stride — and returns the float latent; quantization (round(y - median))
and rANS coding use the checkpoint's tables as in `dance.entropy`. Any leading AvgPool is folded
into the first conv (see `dance.codec.fast_encoder`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .codec import fast_encoder
from .zoo import load_checkpoint, model_from_checkpoint, resolve_checkpoint

FORMATS = ("torchscript", "onnx")


def export_encoder(ckpt: str | os.PathLike | dict, fmt: str, out: str | os.PathLike) -> Path:
    """Write the encoder of checkpoint `ckpt` (path, zoo name or loaded dict) to `out`."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {fmt!r}")
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(resolve_checkpoint(ckpt))
    model = model_from_checkpoint(ckpt)
    encoder = fast_encoder(model)
    example = torch.zeros(1, model.in_channels, *[model.stride * 2] * model.dims)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        with torch.inference_mode():
            traced = torch.jit.trace(encoder, example)
        traced.save(str(out))
    else:
        spatial = {axis: f"size{axis - 2}" for axis in range(2, 2 + model.dims)}
        torch.onnx.export(encoder, (example,), str(out), input_names=["x"],
                          output_names=["y"], dynamo=False, opset_version=17,
                          dynamic_axes={"x": {0: "batch", **spatial}, "y": {0: "batch"}})
    return out
