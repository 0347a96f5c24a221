"""Shared test helpers: paths, and running the real `dance` CLI in a subprocess."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
AEA_VRS = SHARED / "data" / "aea" / "recording.vrs"


def dance(*args: str, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    """Run `dance ARGS` as a user would (python -m pipeline.cli) from the repo root."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def dance_process(*args: str, **kwargs) -> subprocess.Popen:
    """Start `dance ARGS` in the background like `dance` does, output piped as text."""
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture
def aea_vrs() -> Path:
    if not AEA_VRS.exists():
        pytest.skip(f"sample AEA recording not found at {AEA_VRS} (needs ../shared beside the repo)")
    return AEA_VRS
