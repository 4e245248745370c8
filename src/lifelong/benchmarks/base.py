"""What a benchmark is: a class with typed `Params` and `expand(params, base_dir) -> list[dict]`, the raw stage
dicts of an ordinary stream (name, kind, data, eval), deterministic given the params (seed included).

A config names it instead of writing stages: `benchmark: {name: standard_cl, order: 1, path: ...}`; the
expansion runs when the raw config is read (`lifelong.benchmarks.expand_config`, called by
`lifelong.validation.validate_raw`), so validation, `lifelong validate`'s printout, the run directory's
`config.yaml` and every later step see ordinary stages.

Rows a benchmark samples and formats are written once as `.jsonl` files named by the hash of their content under
`$LIFELONG_CACHE/benchmarks/<name>/` (`write_rows`), and the stages point at them: the printed config stays short,
the exact prompts the model saw can be read, and the same params give the same files."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, ClassVar, Optional

from pydantic import Field

from lifelong.config import Strict


class BenchmarkError(ValueError):
    """A benchmark's params do not fit its data: `field` (a key of `benchmark:`, or None for the whole section)
    is where the config's error is located."""

    def __init__(self, field: Optional[str], message: str) -> None:
        super().__init__(message)
        self.field = field


class BenchmarkParams(Strict):
    """The options every benchmark takes (a benchmark adds its own by subclassing)."""

    order: Optional[int] = Field(default=None, ge=1, le=1000)
    """A published task order (by its number in the benchmark's papers); default: the benchmark's first."""
    tasks: Optional[list[str]] = Field(default=None, min_length=1)
    """The tasks, in this order, instead of a published order (names as `lifelong ls benchmarks` lists them)."""
    train_per_task: Optional[int] = Field(default=None, ge=1, le=10**8)
    """Training rows per task, sampled with `seed` (default: every row of the training file)."""
    eval_per_task: Optional[int] = Field(default=None, ge=1, le=10**8)
    """Eval rows per task, sampled with `seed` (default: every row of the test file)."""
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Seed of the sampling: the same seed gives the same rows."""
    path: Optional[str] = Field(default=None, min_length=1)
    """A local folder in the upstream release's layout (relative paths are read from the config's folder)."""
    hub: Optional[str] = Field(default=None, min_length=1)
    """Read from the Hugging Face hub instead of `path` (needs the network; see the benchmark's docs)."""


class Benchmark:
    """Base of every benchmark: `Params`, `orders` (published orders by number), `tasks` (every task name), and
    `expand(params, base_dir)`."""

    Params: ClassVar[type[Strict]] = BenchmarkParams
    orders: ClassVar[dict[int, list[str]]] = {}
    """Published task orders, by their number in the papers."""
    tasks: ClassVar[list[str]] = []
    """Every task the benchmark knows."""

    def expand(self, params: Any, base_dir: Path) -> list[dict]:
        """The raw stage dicts of the stream (ordinary `stages:` entries). Raise `BenchmarkError` for params that
        do not fit the data (a missing file, an unknown task), naming the field."""
        raise NotImplementedError

    def probes(self, params: Any, base_dir: Path) -> list[dict]:
        """Eval tasks the benchmark adds to `eval.probes`, after the config's own (raw probe dicts): scores of the
        whole stream that no single stage owns, e.g. an edit benchmark's paraphrase and neighbourhood scores.
        Called after `expand`, on the same object. Default: none."""
        return []

    # ---- helpers for subclasses ------------------------------------------------------------------------
    def task_list(self, params: Any) -> list[str]:
        """`params.tasks` (checked against `tasks`), else the published order `params.order` (default: the
        first one)."""
        if params.tasks is not None:
            unknown = [t for t in params.tasks if t not in self.tasks]
            if unknown:
                import difflib

                near = difflib.get_close_matches(unknown[0], self.tasks, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise BenchmarkError("tasks", f"unknown task {unknown[0]!r}; {hint}tasks: {', '.join(self.tasks)}")
            if len(set(params.tasks)) != len(params.tasks):
                raise BenchmarkError("tasks", "a task is listed twice; list each task once")
            if params.order is not None:
                raise BenchmarkError("order", "give `order` or `tasks`, not both")
            return list(params.tasks)
        order = params.order if params.order is not None else min(self.orders)
        if order not in self.orders:
            raise BenchmarkError(
                "order", f"no published order {order}; orders: {', '.join(map(str, sorted(self.orders)))}"
            )
        return list(self.orders[order])

    @staticmethod
    def local_root(params: Any, base_dir: Path) -> Path:
        """`params.path` resolved against the config's folder; a BenchmarkError when it is no folder."""
        root = Path(params.path).expanduser()
        if not root.is_absolute():
            root = (base_dir / root).resolve()
        if not root.is_dir():
            raise BenchmarkError(
                "path", f"no such folder {params.path!r} (relative paths are read from the config file's folder)"
            )
        return root


def sample(rows: list[Any], n: Optional[int], seed: int, salt: str) -> list[Any]:
    """`n` rows drawn without replacement, in file order, by a generator seeded from `seed` and `salt` (a task
    and split name, so tasks draw independently); every row when `n` is None or not smaller than the rows."""
    if n is None or n >= len(rows):
        return list(rows)
    rng = random.Random(f"{seed}:{salt}")
    keep = sorted(rng.sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def cache_root() -> Path:
    from lifelong.data.cache import cache_dir

    return cache_dir() / "benchmarks"


def write_rows(benchmark: str, stem: str, rows: list[dict]) -> str:
    """Write rows as `<cache>/benchmarks/<benchmark>/<stem>-<content hash>.jsonl` (once; atomically) and return
    the path. The name depends only on the rows, so the same params give the same file."""
    import hashlib

    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    folder = cache_root() / benchmark
    path = folder / f"{stem}-{digest}.jsonl"
    if not path.is_file():
        from lifelong.fileio import atomic_write_text, ensure_writable_dir

        try:
            ensure_writable_dir(folder, "benchmark cache folder")
        except ValueError as e:
            raise BenchmarkError(None, f"{e} (set LIFELONG_CACHE to a writable folder)") from None
        atomic_write_text(path, text)
    return str(path)


def read_json(path: Path, field: str = "path") -> Any:
    """A JSON file of an upstream release; a BenchmarkError naming it when it is missing or not JSON."""
    if not path.is_file():
        raise BenchmarkError(field, f"no file {path} (the folder must hold the upstream release's layout)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchmarkError(field, f"{path}: not valid UTF-8 JSON ({e})") from None


def offline() -> bool:
    """True when the hub must not be asked (`HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE`)."""
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
