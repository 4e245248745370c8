"""The public Python API: what the CLI does, callable from user code (docs/api.md, whose examples the test
suite runs).

    from lifelong import api
    cfg = api.load_config("my.yaml", ["train.lr=1e-4"])     # or api.load_config({...}) from a dict
    result = api.run(cfg, on_event=print)                    # trains through the stream; report.html too
    run = api.open_run(result.run_dir)                       # matrix, metrics, per-example scores
    run.stage_models(); api.export(run.run_dir, "out/", stage="task1")   # models out, with lineage
    api.merge("merge.yaml", "merged/")                       # mergekit-style YAML (or a dict)
    api.edit(model, tokenizer, requests, method="rome")      # reversible knowledge edits
    api.compare(["runs/a", "runs/b"], reference="runs/a")    # paired differences: CIs, p-values, verdicts
    api.evaluate("org/model", tasks="eval.yaml")             # score any model, no training (or "runs/x:stage")

Custom methods need no fork: register them from user code (`STRATEGIES.register("mine")(Mine)`, likewise
`SCORERS`, `STAGE_KINDS`, `MERGE_METHODS`, `EDITORS`) before `load_config`, or install them as entry points
(docs/architecture.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from lifelong.config import RunConfig

if TYPE_CHECKING:
    from lifelong.evaluate import EvalResult

__all__ = ["RunRecord", "compare", "edit", "evaluate", "export", "load_config", "merge", "open_run", "run"]

Event = dict[str, Any]
"""One line of a run's `events.jsonl` (`type`: start, stage_start, step, checkpoint, eval, stage_end, end, ...)."""


def load_config(source: Union[str, Path, dict], overrides: Optional[list[str]] = None) -> RunConfig:
    """A validated run config from a YAML file (paths relative to it) or a dict (paths relative to the
    working directory), with dotted `key=value` overrides. Raises `ValueError` with every problem, located."""
    from lifelong.configio import apply_overrides
    from lifelong.validation import load_config as load_file
    from lifelong.validation import validate_raw

    if isinstance(source, dict):
        return validate_raw(apply_overrides(source, list(overrides or [])), "<dict>")
    return load_file(source, list(overrides or []))


@dataclass
class RunRecord:
    """A run directory, read back: the results matrix, metrics, per-example statistics, costs, config."""

    run_dir: Path
    rows: list[str]
    """`baseline`, then the stage names."""
    tasks: list[dict]
    """Per column: name, metric, higher_is_better, stage (owner index or None for probes), scorer, n."""
    matrix: list[list[Optional[float]]]
    metrics: dict[str, Any]
    costs: dict[str, dict]
    extra: dict[str, Any]
    per_example: dict[str, dict[str, list]]

    @property
    def finished(self) -> bool:
        return all(v is not None for row in self.matrix for v in row) and bool(self.metrics)

    def score(self, task: str, row: str) -> Optional[float]:
        """The matrix cell of eval task `task` after stage `row` (`baseline` for the row before training)."""
        return self.matrix[self._row(row)][self._col(task)]

    def examples(self, task: str, row: str) -> list[list[float]]:
        """The per-example statistics behind a cell (one list per eval item; the scorer's columns)."""
        self._col(task)
        self._row(row)
        return self.per_example.get(task, {}).get(row, [])

    def stage_models(self, hashes: bool = False) -> list[Any]:
        """Where each stage's weights exist in the run directory (exports, kept weights, checkpoints), with
        parent, size and, with `hashes`, content hash (`lifelong.stage_models.StageModel`)."""
        from lifelong.stage_models import list_stage_models

        return list_stage_models(self.run_dir, hashes=hashes)

    def events(self) -> list[Event]:
        """Every event the run logged, in order (a line cut by a kill is skipped)."""
        out = []
        path = self.run_dir / "events.jsonl"
        for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def _row(self, row: str) -> int:
        if row not in self.rows:
            raise ValueError(f"{self.run_dir}: no row {row!r} (rows: {', '.join(self.rows)})")
        return self.rows.index(row)

    def _col(self, task: str) -> int:
        names = [t["name"] for t in self.tasks]
        if task not in names:
            raise ValueError(f"{self.run_dir}: no eval task {task!r} (tasks: {', '.join(names)})")
        return names.index(task)


def open_run(run_dir: Union[str, Path]) -> RunRecord:
    """Read a run directory (finished or not)."""
    from lifelong.eval.results import Results

    d = Path(run_dir)
    if not (d / "results.json").is_file():
        raise ValueError(f"{d}: not a run directory with results (no results.json)")
    res = Results.load(d)
    return RunRecord(d, res.rows, res.tasks, res.matrix, res.metrics, res.costs, res.extra, res.stats)


def run(
    cfg: RunConfig,
    *,
    resume: bool = False,
    quiet: bool = True,
    on_event: Optional[Callable[[Event], None]] = None,
    report: bool = True,
) -> RunRecord:
    """Run a validated config through its stream (as `lifelong run`), calling `on_event` with every event
    as it is logged (main process), then build `report.html`. Returns the run, read back."""
    from lifelong.report.html import build_report
    from lifelong.runner import Run

    r = Run(cfg, resume=resume, quiet=quiet, callbacks=[on_event] if on_event else None)
    r.execute()
    if report and r.accelerator.is_main_process:
        build_report(r.run_dir)
    return open_run(r.run_dir)


def evaluate(
    model: Union[str, Path],
    tasks: Union[str, Path, list, None] = None,
    config: Union[str, Path, RunConfig, None] = None,
    out: Union[str, Path, None] = None,
    overrides: Optional[list[str]] = None,
    batch_size: Optional[int] = None,
) -> EvalResult:
    """Score eval tasks on a model without training it, as `lifelong eval` does (docs/eval.md): `model` a hub
    id, a model folder, a `.gguf` file, `package:<PyPI package>`, or a run's stage (`RUN_DIR:STAGE`, `RUN_DIR`
    for its last); `tasks` a tasks file or a list of task dicts (entries of `eval.probes`), or `config` a run
    config (file, dict-validated `RunConfig`) whose eval suite is scored. Writes `out` (default
    `evals/<model>-<timestamp>`), readable by `open_run`; returns `lifelong.evaluate.EvalResult` (scores with
    95% CIs, per-example statistics)."""
    from lifelong.evaluate import evaluate as score_model
    from lifelong.evaluate import plan

    p = plan(str(model), tasks=tasks, config=config, overrides=list(overrides or []), batch_size=batch_size)
    return score_model(p, out)


def export(
    run_dir: Union[str, Path],
    out: Union[str, Path],
    stage: Optional[str] = None,
    format: str = "hf",
    merged: bool = False,
) -> dict:
    """Export a stage's model (default: the last stage) from a run into a new folder: a Hugging Face model
    directory (`hf`) or a PEFT adapter (`peft`, optionally with `merged` full weights), with a model card and
    `lineage.json`, as `lifelong export` does. Returns the lineage record."""
    from lifelong.stage_models import export_from_run

    return export_from_run(Path(run_dir), Path(out), stage=stage, fmt=format, merged=merged)


def merge(config: Union[str, Path, dict], out: Union[str, Path]) -> Path:
    """Merge models as a mergekit-style YAML file (or the same as a dict) says, into a new folder `out`."""
    from lifelong.configio import ConfigError, format_validation_error
    from lifelong.merging.engine import MergeConfig, load_merge_config, merge_models

    if isinstance(config, dict):
        from pydantic import ValidationError

        try:
            cfg = MergeConfig.model_validate(config)
        except ValidationError as err:
            raise ConfigError("\n".join(format_validation_error(err, "<dict>", {}))) from None
    else:
        cfg = load_merge_config(config)
    return merge_models(cfg, out)


def edit(model: Any, tokenizer: Any, requests: Union[str, Path, list], method: str = "rome", **params: Any) -> Any:
    """Apply knowledge-edit requests (a jsonl path, rows, or `EditRequest`s) to `model` in place; returns the
    `EditResult`, whose `undo(model)` restores the weights bit for bit."""
    from lifelong.editing import edit as edit_model
    from lifelong.editing import load_requests

    return edit_model(model, tokenizer, load_requests(requests), method=method, **params)


def compare(
    run_dirs: list[Union[str, Path]],
    reference: Optional[Union[str, Path]] = None,
    *,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    pool_seeds: bool = True,
) -> dict:
    """Paired differences of runs of one stream to a reference run (a directory or a run name; default the
    first), as `lifelong compare` prints them: for every metric of every group and every matrix cell, the
    difference (run - reference), its paired bootstrap CI over the shared eval items (seeds too, when runs differ
    only in seed: `pool_seeds`), a paired permutation p-value and a verdict ("better", "worse", "not
    distinguishable"). Runs of different streams or items are refused (`ValueError`). docs/metrics.md."""
    from lifelong.report.compare import paired
    from lifelong.report.html import load_run

    runs = [load_run(Path(d)) for d in run_dirs]
    ref = None if reference is None else str(reference)
    return paired(runs, ref, n_boot=n_boot, n_perm=n_perm, seed=seed, level=level, pool_seeds=pool_seeds)
