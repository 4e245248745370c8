"""Streaming corpora for continual pre-training: rows are read one at a time (jsonl, txt, csv, parquet,
or a hub dataset with `streaming=True`), tokenized and packed into fixed-length blocks written to a
memory-mapped file in the cache, keyed by content hash. The training loop indexes blocks lazily, so a
corpus larger than memory is never loaded, and a resume or a second run does not re-tokenize.

The trailing tokens that do not fill a last block are dropped (at most `block - 1` tokens).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lifelong.config import DataConfig
from lifelong.data import cache
from lifelong.data.formats import document_start, packed_document, shown
from lifelong.data.sources import check_path, iter_rows


def source_fingerprint(cfg: DataConfig) -> Any:
    """Content hash of a file (read in chunks, never whole), or the identity of a hub dataset / inline rows."""
    if cfg.path:
        path = Path(cfg.path)
        check_path(path)
        if path.is_dir():
            raise ValueError(f"{path}: streaming reads .jsonl, .txt, .csv or .parquet files")
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            raise ValueError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
        return h.hexdigest()
    if cfg.hub:
        return [cfg.hub, cfg.subset, cfg.split]
    return cfg.rows


class BlockDataset:
    """Fixed-length token blocks in a memory-mapped file; items are training examples."""

    def __init__(self, path: Path, block: int) -> None:
        self.path, self.block = Path(path), block
        n_tokens = self.path.stat().st_size // 4
        self.n = n_tokens // block
        self.data = np.memmap(self.path, dtype=np.uint32, mode="r", shape=(self.n * block,)) if self.n else None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        i %= self.n
        ids = self.data[i * self.block : (i + 1) * self.block].tolist()  # type: ignore[index]
        return {"input_ids": ids, "labels": list(ids)}

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(self.n))


def streamed_blocks(cfg: DataConfig, fm: Any, block: int) -> BlockDataset:
    """Pack a streamed source into the block cache (once per content) and open it lazily."""
    key = cache.content_key(
        f"blocks-v{cache.TOKENS_VERSION}",
        source_fingerprint(cfg),
        cfg.model_dump(exclude={"path", "hub", "rows"}),
        cache.tokenizer_fingerprint(fm.tok),
        block,
    )
    path = cache.cache_dir() / "blocks" / f"{key}.u32"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        pending: list[int] = []
        n_rows = 0
        start = document_start(fm.tok)
        try:
            with open(tmp, "wb") as out:
                for row, where in iter_rows(cfg):
                    text = row.get("text")
                    if text is None:
                        raise ValueError(
                            f"{where}: field 'text' is missing (streaming pretrain rows need text); "
                            "rename columns with data.columns"
                        )
                    if not isinstance(text, str) or not text.strip():
                        raise ValueError(f"{where}: field 'text' must be a non-empty string, got {shown(text)}")
                    ids = fm.tok(text, add_special_tokens=False)["input_ids"]
                    pending += packed_document(ids, start, fm.eos_id, n_rows == 0)  # as `pack` does
                    n_rows += 1
                    full = len(pending) // block * block
                    if full:
                        np.asarray(pending[:full], dtype=np.uint32).tofile(out)
                        pending = pending[full:]
            if n_rows == 0:
                empty = " (the file is empty)" if cfg.path and Path(cfg.path).stat().st_size == 0 else ""
                raise ValueError(f"{cfg.path or cfg.hub or 'inline rows'}: no rows{empty}")
        except BaseException:  # a bad row or an interrupt leaves no partial file in the cache
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
    ds = BlockDataset(path, block)
    if len(ds) == 0:
        raise ValueError(f"{cfg.path or cfg.hub}: fewer tokens than one block of {block}; lower train.max_length")
    return ds
