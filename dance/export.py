"""Export a codec's device side (`CodecModel.export_encoder()`) to TorchScript or ONNX, and run
it in ONNX Runtime.

The exported graph takes the preprocessed float tensor N×C×(spatial...) — spatial sizes a
multiple of the model stride — and returns the encoder outputs (the latent; the hyperprior also
its z); entropy coding uses the checkpoint's tables as in `dance.entropy`. Any leading AvgPool
is folded into the first conv.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn as nn

from .zoo import load_checkpoint, model_from_checkpoint, resolve_checkpoint

FORMATS = ("torchscript", "onnx")


def export_encoder(ckpt: str | os.PathLike | dict, fmt: str, out: str | os.PathLike) -> Path:
    """Write the encoder of checkpoint `ckpt` (path, zoo name or loaded dict) to `out`."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {fmt!r}")
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(resolve_checkpoint(ckpt))
    model = model_from_checkpoint(ckpt)
    encoder = model.export_encoder()
    example = torch.zeros(1, model.in_channels, *[model.stride * 2] * model.dims)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        with torch.inference_mode():
            traced = torch.jit.trace(encoder, example)
        traced.save(str(out))
    else:
        write_onnx(encoder, example, str(out))
    return out


def write_onnx(encoder: nn.Module, example: torch.Tensor, target: str | BinaryIO) -> None:
    """ONNX graph of `encoder` (float32) with dynamic batch and spatial sizes; outputs y0, y1..."""
    with torch.inference_mode():
        outputs = encoder(example)
    count = len(outputs) if isinstance(outputs, tuple) else 1
    names = [f"y{i}" for i in range(count)]
    spatial = {axis: f"size{axis - 2}" for axis in range(2, example.dim())}
    torch.onnx.export(encoder, (example,), target, input_names=["x"], output_names=names,
                      dynamo=False, opset_version=17,
                      dynamic_axes={"x": {0: "batch", **spatial}, **{n: {0: "batch"} for n in names}})


class OnnxRuntimeEncoder:
    """An encoder module run by ONNX Runtime on the CPU, in float32.

    ORT runs the narrow 1-D convolutions of the audio encoders ~2× faster than PyTorch's
    float32 kernels on one thread (benchmarks/codec_speed.py); latents match PyTorch's to
    float rounding (~1e-6), far inside a quantization step.
    """

    def __init__(self, encoder: nn.Module, example: torch.Tensor, threads: int = 1):
        import onnxruntime as ort
        graph = io.BytesIO()
        write_onnx(encoder.float().eval(), example.float(), graph)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(graph.getvalue(), options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        outputs = tuple(torch.from_numpy(y) for y in self.session.run(None, {"x": array}))
        return outputs if len(outputs) > 1 else outputs[0]
