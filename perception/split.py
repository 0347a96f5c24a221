"""A torchvision classifier cut in two at a named layer: the head runs on the device, the tail
on the server, and the tensor between them is what a feature codec sends.

    head, tail = split_model(classifier.model, "features.7")
    logits = tail(head(x))                       # == classifier.model(x)
    for cut in cut_points(classifier.model): cut.name, cut.shape, cut.head_macs

The cut uses torch.fx (as torchvision's own feature extraction does), tracing blocks two names
deep as one node (features.7, layer1.0): a node is a valid cut when everything after it depends
on the input only through it, so no skip connection crosses the cut (inside a residual block it
would); `split_model` refuses the others with the valid names near it. MACs come from torch's
FLOP counter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import fx, nn

if TYPE_CHECKING:
    import numpy as np


class SplitError(ValueError):
    """A layer that is not a valid cut of the model; one-line message."""


@dataclass
class CutPoint:
    name: str                  # fx node name, e.g. features.7 (a module path) or add_3
    shape: tuple[int, ...]     # the tensor at the cut for one image, without the batch axis
    head_macs: int             # multiply-accumulates of the head for one image


class _BlockTracer(fx.Tracer):
    """Traces into containers but keeps modules `depth` names deep (features.7, layer1.0,
    classifier.1) whole, so cuts are named by the blocks users know, and a residual block is
    one node whose output is a valid cut."""

    def __init__(self, depth: int):
        super().__init__()
        self.depth = depth

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return super().is_leaf_module(module, qualified_name) or \
            (qualified_name.count(".") + 1 >= self.depth)


def _trace(model: nn.Module, depth: int = 2) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule):
        return model
    return fx.GraphModule(model, _BlockTracer(depth).trace(model))


def _target_name(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else node.name


def _valid_cuts(graph: fx.Graph) -> list[fx.Node]:
    """Nodes through which every path from the input to the output runs, in graph order."""
    nodes = list(graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    cuts = []
    for i, node in enumerate(nodes):
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        # valid when no node after it uses a node before it (other than constants)
        if all(position[arg] >= i for later in nodes[i + 1:] for arg in later.all_input_nodes
               if arg.op != "get_attr"):
            cuts.append(node)
    return cuts


def _find(graph: fx.Graph, layer: str) -> fx.Node:
    cuts = _valid_cuts(graph)
    for node in cuts:
        if layer in (_target_name(node), node.name):
            return node
    names = [_target_name(n) for n in cuts]
    known = {_target_name(n) for n in graph.nodes} | {n.name for n in graph.nodes}
    if layer in known:
        raise SplitError(f"layer {layer!r} is not a valid cut (a skip connection crosses it); "
                         f"valid cuts include {', '.join(names[:3])}, ..., {', '.join(names[-3:])}"
                         f" (dance split-info lists them)")
    raise SplitError(f"no layer {layer!r} in the model; valid cuts: {', '.join(names[:6])}, ... "
                     f"(dance split-info lists them)")


def split_model(model: nn.Module, layer: str) -> tuple[fx.GraphModule, fx.GraphModule]:
    """(head, tail): head(x) is the tensor at `layer`, tail(that) the model's output. A layer
    deeper than a block (features.14.conv.0: inside block 14) is traced that deep."""
    traced = _trace(model, max(2, layer.count(".") + 1))
    cut = _find(traced.graph, layer)
    head_graph, head_env = fx.Graph(), {}
    for node in traced.graph.nodes:
        if node.op == "output":
            break
        head_env[node] = head_graph.node_copy(node, lambda n: head_env[n])
        if node is cut:
            head_graph.output(head_env[node])
            break
    tail_graph, tail_env, after = fx.Graph(), {}, False
    for node in traced.graph.nodes:
        if node is cut:
            tail_env[node] = tail_graph.placeholder("features")
            after = True
        elif after or node.op == "get_attr":
            tail_env[node] = tail_graph.node_copy(node, lambda n: tail_env[n])
    head, tail = fx.GraphModule(traced, head_graph), fx.GraphModule(traced, tail_graph)
    head.graph.eliminate_dead_code()
    tail.graph.eliminate_dead_code()
    head.recompile()
    tail.recompile()
    return head.eval(), tail.eval()


def head_macs(head: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (torch's FLOP counter counts 2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        head(x)
    return counter.get_total_flops() // 2 // x.shape[0]


def cut_points(model: nn.Module, input_shape: tuple[int, ...] = (3, 224, 224),
               modules_only: bool = True, depth: int = 2) -> list[CutPoint]:
    """Every valid cut with the tensor there and the head's MACs, for one input of that shape
    (`modules_only`: only cuts at the output of a named submodule, the useful ones), with
    modules `depth` names deep traced whole."""
    traced = _trace(model, depth)
    x = torch.zeros(1, *input_shape)
    shapes: dict[fx.Node, tuple[int, ...]] = {}
    from torch.fx.passes.shape_prop import ShapeProp
    with torch.inference_mode():
        ShapeProp(traced).propagate(x)
    for node in traced.graph.nodes:
        meta = node.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            shapes[node] = tuple(meta.shape)[1:]
    points = []
    for node in _valid_cuts(traced.graph):
        if (modules_only and node.op != "call_module") or node not in shapes:
            continue
        head, _ = split_model(traced, _target_name(node))
        points.append(CutPoint(_target_name(node), shapes[node], head_macs(head, x)))
    return points


def photos(folder, split: str) -> list:
    """The photos of `folder` in one split of dance.data.split_of ("train" or "heldout")."""
    from pathlib import Path

    from dance.data import IMAGE_SUFFIXES, split_of
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                  and split_of(p.name) == split)


def load_rgb(path) -> np.ndarray:
    import numpy as np
    from PIL import Image
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def head_outputs(classifier, head: nn.Module, frames: list, batch: int = 8) -> torch.Tensor:
    """The head's tensors for H×W×3 uint8 frames (the classifier's preprocessing first)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(frames), batch):
            x = torch.stack([classifier.prepare(f) for f in frames[start:start + batch]])
            out.append(head(x))
    return torch.cat(out)
