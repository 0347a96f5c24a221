"""Throughput of a replicated group: one stream shared by 1, 2, 3 worker processes over ZeroMQ.

The graph is device (a source) -> cloud (`replicas: R`, a worker that takes `--work-ms` per
packet) -> results (a sink), all on 127.0.0.1, run with `dance run`. The worker sleeps instead
of computing, like a node waiting on a GPU or another service, so that the figure shows what the
runtime's sharing gives rather than how many CPU cores this machine has. Start-up is taken out by
timing two runs of different lengths: packets/s = (N_long - N_short) / (wall_long - wall_short).

    python benchmarks/replicas.py [--replicas 1 2 3] [--work-ms 5] [--packets 400]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODES = "tests.nodes_for_tests"  # Ramp (source), Scale (worker with delay_s), Collect (sink)


def graph(directory: Path, replicas: int, packets: int, work_ms: float) -> Path:
    path = directory / f"replicas{replicas}-{packets}.yaml"
    path.write_text(f"""name: replicas
groups:
  device: {{}}
  cloud: {{replicas: {replicas}}}
  results: {{}}
nodes:
  - {{name: src, type: "{NODES}:Ramp", group: device, params: {{count: {packets}}}}}
  - {{name: work, type: "{NODES}:Scale", group: cloud, params: {{delay_s: {work_ms / 1000}}}}}
  - {{name: sink, type: "{NODES}:Collect", group: results,
      params: {{path: "{directory}/out-{replicas}-{packets}.jsonl"}}}}
edges:
  - src.out -> work.inp
  - work.out -> sink.inp
""")
    return path


def wall_time(path: Path, report: Path) -> tuple[float, dict]:
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(path), "--quiet",
                           "--report", str(report)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{path}: dance run failed:\n{proc.stderr}")
    result = json.loads(report.read_text())
    return result["wall_s"], result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--work-ms", type=float, default=5.0, help="time per packet per worker")
    parser.add_argument("--packets", type=int, default=400, help="packets in the long run")
    args = parser.parse_args()
    short = args.packets // 4
    print(f"worker time {args.work_ms} ms/packet, one worker's ceiling "
          f"{1000 / args.work_ms:.0f} packets/s; {args.packets} vs {short} packets")
    print(f"{'replicas':>8} {'packets/s':>10} {'x1 worker':>10} {'shares':>20}")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for replicas in args.replicas:
            walls = {}
            for packets in (short, args.packets):
                walls[packets], result = wall_time(graph(directory, replicas, packets,
                                                         args.work_ms),
                                                   directory / "report.json")
            rate = (args.packets - short) / max(walls[args.packets] - walls[short], 1e-9)
            base = base or rate
            shares = [n["in"] for name, n in result["nodes"].items() if name.startswith("work")]
            print(f"{replicas:>8} {rate:>10.0f} {rate / base:>10.2f} {str(shares):>20}")


if __name__ == "__main__":
    main()
