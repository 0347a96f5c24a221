"""What a file is, from its first bytes: so that `dance info` picks the right reader and
`dance inspect` can say "that is a .dnc container" instead of torch's unpickling error."""
from __future__ import annotations

from pathlib import Path

# (magic at byte 0, kind, what to call it in messages); pipeline.recordfile.MAGIC is DANCEREC
_MAGICS = ((b"DNC", "dnc", "a .dnc container"),
           (b"DB\x03", "block", "a .dnc stream block"),
           (b"DANCEREC", "rec", "a dance recording (.rec)"),
           (b"VisionRe", "vrs", "a VRS recording"),
           (b"PK\x03\x04", "checkpoint", "a zip archive (torch checkpoint)"))
KINDS = {kind: text for _, kind, text in _MAGICS}


def file_kind(path: str | Path) -> str | None:
    """'dnc', 'block', 'rec', 'vrs', 'checkpoint' (any zip archive), or None; OSError if the
    file cannot be read."""
    with open(path, "rb") as file:
        head = file.read(16)
    return next((kind for magic, kind, _ in _MAGICS if head.startswith(magic)), None)
