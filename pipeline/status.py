"""Live per-node rates on one terminal line, and the end-of-run table."""
from __future__ import annotations

import sys


class StatusLine:
    """Rewrites one stderr line with per-node rates; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self.width = 0

    def update(self, nodes: dict[str, dict]) -> None:
        if not self.enabled:
            return
        parts = []
        for name, n in nodes.items():
            drop = n["dropped"] + n["dropped_out"]
            parts.append(f"{name} {n['rate_hz']:.1f}/s" + (f" drop {drop}" if drop else ""))
        line = " | ".join(parts)
        sys.stderr.write("\r" + line.ljust(self.width))
        sys.stderr.flush()
        self.width = len(line)

    def clear(self) -> None:
        if self.enabled and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


def print_summary(report: dict) -> None:
    """The per-node figures of a finished run, one row per node."""
    print(f"graph {report['graph']}: {report['wall_s']:.2f} s, exit {report['exit_code']}")
    header = f"{'node':<16}{'type':<16}{'group':<10}{'in':>7}{'out':>7}{'drop':>6}{'err':>5}" \
             f"{'p50 ms':>9}{'p95 ms':>9}"
    print(header)
    for name, n in report["nodes"].items():
        lat = n["latency_ms"]
        fmt = lambda v: f"{v:9.2f}" if v is not None else f"{'-':>9}"  # noqa: E731
        print(f"{name:<16}{n['type'][:15]:<16}{n['group'][:9]:<10}{n['in']:>7}{n['out']:>7}"
              f"{n['dropped'] + n['dropped_out']:>6}{n['errors']:>5}{fmt(lat['p50'])}"
              f"{fmt(lat['p95'])}")
    for group, link in report.get("links", {}).items():
        print(f"link into {group}: {link['received']} received, {link['rejected']} rejected")
