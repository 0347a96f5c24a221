"""Live per-node rates on one terminal line, and the end-of-run table."""
from __future__ import annotations

import shutil
import sys
import threading
from contextlib import contextmanager


class StatusLine:
    """Rewrites one stderr line with per-node rates; silent when stderr is not a terminal.

    The line is cut to the terminal's width (a wrapped line cannot be rewritten in place), and
    inside `owning_output()` anything printed to stdout or stderr first clears it, so that
    tables and error lines never start in the middle of it."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self.width = 0
        self.lock = threading.RLock()
        self.stream = sys.stderr

    def update(self, nodes: dict[str, dict]) -> None:
        if not self.enabled:
            return
        parts = []
        for name, n in nodes.items():
            drop = n["dropped"] + n["dropped_out"]
            parts.append(f"{name} {n['rate_hz']:.1f}/s" + (f" drop {drop}" if drop else ""))
        line = " | ".join(parts)
        columns = max(shutil.get_terminal_size().columns - 1, 10)
        if len(line) > columns:
            line = line[:columns - 1] + "…"
        with self.lock:
            self.stream.write("\r" + line.ljust(self.width))
            self.stream.flush()
            self.width = len(line)

    def clear(self) -> None:
        with self.lock:
            if self.enabled and self.width:
                self.stream.write("\r" + " " * self.width + "\r")
                self.stream.flush()
                self.width = 0

    @contextmanager
    def owning_output(self):
        """While active, writes to sys.stdout and sys.stderr clear the line first (it comes
        back at the next update); cleared at the end."""
        if not self.enabled:
            yield
            return
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Clearing(saved[0], self), _Clearing(saved[1], self)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved
            self.clear()


class _Clearing:
    """A text stream that clears the status line before each write."""

    def __init__(self, stream, status: StatusLine):
        self._stream, self._status = stream, status

    def write(self, text: str) -> int:
        with self._status.lock:
            self._status.clear()
            return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


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
