"""Read a stage's rows from jsonl / json / csv / parquet / txt files, a saved HF dataset directory, a hub
dataset, or inline rows. Every row keeps where it came from so errors name the file and line."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.config import DataConfig


@dataclass
class Rows:
    """Rows plus, for each, a human-readable origin such as `data/a.jsonl line 3`."""

    rows: list[dict[str, Any]]
    where: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.rows)


def _jsonl(path: Path, limit: int | None) -> Rows:
    rows, where = [], []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {n}: not valid JSON ({e.msg} at column {e.colno}); "
                                 "each line must be one JSON object") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path} line {n}: expected a JSON object, got {type(obj).__name__}")
            rows.append(obj)
            where.append(f"{path} line {n}")
            if limit and len(rows) >= limit:
                break
    return Rows(rows, where, str(path))


def _json(path: Path, limit: int | None) -> Rows:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} line {e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(obj, dict):  # {"examples": [...]} or {"data": [...]} or {split: [...]}
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ValueError(f"{path}: expected a JSON list of objects (or one list inside an object)")
        obj = lists[0]
    if not isinstance(obj, list):
        raise ValueError(f"{path}: expected a JSON list of objects")
    rows, where = [], []
    for i, r in enumerate(obj[:limit] if limit else obj):
        if not isinstance(r, dict):
            raise ValueError(f"{path} item {i}: expected an object, got {type(r).__name__}")
        rows.append(r)
        where.append(f"{path} item {i}")
    return Rows(rows, where, str(path))


def _csv(path: Path, limit: int | None) -> Rows:
    rows, where = [], []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            if None in row:
                raise ValueError(f"{path} line {reader.line_num}: more values than header columns")
            rows.append(dict(row))
            where.append(f"{path} line {reader.line_num}")
            if limit and len(rows) >= limit:
                break
    return Rows(rows, where, str(path))


def _txt(path: Path, limit: int | None) -> Rows:
    """A plain text file is one document per blank-line separated paragraph block."""
    text = path.read_text(encoding="utf-8")
    docs = [d.strip() for d in text.split("\n\n") if d.strip()]
    docs = docs[:limit] if limit else docs
    return Rows([{"text": d} for d in docs], [f"{path} document {i}" for i in range(len(docs))], str(path))


def _dataset(ds: Any, label: str, limit: int | None) -> Rows:
    n = len(ds) if limit is None else min(limit, len(ds))
    rows = [dict(ds[i]) for i in range(n)]
    return Rows(rows, [f"{label} row {i}" for i in range(n)], label)


def load_rows(cfg: DataConfig) -> Rows:
    """Load rows as configured, renaming columns per `cfg.columns`."""
    limit = cfg.max_examples
    if cfg.rows is not None:
        out = Rows([dict(r) for r in cfg.rows[:limit] if isinstance(r, dict)],
                   [f"inline row {i}" for i in range(len(cfg.rows[:limit]))], "inline rows")
    elif cfg.hub is not None:
        import datasets

        ds = datasets.load_dataset(cfg.hub, cfg.subset, split=cfg.split)
        out = _dataset(ds, f"hub dataset {cfg.hub}[{cfg.split}]", limit)
    else:
        path = Path(cfg.path)  # type: ignore[arg-type]
        if path.is_dir():
            import datasets

            if not ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
                raise ValueError(f"{path}: a directory must be saved with Dataset.save_to_disk")
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if cfg.split not in ds:
                    raise ValueError(f"{path}: no split {cfg.split!r} (has {list(ds)}); set data.split")
                ds = ds[cfg.split]
            out = _dataset(ds, str(path), limit)
        elif not path.exists():
            raise ValueError(f"{path}: no such data file (paths are relative to the config file)")
        else:
            suffix = path.suffix.lower()
            if suffix == ".jsonl":
                out = _jsonl(path, limit)
            elif suffix == ".json":
                out = _json(path, limit)
            elif suffix == ".csv":
                out = _csv(path, limit)
            elif suffix in (".txt", ".md"):
                out = _txt(path, limit)
            elif suffix == ".parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(path)
                rows = table.slice(0, limit).to_pylist() if limit else table.to_pylist()
                out = Rows(rows, [f"{path} row {i}" for i in range(len(rows))], str(path))
            else:
                raise ValueError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json, .csv, "
                                 ".parquet, .txt or a saved dataset directory")
    if cfg.columns:
        for r in out.rows:
            for src, dst in cfg.columns.items():
                if src in r:
                    r[dst] = r.pop(src)
    if not out.rows:
        raise ValueError(f"{out.source}: no rows")
    return out
