"""Read a stage's rows from jsonl / json / csv / parquet / txt files, a saved HF dataset directory, a hub
dataset, or inline rows. Every row keeps where it came from so errors name the file and line."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from lifelong.config import DataConfig


@dataclass
class Rows:
    """Rows plus, for each, a human-readable origin such as `data/a.jsonl line 3`."""

    rows: list[dict[str, Any]]
    where: list[str] = field(default_factory=list)
    source: str = ""
    columns: Optional[list[str]] = None
    """The header of a CSV file (after renaming), so a missing column is reported at line 1."""

    def __len__(self) -> int:
        return len(self.rows)


LINE_FORMATS = (".jsonl", ".csv", ".txt", ".md", ".parquet")


def not_utf8(path: Path) -> ValueError:
    """The located error for a file that does not decode as UTF-8: the first bad byte, its line and its
    (byte) column, found by re-reading the file one line at a time (memory stays one line)."""
    with path.open("rb") as f:
        for line_no, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return ValueError(
                    f"{path}:{line_no}: not UTF-8 (byte 0x{line[e.start]:02x} at column "
                    f"{e.start + 1}); save the file as UTF-8"
                )
    return ValueError(f"{path}: not UTF-8; save the file as UTF-8")


def check_path(path: Path) -> None:
    """A data path that is neither a file nor a saved dataset folder gives one line saying so."""
    if path.is_dir():
        if not ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            raise ValueError(
                f"{path}: is a folder, not a data file; name a file in it (e.g. {path}/train.jsonl), "
                "or a folder written by Dataset.save_to_disk"
            )
    elif not path.exists():
        raise ValueError(f"{path}: no such data file (paths are relative to the config file)")


def _no_rows(path: Path) -> ValueError:
    empty = path.is_file() and path.stat().st_size == 0
    return ValueError(f"{path}: no rows (the file is empty)" if empty else f"{path}: no rows")


def _iter_file(path: Path, limit: int | None) -> Iterator[tuple[dict, str]]:
    """(row, where) pairs of a line-based file, one at a time (never the whole file in memory). A file that
    cannot be read or decoded gives one located ValueError."""
    try:
        yield from _iter_lines(path, limit)
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None


def _iter_lines(path: Path, limit: int | None) -> Iterator[tuple[dict, str]]:
    suffix, n = path.suffix.lower(), 0
    if suffix == ".jsonl":
        with path.open(encoding="utf-8-sig") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:  # without its newline, so an error at the end of the line is located on it
                    obj = json.loads(line.rstrip("\n"))
                except json.JSONDecodeError as e:
                    end = ", the end of the line" if e.pos >= len(line.rstrip()) else ""
                    raise ValueError(
                        f"{path} line {line_no}: not valid JSON ({_json_msg(e)} at column {e.colno}{end}); "
                        "each line must be one JSON object"
                    ) from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{path} line {line_no}: expected a JSON object, got {type(obj).__name__}")
                yield obj, f"{path} line {line_no}"
                n += 1
                if limit and n >= limit:
                    return
    elif suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            try:
                for row in reader:
                    if None in row:
                        raise ValueError(f"{path} line {reader.line_num}: more values than header columns")
                    yield dict(row), f"{path} line {reader.line_num}"
                    n += 1
                    if limit and n >= limit:
                        return
            except csv.Error as e:
                raise ValueError(f"{path} line {reader.line_num}: not valid CSV ({e})") from None
    elif suffix in (".txt", ".md"):  # one document per block of non-blank lines
        buf: list[str] = []
        line_no = 0
        with path.open(encoding="utf-8-sig") as f:
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
                yield {"text": "\n".join(buf).strip()}, f"{path} line {line_no - len(buf) + 1}"
    else:  # parquet, in record batches
        import pyarrow.parquet as pq

        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
            for batch in batches:
                for r in batch.to_pylist():
                    yield r, f"{path} row {n}"
                    n += 1
                    if limit and n >= limit:
                        return
        except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid / ArrowIOError derive from these
            raise ValueError(f"{path}: not a readable parquet file ({e})") from None


def _json_msg(e: json.JSONDecodeError) -> str:
    return e.msg.removesuffix(" at")  # "Invalid control character at": the position follows in our message


def _rename(row: dict, columns: dict[str, str]) -> dict:
    for src, dst in columns.items():
        if src in row:
            row[dst] = row.pop(src)
    return row


def iter_rows(cfg: DataConfig) -> Iterator[tuple[dict, str]]:
    """(row, where) pairs without loading the source: inline rows, a hub dataset (`streaming=True`) or a
    line-based file; columns renamed as configured, only the rows `cfg.where` keeps, at most `max_examples`."""
    if not cfg.where:
        yield from _iter_all(cfg)
        return
    keep = RowFilter(cfg.where)
    n = 0
    for row, where in _iter_all(cfg.model_copy(update={"max_examples": None})):
        if keep(row):
            yield row, where
            n += 1
            if cfg.max_examples and n >= cfg.max_examples:
                return
    keep.check(cfg.path or cfg.hub or "inline rows")


def _iter_all(cfg: DataConfig) -> Iterator[tuple[dict, str]]:
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
    check_path(path)
    if path.is_dir() or path.suffix.lower() not in LINE_FORMATS:
        raise ValueError(f"{path}: streaming reads .jsonl, .txt, .csv or .parquet files")
    for row, where in _iter_file(path, limit):
        yield _rename(row, cfg.columns), where


def _json(path: Path, limit: int | None) -> Rows:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    if not text.strip():
        raise _no_rows(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} line {e.lineno}: not valid JSON ({_json_msg(e)} at column {e.colno})") from None
    lines = _item_lines(text) if isinstance(obj, list) else None
    if isinstance(obj, dict):  # {"examples": [...]} or {"data": [...]} or {split: [...]}
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ValueError(f"{path}: expected a JSON list of objects (or one list inside an object)")
        obj = lists[0]
    if not isinstance(obj, list):
        raise ValueError(f"{path}: expected a JSON list of objects, got {type(obj).__name__}")
    rows, where = [], []
    for i, r in enumerate(obj[:limit] if limit else obj):
        at = f"{path} line {lines[i]} (item {i})" if lines else f"{path} item {i}"
        if not isinstance(r, dict):
            raise ValueError(f"{at}: expected an object, got {type(r).__name__}")
        rows.append(r)
        where.append(at)
    return Rows(rows, where, str(path))


_SPACE = re.compile(r"[ \t\n\r]*")


def _item_lines(text: str) -> list[int]:
    """The line each item of a (valid) top-level JSON list starts on."""
    dec = json.JSONDecoder()
    i = _SPACE.match(text, 0).end() + 1  # type: ignore[union-attr]  # past "["
    line, seen = 1, 0
    out: list[int] = []
    while True:
        i = _SPACE.match(text, i).end()  # type: ignore[union-attr]
        if text[i] == "]":
            return out
        line += text.count("\n", seen, i)
        seen = i
        out.append(line)
        _, i = dec.raw_decode(text, i)
        i = _SPACE.match(text, i).end()  # type: ignore[union-attr]
        if text[i] == ",":
            i += 1


def _dataset(ds: Any, label: str, limit: int | None) -> Rows:
    n = len(ds) if limit is None else min(limit, len(ds))
    rows = [dict(ds[i]) for i in range(n)]
    return Rows(rows, [f"{label} row {i}" for i in range(n)], label)


def _saved(path: Path, split: str, limit: int | None) -> Rows:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 (a damaged folder fails in many ways inside `datasets`)
        raise ValueError(f"{path}: cannot load the saved dataset ({type(e).__name__}: {e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"{path}: no split {split!r} (has {list(ds)}); set data.split")
        ds = ds[split]
    return _dataset(ds, str(path), limit)


def load_rows(cfg: DataConfig) -> Rows:
    """Load rows as configured, renaming columns per `cfg.columns`, keeping the rows `cfg.where` selects (then
    at most `max_examples` of them). Every problem with the file is one ValueError naming the file and, where
    there is one, the line."""
    if cfg.where:
        out = load_rows(cfg.model_copy(update={"where": {}, "max_examples": None}))
        keep = RowFilter(cfg.where)
        kept = [k for k, r in enumerate(out.rows) if keep(r)]
        keep.check(out.source)
        kept = kept[: cfg.max_examples] if cfg.max_examples else kept
        return Rows([out.rows[k] for k in kept], [out.where[k] for k in kept], out.source, out.columns)
    limit = cfg.max_examples
    if cfg.rows is not None:
        out = Rows(
            [dict(r) for r in cfg.rows[:limit] if isinstance(r, dict)],
            [f"inline row {i}" for i in range(len(cfg.rows[:limit]))],
            "inline rows",
        )
    elif cfg.hub is not None:
        import datasets

        ds = datasets.load_dataset(cfg.hub, cfg.subset, split=cfg.split)
        out = _dataset(ds, f"hub dataset {cfg.hub}[{cfg.split}]", limit)
    else:
        path = Path(cfg.path)  # type: ignore[arg-type]
        check_path(path)
        suffix = path.suffix.lower()
        if path.is_dir():
            out = _saved(path, cfg.split, limit)
        elif suffix in LINE_FORMATS:
            pairs = list(_iter_file(path, limit))
            out = Rows([r for r, _ in pairs], [w for _, w in pairs], str(path))
            if suffix == ".csv" and pairs:
                out.columns = list(pairs[0][0])
        elif suffix == ".json":
            out = _json(path, limit)
        else:
            raise ValueError(
                f"{path}: unsupported file type {suffix!r}; use .jsonl, .json, .csv, "
                ".parquet, .txt or a saved dataset directory"
            )
        if not out.rows:
            raise _no_rows(path)
    for r in out.rows:
        _rename(r, cfg.columns)
    if out.columns is not None:
        out.columns = [cfg.columns.get(c, c) for c in out.columns]
    if not out.rows:
        raise ValueError(f"{out.source}: no rows")
    return out


def _as_text(v: Any) -> str:
    """A field value as `where` compares it: booleans as `true`/`false` (so a CSV's text matches), the rest
    as their text."""
    return str(v).lower() if isinstance(v, bool) else str(v)


class RowFilter:
    """`data.where`: a row is kept when every named field has one of the given values (compared as text).
    Called on every row, it notes the values each field takes, so `check` can say which given value no row
    has and what the rows have instead."""

    def __init__(self, where: dict[str, Any]) -> None:
        self.want = {f: {_as_text(x) for x in (v if isinstance(v, list) else [v])} for f, v in where.items()}
        self.given = where
        self.seen: dict[str, set[str]] = {f: set() for f in where}
        self.kept = 0

    def __call__(self, row: dict) -> bool:
        ok = True
        for f, want in self.want.items():
            if f not in row or row[f] is None:
                ok = False
                continue
            v = _as_text(row[f])
            if len(self.seen[f]) < 1000:
                self.seen[f].add(v)
            ok = ok and v in want
        self.kept += ok
        return ok

    def check(self, source: str) -> None:
        """Raise the located error for a value no row has, or a filter that keeps no row."""
        for f, want in self.want.items():
            have = self.seen[f]
            if not have:
                raise ValueError(f"{source}: where: no row has the field {f!r}; name a field of the rows")
            missing = sorted(want - have)
            if missing:
                values = ", ".join(sorted(have)[:20]) + (", ..." if len(have) > 20 else "")
                raise ValueError(
                    f"{source}: where: no row has {f}: {missing[0]} (the rows' values of {f!r}: {values}); "
                    "correct the value"
                )
        if not self.kept:
            given = ", ".join(f"{f}: {v}" for f, v in self.given.items())
            raise ValueError(f"{source}: where: no row has all of {given}; loosen the filter")
