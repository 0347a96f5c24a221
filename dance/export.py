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
    float rounding (~1e-6), far inside a quantization step. A 1-D encoder runs as the same
    convolutions over a 1×T plane (`lift_to_2d`): ORT's blocked-channel (NCHWc) kernels are
    for 2-D convolutions only, and they take ~20% off the audio encoders.
    """

    def __init__(self, encoder: nn.Module, example: torch.Tensor, threads: int = 1):
        import onnxruntime as ort
        encoder, example = encoder.float().eval(), example.float()
        if example.dim() == 3:
            encoder = lift_to_2d(encoder, example) or encoder
        graph = io.BytesIO()
        write_onnx(encoder, example, graph)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(graph.getvalue(), options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        outputs = tuple(torch.from_numpy(y) for y in self.session.run(None, {"x": array}))
        return outputs if len(outputs) > 1 else outputs[0]


class _Lifted2d(nn.Module):
    """A 1-D encoder as 2-D convolutions over N×C×1×T (same outputs, N×C×T)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor):
        outputs = self.encoder(x.unsqueeze(2))
        if isinstance(outputs, tuple):
            return tuple(y.squeeze(2) for y in outputs)
        return outputs.squeeze(2)


def lift_to_2d(encoder: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """`encoder` (N×C×T input) with each Conv1d a Conv2d of kernel 1×k over N×C×1×T, or None
    where it holds modules this cannot vouch for (only Conv1d, the dimension-generic frozen
    GDN and containers are lifted) or its outputs would differ from the original's."""
    from .layers import FrozenGDN

    def lift(module: nn.Module) -> nn.Module | None:
        if isinstance(module, nn.Conv1d):
            if not isinstance(module.padding, tuple) or module.padding_mode != "zeros":
                return None
            conv = nn.Conv2d(module.in_channels, module.out_channels, (1, module.kernel_size[0]),
                             (1, module.stride[0]), (0, module.padding[0]),
                             (1, module.dilation[0]), module.groups, module.bias is not None)
            with torch.no_grad():
                conv.weight.copy_(module.weight.unsqueeze(2))
                if module.bias is not None:
                    conv.bias.copy_(module.bias)
            return conv
        if isinstance(module, FrozenGDN):
            return module
        if type(module) is nn.Sequential:
            layers = [lift(m) for m in module]
            return None if any(m is None for m in layers) else nn.Sequential(*layers)
        return None

    body = lift(encoder)
    if body is None:
        return None
    lifted = _Lifted2d(body).eval().requires_grad_(False)
    probe = torch.randn(example.shape, generator=torch.Generator().manual_seed(0)) * 0.3
    with torch.inference_mode():
        want, got = encoder(probe), lifted(probe)
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    same = len(want) == len(got) and all(a.shape == b.shape and torch.allclose(
        a, b, rtol=1e-4, atol=1e-5) for a, b in zip(want, got))
    return lifted if same else None
