"""Paper tables in one command: `dance eval audio` (Table 3) and `dance eval image` (Table 2).

Each table module exposes `register(kinds)`, adding its subcommand to `dance eval`; imports at
module level stay light so that `dance run` does not pay for torch at start-up.
"""
from __future__ import annotations

import argparse


def register(kinds: argparse._SubParsersAction) -> None:
    """Add every `dance eval KIND` subcommand."""
    from .audio_table import register as register_audio
    register_audio(kinds)
    from .image_table import register as register_image
    register_image(kinds)
