"""On-disk caches keyed by content hash: tokenized examples (a resume or a second run does not
re-tokenize) and curriculum scores. Files are written atomically; a corrupt or foreign file is ignored."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

TOKENS_VERSION = "2"
"""Version of tokenized output (examples and packed blocks), part of their cache keys: bump it whenever
tokenization or packing changes, so caches written by older code are never reused. 2: every packed
document follows the document start (BOS, else EOS; `data.formats.document_start`)."""


def cache_dir() -> Path:
    return Path(os.environ.get("LIFELONG_CACHE", "~/.cache/lifelong")).expanduser()


def tokenizer_fingerprint(tok: Any) -> str:
    h = hashlib.sha256()
    h.update(type(tok).__name__.encode())
    h.update(str(len(tok)).encode())
    h.update(str(getattr(tok, "chat_template", "")).encode())
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    return h.hexdigest()


def content_key(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def load(kind: str, key: str) -> Optional[Any]:
    path = cache_dir() / kind / f"{key}.json"
    try:
        obj = json.loads(path.read_text())
        return obj["value"] if obj.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(kind: str, key: str, value: Any) -> None:
    path = cache_dir() / kind / f"{key}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "value": value}))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs time
