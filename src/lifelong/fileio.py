"""Output folders: one check, before any model loads, that a folder the user named can be written.

A folder that is a file, lies under a file, under `/proc`, or is not writable would otherwise surface as a
`NotADirectoryError`, `FileNotFoundError` or `PermissionError` traceback after minutes of loading. The
check writes and removes one probe file: asking `os.access` is not enough, since root passes it for
folders it still cannot write (`/proc`, read-only mounts)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def ensure_writable_dir(path: str | Path, what: str = "output folder", create: bool = True) -> Path:
    """Check that `path` is, or can be created as, a folder files can be written into; with `create`,
    create it (and its parents). Raises a one-line `ValueError` naming the folder and the cause."""
    p = Path(path)
    existing = p
    while not existing.exists() and existing != existing.parent:  # the nearest part that exists decides
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == p else f"is under {existing}, which is a file"
        raise ValueError(f"{what} {p} {where}, not a folder; choose another folder")
    try:
        if create:
            p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe", dir=p if create else existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        cause = e.strerror or type(e).__name__
        raise ValueError(f"{what} {p} cannot be written ({cause}); choose another folder") from None
    return p
