"""`dance new node NAME`: write a node module and its NodeHarness test, ready to edit.

The generated node (an audio level meter: one metrics packet per block) runs as written, and
its test passes as written, so the first edit starts from something that works
(docs/custom-nodes.md walks through a real one).
"""
from __future__ import annotations

import argparse
import importlib.util
import keyword
import re
import sys
from pathlib import Path

NODE = '''"""`{name}`: <what it computes, and why>.

Use it in a graph as `type: {name}:{cls}` (run `dance` from this folder), or ship it in a
package with a `dance.nodes` entry point (docs/custom-nodes.md).
"""
from __future__ import annotations

import numpy as np

from pipeline.node import Input, Node, Output, Param
from pipeline.packet import Packet


class {cls}(Node):
    """Level of each audio block per channel, in dB relative to full scale (int32 counts)."""

    audio = Input("audio", "frames×channels blocks")
    levels = Output("metrics", "{{rms_dbfs: [per channel], frames}} per block, stream '{name}'")
    floor_db = Param(float, -120.0, "level reported for digital silence", max=0.0)

    def setup(self) -> None:
        self.blocks = 0

    def on_audio(self, packet: Packet) -> None:
        scale = 2.0 ** 31 if np.issubdtype(packet.payload.dtype, np.integer) else 1.0
        samples = packet.payload.astype(np.float64) / scale
        rms = np.sqrt(np.mean(samples ** 2, axis=0))
        dbfs = np.maximum(20 * np.log10(np.maximum(rms, 1e-300)), self.floor_db)
        self.emit("levels", Packet("{name}", packet.timestamp_ns, self.blocks,
                                   {{"rms_dbfs": [round(float(d), 2) for d in dbfs],
                                    "frames": int(len(samples))}},
                                   {{"source": packet.stream}}))
        self.blocks += 1
'''

TEST = '''"""Tests of the `{name}` node, driven as the runtime drives it (pipeline.testing)."""
import numpy as np

from pipeline.packet import audio_packet
from pipeline.testing import NodeHarness
from {name} import {cls}


def test_one_metrics_packet_per_block():
    full_scale_tone = (np.sin(np.arange(4800) / 8.0) * (2 ** 31 - 1)).astype(np.int32)
    block = np.stack([full_scale_tone, np.zeros(4800, np.int32)], axis=1)
    with NodeHarness({cls}(name="{name}")) as harness:
        for seq in range(3):
            harness.send("audio", audio_packet("mic", seq * 10**8, seq, block, 48000))
    out = harness.outputs["levels"]
    assert [p.seq for p in out] == [0, 1, 2]
    tone_db, silent_db = out[0].payload["rms_dbfs"]
    assert abs(tone_db - -3.01) < 0.05 and silent_db == -120.0
'''


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("new", help="write a new node module and its test (scaffold)")
    kinds = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    node = kinds.add_parser("node", help="NAME.py (a working node) and test_NAME.py "
                            "(a NodeHarness test that passes as written)")
    node.add_argument("name", help="module name: lower_case_with_underscores")
    node.add_argument("--dir", default=".", help="folder to write to (default: here)")
    node.add_argument("--force", action="store_true", help="overwrite existing files")
    node.set_defaults(func=cmd_new_node)


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def name_problem(name: str) -> str | None:
    """Why NAME cannot be the module, or None."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        return "expected a module name in lower_case_with_underscores"
    if name in sys.builtin_module_names or importlib.util.find_spec(name) is not None:
        return f"a module '{name}' is already importable here; the node would shadow it"
    return None


def cmd_new_node(args: argparse.Namespace) -> int:
    problem = name_problem(args.name)
    if problem:
        print(f"error: dance new node {args.name}: {problem}", file=sys.stderr)
        return 2
    folder = Path(args.dir)
    files = {folder / f"{args.name}.py": NODE, folder / f"test_{args.name}.py": TEST}
    existing = [str(path) for path in files if path.exists()]
    if existing and not args.force:
        print(f"error: {', '.join(existing)} already exist(s); pass --force to overwrite",
              file=sys.stderr)
        return 2
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, template in files.items():
            path.write_text(template.format(name=args.name, cls=class_name(args.name)))
    except OSError as exc:
        print(f"error: {exc.filename or folder}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"wrote {' and '.join(map(str, files))}: run `python -m pytest "
          f"{folder / f'test_{args.name}.py'}`, then use `type: {args.name}:"
          f"{class_name(args.name)}` in a graph")
    return 0
