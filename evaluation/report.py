"""What the `dance eval` tables share: number formatting, strict JSON reports and PNG saving."""
from __future__ import annotations

import json
import math
from pathlib import Path


def finite(x) -> bool:
    return x is not None and math.isfinite(x)


def fmt(value, pattern: str) -> str:
    """`pattern` applied to a number; a dash for a missing or non-finite one."""
    return pattern.format(value) if finite(value) else "—"


def write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    from nodes.jsonl import strict_json   # non-finite floats as null, numpy scalars as numbers
    path.write_text(json.dumps(strict_json(report), indent=1, allow_nan=False) + "\n")


def add_output_arguments(parser, plot_default: str, plot_help: str) -> None:
    """--report, --plot and --device, the same for every table."""
    parser.add_argument("--report", type=Path, metavar="JSON", help="write every figure as JSON")
    parser.add_argument("--plot", type=Path, default=Path(plot_default),
                        help=f"{plot_help} (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")


def ratio_axis(axis, xlabel: str, ylabel: str) -> None:
    """An x axis of compression ratios labelled N:1, with a grid (set a log scale first)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    if axis.get_xscale() == "log":
        axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}:1"))
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(True, which="both", alpha=0.3)


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
