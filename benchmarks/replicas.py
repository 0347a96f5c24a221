"""Throughput of a replicated group: one stream shared by 1, 2, 3 worker processes over ZeroMQ.

The graph is device (a source) -> cloud (`replicas: R`, a worker that takes `--work-ms` per
packet) -> results (a sink that notes when each packet arrives), all on 127.0.0.1, run with
`dance run`. The worker sleeps instead of computing, like a node waiting on a GPU or another
service, so that the figure shows what the runtime's sharing gives rather than how many CPU cores
this machine has. Packets/s is measured at the sink over the middle 80% of the stream, so
start-up and the final drain are not counted.

    python benchmarks/replicas.py [--replicas 1 2 3] [--work-ms 5] [--packets 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.node import Input, Node, Param

ROOT = Path(__file__).resolve().parents[1]
NODES = "tests.nodes_for_tests"  # Ramp (source) and Scale (worker with delay_s)


class ArrivalTimes(Node):
    """Writes the monotonic arrival time of each packet, one per line."""

    inp = Input("any")
    path = Param(str)

    def setup(self):
        self.file = open(self.path, "w")

    def on_inp(self, packet):
        self.file.write(f"{time.monotonic()}\n")

    def teardown(self):
        self.file.close()


def graph(directory: Path, replicas: int, packets: int, work_ms: float) -> tuple[Path, Path]:
    path, arrivals = directory / f"replicas{replicas}.yaml", directory / f"arrivals{replicas}"
    path.write_text(f"""name: replicas
groups:
  device: {{}}
  cloud: {{replicas: {replicas}}}
  results: {{}}
nodes:
  - {{name: src, type: "{NODES}:Ramp", group: device, params: {{count: {packets}}}}}
  - {{name: work, type: "{NODES}:Scale", group: cloud, params: {{delay_s: {work_ms / 1000}}}}}
  - {{name: sink, type: "replicas:ArrivalTimes", group: results, params: {{path: "{arrivals}"}}}}
edges:
  - src.out -> work.inp
  - work.out -> sink.inp
""")
    return path, arrivals


def run(path: Path, arrivals: Path, report: Path) -> tuple[float, list[int]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)])}
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(path), "--quiet",
                           "--report", str(report)], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"{path}: dance run failed:\n{proc.stderr}")
    times = [float(line) for line in arrivals.read_text().split()]
    first, last = len(times) // 10, len(times) * 9 // 10
    rate = (last - first) / (times[last] - times[first])
    nodes = json.loads(report.read_text())["nodes"]
    return rate, [n["in"] for name, n in nodes.items() if name.startswith("work")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--work-ms", type=float, default=5.0, help="time per packet per worker")
    parser.add_argument("--packets", type=int, default=1000)
    args = parser.parse_args()
    print(f"worker time {args.work_ms} ms/packet (one worker's ceiling "
          f"{1000 / args.work_ms:.0f} packets/s), {args.packets} packets")
    print(f"{'replicas':>8} {'packets/s':>10} {'x1 worker':>10} {'shares':>20}")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for replicas in args.replicas:
            path, arrivals = graph(directory, replicas, args.packets, args.work_ms)
            rate, shares = run(path, arrivals, directory / "report.json")
            base = base or rate
            print(f"{replicas:>8} {rate:>10.0f} {rate / base:>10.2f} {str(shares):>20}")


if __name__ == "__main__":
    main()
