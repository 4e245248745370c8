"""Files of the run directory and output folders: atomic writes (a kill -9 at any moment leaves the old
file or the new one, never half of one), what a killed writer leaves behind, and one check, before any
model loads, that a folder the user named can be written.

A folder that is a file, lies under a file, under `/proc`, or is not writable would otherwise surface as a
`NotADirectoryError`, `FileNotFoundError` or `PermissionError` traceback after minutes of loading. The
check writes and removes one probe file: asking `os.access` is not enough, since root passes it for
folders it still cannot write (`/proc`, read-only mounts)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lifelong.faults import fault_point


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


TEMPORARY = re.compile(r"^\.(tmp|.+\.tmp|write-probe)|\.tmp$")
"""Names of files and folders being written (renamed into place when complete), in every writer's style:
`.results.json.tmp<pid>`, `ckpt/.tmp-<tag>-<pid>`, `keep/<name>/.tmp<pid>.safetensors`, `.<out>.tmp<random>`."""


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    fault_point(f"write:{path.name}")
    os.replace(tmp, path)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete what a killed process was writing in a run directory (nothing else writes it while a run
    resumes). Tracker folders belong to their libraries and are left alone. Returns what was removed."""
    removed = []
    for root, dirs, files in os.walk(run_dir):
        if Path(root) == Path(run_dir):
            dirs[:] = [d for d in dirs if d not in ("trackers", "mlruns")]
        for name in [d for d in dirs if TEMPORARY.search(d)]:
            shutil.rmtree(Path(root) / name, ignore_errors=True)
            dirs.remove(name)
            removed.append(Path(root) / name)
        for name in files:
            if TEMPORARY.search(name):
                (Path(root) / name).unlink(missing_ok=True)
                removed.append(Path(root) / name)
    return removed


def folder_bytes(path: Path) -> int:
    """Bytes of the files under `path` (a file: its size; nothing there: 0)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=_json_default))


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot store {type(o).__name__} in JSON")
