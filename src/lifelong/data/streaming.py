"""Streaming corpora for continual pre-training: rows are read one at a time (jsonl, txt, csv, parquet,
or a hub dataset with `streaming=True`), tokenized and packed into fixed-length blocks written to a
memory-mapped file in the cache, keyed by content hash. The training loop indexes blocks lazily, so a
corpus larger than memory is never loaded, and a resume or a second run does not re-tokenize.

The trailing tokens that do not fill a last block are dropped (at most `block - 1` tokens).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lifelong.config import DataConfig
from lifelong.data import cache


def iter_rows(cfg: DataConfig) -> Iterator[tuple[dict, str]]:
    """(row, where) pairs without loading the source."""
    limit = cfg.max_examples
    n = 0

    def emit(row: dict, where: str) -> Iterator[tuple[dict, str]]:
        for src, dst in cfg.columns.items():
            if src in row:
                row[dst] = row.pop(src)
        yield row, where

    if cfg.rows is not None:
        for i, r in enumerate(cfg.rows[:limit] if limit else cfg.rows):
            yield from emit(dict(r), f"inline row {i}")
        return
    if cfg.hub is not None:
        import datasets

        for i, r in enumerate(datasets.load_dataset(cfg.hub, cfg.subset, split=cfg.split, streaming=True)):
            if limit and i >= limit:
                return
            yield from emit(dict(r), f"hub dataset {cfg.hub} row {i}")
        return
    path = Path(cfg.path)  # type: ignore[arg-type]
    if not path.exists():
        raise ValueError(f"{path}: no such data file (paths are relative to the config file)")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} line {line_no}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{path} line {line_no}: expected a JSON object")
                n += 1
                yield from emit(obj, f"{path} line {line_no}")
                if limit and n >= limit:
                    return
    elif suffix in (".txt", ".md"):
        buf: list[str] = []
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    buf.append(line.rstrip("\n"))
                    continue
                if buf:
                    n += 1
                    yield from emit({"text": "\n".join(buf)}, f"{path} line {line_no}")
                    buf = []
                    if limit and n >= limit:
                        return
            if buf:
                yield from emit({"text": "\n".join(buf)}, f"{path} end")
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                n += 1
                yield from emit(dict(row), f"{path} line {reader.line_num}")
                if limit and n >= limit:
                    return
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for r in batch.to_pylist():
                n += 1
                yield from emit(r, f"{path} row {n - 1}")
                if limit and n >= limit:
                    return
    else:
        raise ValueError(f"{path}: streaming reads .jsonl, .txt, .csv or .parquet files")


def source_fingerprint(cfg: DataConfig) -> Any:
    """Content hash of a file (read in chunks, never whole), or the identity of a hub dataset / inline rows."""
    if cfg.path:
        h = hashlib.sha256()
        with open(cfg.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
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
        ids = self.data[i * self.block:(i + 1) * self.block].tolist()  # type: ignore[index]
        return {"input_ids": ids, "labels": list(ids)}

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(self.n))


def streamed_blocks(cfg: DataConfig, fm: Any, block: int) -> BlockDataset:
    """Pack a streamed source into the block cache (once per content) and open it lazily."""
    key = cache.content_key("blocks-v1", source_fingerprint(cfg), cfg.model_dump(exclude={"path", "hub", "rows"}),
                            cache.tokenizer_fingerprint(fm.tok), block)
    path = cache.cache_dir() / "blocks" / f"{key}.u32"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        pending: list[int] = []
        n_rows = 0
        with open(tmp, "wb") as out:
            for row, where in iter_rows(cfg):
                text = row.get("text")
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"{where}: field 'text' is missing or empty (streaming pretrain rows need "
                                     "text); rename columns with data.columns")
                pending += fm.tok(text, add_special_tokens=False)["input_ids"]
                if fm.eos_id is not None:
                    pending.append(fm.eos_id)
                n_rows += 1
                full = len(pending) // block * block
                if full:
                    np.asarray(pending[:full], dtype=np.uint32).tofile(out)
                    pending = pending[full:]
        if n_rows == 0:
            tmp.unlink(missing_ok=True)
            raise ValueError(f"{cfg.path or cfg.hub or 'inline rows'}: no rows")
        os.replace(tmp, path)
    ds = BlockDataset(path, block)
    if len(ds) == 0:
        raise ValueError(f"{cfg.path or cfg.hub}: fewer tokens than one block of {block}; lower train.max_length")
    return ds
