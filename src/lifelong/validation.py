"""Validating a run config completely, before anything loads: the schema and cross-references
(`lifelong.configio`), then every check that the registries' owners define: strategy names and parameters
(`lifelong.strategies.check_config`), scorers (`lifelong.eval.scorers.check_config`), and each stage kind's
own section (`StageKind.check`). `lifelong validate` runs exactly this."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from lifelong.config import RunConfig
from lifelong.configio import ConfigError, Locator, check_eval_tasks, parse, read_run_config

__all__ = ["ConfigError", "load_config", "validate_raw"]


def load_config(path: str | Path, overrides: Optional[list[str]] = None) -> RunConfig:
    """Read, override and strictly validate a run config. Raises ConfigError with every problem, located."""
    path = Path(path)
    raw, lines = read_run_config(path, overrides)
    return validate_raw(raw, str(path), lines, base_dir=path.parent)


def validate_raw(
    raw: dict, source: str = "<config>", lines: Optional[dict[tuple, int]] = None, base_dir: Optional[Path] = None
) -> RunConfig:
    """Validate a raw config mapping (from a file or built in code)."""
    from lifelong import strategies
    from lifelong.eval import scorers
    from lifelong.stages import STAGE_KINDS

    at = Locator(source, lines)
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
