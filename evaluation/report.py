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


def json_safe(value):
    """Non-finite floats as null (JSON has no NaN/inf)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(report), indent=1, allow_nan=False) + "\n")


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
