"""Knowledge-edit request sets in their published JSON layouts (`counterfact`, `zsre`), shared by both benchmarks:
where the file comes from (`path`, a hub dataset repo holding it, else the authors' release), which requests are
taken, and how they become edit stages and probes of the results matrix.

Each record becomes one request of lifelong's edit format (`lifelong.data.edit_requests`, docs/editing.md); the
requests are written once to the benchmark cache and the stages point at that file. The stream is `stages` edit
stages of consecutive requests (one stage: the ROME / MEMIT batch protocol applied once; several: sequential
editing, the matrix showing whether later edits undo earlier ones), each scored on its own requests' efficacy; the
generalization and locality scores over every request are probes after every stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Optional

from pydantic import Field

from lifelong.benchmarks.base import Benchmark, BenchmarkError, BenchmarkParams, cache_root, offline, sample, write_rows

RELEASE = "https://rome.baulab.info/data/dsets/"
"""Where ROME's and MEMIT's code download the request sets from (`util/globals.py`'s REMOTE_ROOT_URL + data/dsets)."""


class EditSetParams(BenchmarkParams):
    requests: Optional[int] = Field(default=None, ge=1, le=10**7)
    """Requests taken: the first N records of the file (ROME and MEMIT's `--dataset_size_limit`), or N drawn with
    `seed` when `pick: sample`; default every record."""
    pick: Literal["first", "sample"] = "first"
    """`first`: the first `requests` records, in file order, as the papers evaluate; `sample`: drawn with `seed`."""
    stages: int = Field(default=1, ge=1, le=100_000)
    """Edit stages the requests are split into, in order (1: one editor call per stage group, the batch protocol;
    more: sequential editing, each stage's efficacy a column of the matrix)."""
    method: str = "rome"
    """The editor of every stage (`lifelong ls editors`)."""
    edit_params: dict[str, Any] = Field(default_factory=dict)
    """The editor's params (e.g. ROME's `stats: {corpus: {path: ...}, tokens: 20000}` for offline key
    statistics); passed as each stage's `edit.params`."""
    group: Optional[int] = Field(default=None, ge=1, le=10**7)
    """Requests per editor call within a stage (the edit stage's `group`; default: the stage's editor default)."""
    file: Optional[str] = None
    """The file name inside `path` or the `hub` repo (default: the name of the authors' release)."""


class EditSetBenchmark(Benchmark):
    """Base of `counterfact` and `zsre`: subclasses set the names and `convert` one record."""

    Params: ClassVar[type[EditSetParams]] = EditSetParams  # type: ignore[assignment]
    name: ClassVar[str] = ""
    file_name: ClassVar[str] = ""
    """The release's file name (ROME's `data/dsets/<file>`)."""
    variant: ClassVar[str] = "top1"
    """The edit scorer's variant the set's published metrics use."""
    columns: ClassVar[tuple[str, str, str]] = ("efficacy", "generalization", "locality")
    """Matrix column names of the efficacy, generalization and locality scores (the papers' metric names)."""

    def convert(self, record: Any, index: int, where: str, params: Any) -> Optional[dict]:
        """One record as a request row (None: the record cannot be a request, and is left out)."""
        raise NotImplementedError

    # ---- expansion -------------------------------------------------------------------------------------
    def expand(self, params: Any, base_dir: Path) -> list[dict]:
        for unused in ("order", "tasks", "train_per_task", "eval_per_task"):
            if getattr(params, unused) is not None:
                raise BenchmarkError(unused, f"{self.name} has no tasks or splits; pick requests with `requests`")
        path, records = self.records(params, base_dir)
        from lifelong.data.edit_requests import parse_request

        rows = []
        for i, rec in enumerate(records):
            row = self.convert(rec, i, f"{path} record {i}", params)
            if row is None:
                continue
            try:
                parse_request(row, f"{path} record {i}")  # what the edit stage will check, said at the source
            except ValueError as e:
                raise BenchmarkError("path", str(e)) from None
            rows.append(row)
        skipped = len(records) - len(rows)
        if skipped:  # said, never silent (zsRE: questions that do not name their subject)
            import warnings

            warnings.warn(
                f"{self.name}: {skipped} of {len(records)} records of {path} left out: {self.skip_reason}",
                stacklevel=2,
            )
        if not rows:
            raise BenchmarkError("path", f"{path}: no record of {len(records)} could be made an edit request")
        if params.requests is not None:
            rows = (
                rows[: params.requests]
                if params.pick == "first"
                else sample(rows, params.requests, params.seed, "edits")
            )
        if params.stages > len(rows):
            raise BenchmarkError(
                "stages", f"{params.stages} stages for {len(rows)} requests; at most one stage per request"
            )
        self.all_rows = write_rows(self.name, "requests", rows)
        stages = []
        cuts = [round(k * len(rows) / params.stages) for k in range(params.stages + 1)]
        for k in range(params.stages):
            part = rows[cuts[k] : cuts[k + 1]]
            stem = "edits" if params.stages == 1 else f"edits_{k + 1}"
            path_k = self.all_rows if params.stages == 1 else write_rows(self.name, stem, part)
            edit: dict[str, Any] = {"method": params.method, "params": dict(params.edit_params)}
            if params.group is not None:
                edit["group"] = params.group
            col = self.columns[0] if params.stages == 1 else f"{self.columns[0]}_{k + 1}"
            stages.append(
                {
                    "name": stem,
                    "kind": "edit",
                    "data": {"path": path_k, "format": "edit"},
                    "edit": edit,
                    "eval": self._task(col, path_k, "efficacy"),
                }
            )
        return stages

    def probes(self, params: Any, base_dir: Path) -> list[dict]:
        """Generalization and locality over every request, after every stage."""
        return [
            self._task(self.columns[1], self.all_rows, "generalization"),
            self._task(self.columns[2], self.all_rows, "locality"),
        ]

    def _task(self, name: str, path: str, metric: str) -> dict:
        return {
            "name": name,
            "path": path,
            "format": "edit",
            "scorer": "edit",
            "params": {"metric": metric, "variant": self.variant},
        }

    # ---- reading -----------------------------------------------------------------------------------------
    def records(self, params: Any, base_dir: Path) -> tuple[Path, list]:
        """The release file's records: `path` (the file, or a folder holding it), a dataset repo on the hub
        holding it (`hub`), else the authors' release (downloaded once into the benchmark cache)."""
        name = params.file or self.file_name
        if params.path is not None and params.hub is not None:
            raise BenchmarkError("path", "give `path` or `hub`, not both")
        if params.path is not None:
            p = Path(params.path).expanduser()
            p = p if p.is_absolute() else (base_dir / p).resolve()
            if p.is_dir():
                p = p / name
            if not p.is_file():
                raise BenchmarkError(
                    "path",
                    f"no file {p} (give the release's {name}, or a folder holding it; relative paths are "
                    "read from the config file's folder)",
                )
        elif params.hub is not None:
            p = self._from_hub(params.hub, name)
        else:
            p = self._from_release(name)
        return p, _json_list(p, self.record_hint)

    record_hint: ClassVar[str] = ""
    skip_reason: ClassVar[str] = "not an edit request"

    @staticmethod
    def _from_hub(repo: str, name: str) -> Path:
        if offline():
            raise BenchmarkError("hub", f"cannot download {repo}: the hub is offline (HF_HUB_OFFLINE); use `path`")
        import huggingface_hub

        try:
            return Path(huggingface_hub.hf_hub_download(repo_id=repo, filename=name, repo_type="dataset"))
        except Exception as e:  # network, auth, missing repo or file: one line naming them
            raise BenchmarkError(
                "hub", f"cannot download {name} of dataset {repo} from the hub ({type(e).__name__}: {e})"
            ) from None

    def _from_release(self, name: str) -> Path:
        dest = cache_root() / self.name / name
        if dest.is_file():
            return dest
        if offline():
            raise BenchmarkError(
                "path",
                f"no `path` or `hub`, and the authors' release ({RELEASE}{name}) cannot be downloaded "
                "offline (HF_HUB_OFFLINE); give `path` to a local copy",
            )
        import urllib.request

        from lifelong.fileio import atomic_write_text, ensure_writable_dir

        try:
            with urllib.request.urlopen(RELEASE + name, timeout=60) as r:  # noqa: S310 (a fixed https URL)
                text = r.read().decode("utf-8")
        except Exception as e:
            raise BenchmarkError(
                "path", f"cannot download {RELEASE}{name} ({type(e).__name__}: {e}); give `path`"
            ) from None
        ensure_writable_dir(dest.parent, "benchmark cache folder")
        atomic_write_text(dest, text)
        return dest


def _json_list(path: Path, hint: str) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchmarkError("path", f"{path}: not valid UTF-8 JSON ({e})") from None
    if not isinstance(data, list):
        raise BenchmarkError("path", f"{path}: expected a JSON list of records ({hint})")
    return data


def field(rec: Any, keys: tuple[str, ...], kind: type, where: str, hint: str) -> Any:
    """`rec[k0][k1]...`, of type `kind`; a BenchmarkError naming the record and the field otherwise."""
    v = rec
    for k in keys:
        if not isinstance(v, dict) or k not in v:
            raise BenchmarkError("path", f"{where}: no field {'.'.join(keys)!r} ({hint})")
        v = v[k]
    ok: Callable[[Any], bool] = (
        (lambda x: isinstance(x, list) and all(isinstance(s, str) for s in x))
        if kind is list
        else (lambda x: isinstance(x, kind) and (not isinstance(x, str) or bool(x.strip())))
    )
    if not ok(v):
        what = "a list of strings" if kind is list else f"a non-empty {kind.__name__}"
        raise BenchmarkError("path", f"{where}: field {'.'.join(keys)!r} must be {what}, got {json.dumps(v)[:60]}")
    return v
