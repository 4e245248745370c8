"""Read a stage's rows from jsonl / json / csv / parquet / txt files, a saved HF dataset directory, a hub
dataset, or inline rows. Every row keeps where it came from so errors name the file and line."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lifelong.config import DataConfig


@dataclass
class Rows:
    """Rows plus, for each, a human-readable origin such as `data/a.jsonl line 3`."""

    rows: list[dict[str, Any]]
    where: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.rows)


LINE_FORMATS = (".jsonl", ".csv", ".txt", ".md", ".parquet")


def _iter_file(path: Path, limit: int | None) -> Iterator[tuple[dict, str]]:
    """(row, where) pairs of a line-based file, one at a time (never the whole file in memory)."""
    suffix, n = path.suffix.lower(), 0
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} line {line_no}: not valid JSON ({e.msg} at column {e.colno}); "
                                     "each line must be one JSON object") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{path} line {line_no}: expected a JSON object, got {type(obj).__name__}")
                yield obj, f"{path} line {line_no}"
                n += 1
                if limit and n >= limit:
                    return
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if None in row:
                    raise ValueError(f"{path} line {reader.line_num}: more values than header columns")
                yield dict(row), f"{path} line {reader.line_num}"
                n += 1
                if limit and n >= limit:
                    return
    elif suffix in (".txt", ".md"):  # one document per block of non-blank lines
        buf: list[str] = []
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    buf.append(line.rstrip("\n"))
                    continue
                if buf:
                    yield {"text": "\n".join(buf).strip()}, f"{path} line {line_no - len(buf)}"
                    buf = []
                    n += 1
                    if limit and n >= limit:
                        return
            if buf:
                yield {"text": "\n".join(buf).strip()}, f"{path} end"
    else:  # parquet, in record batches
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for r in batch.to_pylist():
                yield r, f"{path} row {n}"
                n += 1
                if limit and n >= limit:
                    return


def _rename(row: dict, columns: dict[str, str]) -> dict:
    for src, dst in columns.items():
        if src in row:
            row[dst] = row.pop(src)
    return row


def iter_rows(cfg: DataConfig) -> Iterator[tuple[dict, str]]:
    """(row, where) pairs without loading the source: inline rows, a hub dataset (`streaming=True`) or a
    line-based file; columns renamed as configured."""
    limit = cfg.max_examples
    if cfg.rows is not None:
        for i, r in enumerate(cfg.rows[:limit] if limit else cfg.rows):
            yield _rename(dict(r), cfg.columns), f"inline row {i}"
        return
    if cfg.hub is not None:
        import datasets

        for i, r in enumerate(datasets.load_dataset(cfg.hub, cfg.subset, split=cfg.split, streaming=True)):
            if limit and i >= limit:
                return
            yield _rename(dict(r), cfg.columns), f"hub dataset {cfg.hub} row {i}"
        return
    path = Path(cfg.path)  # type: ignore[arg-type]
    if not path.exists():
        raise ValueError(f"{path}: no such data file (paths are relative to the config file)")
    if path.suffix.lower() not in LINE_FORMATS:
        raise ValueError(f"{path}: streaming reads .jsonl, .txt, .csv or .parquet files")
    for row, where in _iter_file(path, limit):
        yield _rename(row, cfg.columns), where


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
            if suffix in LINE_FORMATS:
                pairs = list(_iter_file(path, limit))
                out = Rows([r for r, _ in pairs], [w for _, w in pairs], str(path))
            elif suffix == ".json":
                out = _json(path, limit)
            else:
                raise ValueError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json, .csv, "
                                 ".parquet, .txt or a saved dataset directory")
    for r in out.rows:
        _rename(r, cfg.columns)
    if not out.rows:
        raise ValueError(f"{out.source}: no rows")
    return out
