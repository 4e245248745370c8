"""Validating a run config completely, before anything loads: a `benchmark:` section expanded into stages
(`lifelong.benchmarks.expand_config`), the schema and cross-references (`lifelong.configio`), then every check
that the registries' owners define: strategy names and parameters (`lifelong.strategies.check_config`),
scorers (`lifelong.eval.scorers.check_config`), and each stage kind's own section (`StageKind.check`).
`lifelong validate` runs this and then `check_data`: what the eval suite would fail on once the model is
loaded, found by reading data rows only (no tokenizer, no model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from lifelong.config import EvalTaskConfig, RunConfig, StageConfig
from lifelong.configio import (
    ConfigError,
    Locator,
    check_eval_tasks,
    format_validation_error,
    parse,
    read_run_config,
)

__all__ = [
    "ConfigError",
    "check_data",
    "check_sharding",
    "launch_sharding",
    "load_config",
    "task_problem",
    "validate_raw",
]


def load_config(
    path: str | Path, overrides: Optional[list[str]] = None, read_data: bool = False, sharding: Optional[str] = None
) -> RunConfig:
    """Read, override and strictly validate a run config; with `read_data`, also `check_data` (what
    `lifelong validate` does); `sharding` ("fsdp2", "deepspeed", "none"): check it as a run sharded that way
    (default: as the launcher set this process up). Raises ConfigError with every problem, located."""
    path = Path(path)
    raw, lines = read_run_config(path, overrides)
    cfg = validate_raw(raw, str(path), lines, base_dir=path.parent, sharding=sharding)
    if read_data:
        msgs = check_data(cfg, Locator(str(path), lines))
        if msgs:
            raise ConfigError("\n".join(msgs))
    return cfg


def launch_sharding() -> str:
    """How `accelerate launch` set up this process, from the environment it exports: "fsdp2" / "fsdp1"
    (`distributed_type: FSDP` with `fsdp_version`), "deepspeed", or "none" (one process or data parallel)."""
    import os

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return "deepspeed"
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp2" if os.environ.get("FSDP_VERSION", "1").strip() == "2" else "fsdp1"
    return "none"


def check_sharding(cfg: RunConfig, at: Locator, mode: str) -> list[str]:
    """Located refusals of a run that shards its parameters (`mode` "fsdp2" or "deepspeed"): every strategy
    whose `fsdp_refusal()` (from `supports_fsdp` and `fsdp_note`, or its parameters) gives a reason, and every
    stage kind whose class sets `supports_fsdp = False` (with its `fsdp_note`); FSDP version 1 is refused as a
    whole."""
    from lifelong.stages import STAGE_KINDS
    from lifelong.strategies import STRATEGIES

    if mode in ("none", "ddp"):
        return []
    engine = {"fsdp2": "FSDP2", "deepspeed": "DeepSpeed"}.get(mode)
    if engine is None:
        return [
            f"{at.source}: accelerate config: FSDP version 1 is not supported; set fsdp_config.fsdp_version: 2 "
            "(lifelong trains sharded through FSDP2)"
        ]
    instead = "run it without sharding (accelerate launch --multi_gpu) or choose another"
    msgs = _deepspeed_limits(cfg, at) if mode == "deepspeed" else []
    for i, spec in enumerate(cfg.strategy):
        if spec.name not in STRATEGIES:
            continue
        cls = STRATEGIES.get(spec.name)
        refusal = "deepspeed_refusal" if mode == "deepspeed" else "fsdp_refusal"
        args = (_zero_stage(),) if mode == "deepspeed" else ()
        why = (
            getattr(cls(cls.Params(**(spec.model_extra or {})), seed=cfg.seed), refusal)(*args)
            if hasattr(cls, refusal)  # its parameters may decide
            else ("" if getattr(cls, "supports_fsdp", False) else getattr(cls, "fsdp_note", "") or "not tested sharded")
        )
        if why:
            loc = ("strategy", i, "name") if ("strategy", 0) in at.lines else ("strategy", "name")
            msgs.append(at(loc, f"strategy {spec.name} cannot train sharded ({engine}): {why}; {instead} strategy"))
    for i, s in enumerate(cfg.stages):
        kind = STAGE_KINDS.get(s.kind) if s.kind in STAGE_KINDS else None
        if kind is not None and not getattr(kind, "supports_fsdp", True):
            why = getattr(kind, "fsdp_note", "") or "it is not known to work on sharded parameters"
            msgs.append(
                at(("stages", i, "kind"), f"stage kind {s.kind} cannot run sharded ({engine}): {why}; {instead} kind")
            )
    return msgs


def _zero_stage() -> int:
    """The ZeRO stage `accelerate launch` exported (2 when it exported none)."""
    import os

    return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2").strip() or 2)


def _deepspeed_limits(cfg: RunConfig, at: Locator) -> list[str]:
    """What lifelong does not run under DeepSpeed. ZeRO-2 runs everything its strategies allow (checkpoints
    inside a stage and `optimizer_state: keep` carry each process's part of DeepSpeed's optimizer state). ZeRO-3
    partitions the weights during a stage (whole again at its end): checkpoints inside a stage, `keep` (lifelong
    saves ZeRO-2's optimizer parts only) and evaluation inside a stage (`eval_every`) are refused."""
    if _zero_stage() != 3:
        return []
    why = {
        "checkpoint_every": "checkpoints inside a stage under ZeRO-3 would need ZeRO-3's partitioned optimizer state, "
        "which lifelong saves for ZeRO-2 only; set checkpoint_every: 0 (stage-end checkpoints resume), or use ZeRO-2",
        "optimizer_state": "optimizer_state: keep under ZeRO-3 would carry ZeRO-3's partitioned optimizer state, "
        "which lifelong does for ZeRO-2 only; use reset, or ZeRO-2",
        "eval_every": "evaluation inside a stage under ZeRO-3 would run on partitioned weights outside the engine; "
        "set eval_every: 0 (every stage's end is evaluated), or use ZeRO-2",
    }
    msgs = []
    for i in range(len(cfg.stages)):
        tc = cfg.stage_train(i)
        own = cfg.stages[i].train.model_dump(exclude_none=True)  # type: ignore[attr-defined]
        used = {
            "checkpoint_every": tc.checkpoint_every,
            "optimizer_state": tc.optimizer_state == "keep",
            "eval_every": tc.eval_every,
        }
        for field, on in used.items():
            if on:
                loc = ("stages", i, "train", field) if field in own else ("train", field)
                msgs.append(at(loc, why[field]))
    return list(dict.fromkeys(msgs))


def validate_raw(
    raw: dict,
    source: str = "<config>",
    lines: Optional[dict[tuple, int]] = None,
    base_dir: Optional[Path] = None,
    sharding: Optional[str] = None,
) -> RunConfig:
    """Validate a raw config mapping (from a file or built in code). `sharding`: how the run will shard its
    parameters (`lifelong.train.sharding.sharding_mode`); by default what `accelerate launch` set up
    (`launch_sharding`), so `accelerate launch --config_file fsdp.yaml -m lifelong validate` checks the
    strategies against FSDP."""
    from lifelong import strategies
    from lifelong.benchmarks import expand_config
    from lifelong.eval import scorers
    from lifelong.stages import STAGE_KINDS

    at = Locator(source, lines)
    raw = expand_config(raw, at, base_dir)  # `benchmark:` becomes ordinary stages before anything else
    cfg, msgs = parse(raw, at, base_dir)
    msgs += strategies.check_config(cfg, at) + scorers.check_config(cfg, at)
    evaluated = bool(cfg.eval.probes)
    defaults: list[str] = []  # eval tasks that kinds give stages without `eval`
    for i, s in enumerate(cfg.stages):
        if s.kind not in STAGE_KINDS:
            msgs.append(at(("stages", i, "kind"), STAGE_KINDS.unknown_message(s.kind)))
            continue
        kind = STAGE_KINDS.get(s.kind)
        msgs += kind.check(cfg, i, at)
        default = kind().default_eval(s) if s.eval is None else None
        defaults += [default.name or s.name] if default is not None else []
        evaluated = evaluated or s.eval is not None or default is not None
    msgs += check_eval_tasks(cfg, at, defaults)
    if not msgs:
        msgs += check_sharding(cfg, at, launch_sharding() if sharding is None else sharding)
    if not evaluated and not msgs:
        msgs.append(
            at(
                ("stages",),
                "no eval task, so the run would train and measure nothing; give a stage an "
                "`eval:` (its held-out task) or add `eval.probes`",
            )
        )
    if msgs:
        raise ConfigError("\n".join(msgs))
    return cfg


def check_data(cfg: RunConfig, at: Locator) -> list[str]:
    """Located messages for what building the eval suite (`lifelong.eval.tasks.build_suite`) would fail on after
    the model loads, found by reading rows only: every eval task is built as the run builds it (rows, format,
    scorer, items), and a classification eval row whose label is not in the label set its stage shares (the
    training rows' labels, cut by `data.max_examples`) is named with its file and line, the label set and the
    fixes. Hub datasets are not read (that needs the network); a run reads them as it starts."""
    from lifelong.eval.tasks import build_task, stage_labels
    from lifelong.stages import STAGE_KINDS

    cap = cfg.eval.max_examples
    msgs: list[str] = []
    for i, s in enumerate(cfg.stages):
        kind = STAGE_KINDS.get(s.kind)()
        task = s.eval if s.eval is not None else kind.default_eval(s)
        if task is None or task.hub is not None:
            continue
        loc: tuple = ("stages", i, "eval")
        dotted = f"stages.{i}.eval"
        if task.lm_eval is not None:
            msgs += _check_harness(task, at, loc)
            continue
        try:
            labels = None if s.data is None or s.data.hub is not None else stage_labels(s, kind)
        except ValueError as e:
            msgs.append(at(("stages", i, "data"), str(e)))
            continue
        try:
            cut = _unknown_label(task, labels, cap, s, i, at) if labels is not None and not task.labels else None
            if cut is not None:
                msgs.append(cut)
                continue
            build_task(task, task.name or s.name, i, labels, cap, dotted)
        except ValueError as e:
            msgs += task_problem(e, at, loc)
    for k, p in enumerate(cfg.eval.probes):
        if p.lm_eval is not None:
            msgs += _check_harness(p, at, ("eval", "probes", k))
        elif p.hub is None:
            try:
                build_task(p, p.name or f"probe{k}", None, None, cap, f"eval.probes.{k}")
            except ValueError as e:
                msgs += task_problem(e, at, ("eval", "probes", k))
    return msgs


def _check_harness(task: EvalTaskConfig, at: Locator, loc: tuple) -> list[str]:
    """An lm_eval task, checked without loading its documents (a hub dataset needs the network; a run loads
    them as it starts): lm-eval installed, the task name known, the scorer's params valid."""
    from lifelong.eval.harness import check_probe

    try:
        check_probe(task, ".".join(map(str, loc)))
    except ValueError as e:
        return task_problem(e, at, loc)
    return []


def task_problem(err: ValueError, at: Locator, loc: tuple) -> list[str]:
    """A ValueError of `build_task` for the eval task at `loc` as located messages: scorer parameters that do
    not validate (with `scorer: auto`, those of the scorer the rows' format picks) at their field, any other
    problem (its message names the data file and line) at the task."""
    if isinstance(err, ValidationError):
        return format_validation_error(err, at.source, at.lines, loc + ("params",))
    return [at(loc, str(err).removeprefix(".".join(map(str, loc)) + ": "))]


def _unknown_label(
    task: EvalTaskConfig, labels: list[str], cap: Optional[int], stage: StageConfig, i: int, at: Locator
) -> Optional[str]:
    """The message for the first eval row of a classification task whose label is not in its stage's label
    set (the options every eval item is scored over), or None. Raises the rows' own located ValueErrors."""
    from lifelong.data import check_rows, infer_format, load_rows
    from lifelong.data.formats import shown

    if cap and (task.max_examples is None or task.max_examples > cap):
        task = task.model_copy(update={"max_examples": cap})
    rows = load_rows(task)
    if infer_format(rows, task.format) != "classification":
        return None
    check_rows(rows, "classification")
    missing = [(r, w) for r, w in zip(rows.rows, rows.where) if str(r["label"]) not in labels]
    if not missing:
        return None
    row, where = missing[0]
    unseen = sorted({str(r["label"]) for r, _ in missing})
    data: Any = stage.data
    limit = data.max_examples
    whence = f"its first {limit} training rows (data.max_examples: {limit})" if limit else "its training rows"
    more = f"; {len(missing)} of {len(rows)} eval rows have labels outside it ({', '.join(unseen)})"
    fixes = (
        f"raise stages.{i}.data.max_examples so the training rows hold every label, " if limit else ""
    ) + f"list every label in stages.{i}.data.labels, or drop such rows from the eval file"
    loc = ("stages", i, "data", "max_examples") if limit else ("stages", i, "eval")
    return at(
        loc,
        f"{where}: label {shown(row['label'])} of this eval row is not in the label set of stage "
        f"{stage.name!r}, the labels of {whence}: {labels}{more}; {fixes}",
    )
