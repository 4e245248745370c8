"""Strategies: how updates are made without forgetting. One file per strategy, registered by file name.

The loop owns backward, optimizer and scheduler steps; a strategy only answers hooks with explicit
context and return values (see `base.Strategy`). `Compose` runs several in order.
"""

from typing import Any

from lifelong.registry import Registry, import_siblings
from lifelong.strategies.base import Compose, StageContext, Strategy

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")

import_siblings(__name__, __path__)


def check_config(cfg: Any, at: Any) -> list[str]:
    """Located messages for unknown strategy names and parameters that do not validate (`cfg` a RunConfig,
    `at` a `lifelong.configio.Locator`)."""
    msgs: list[str] = []
    for i, spec in enumerate(cfg.strategy):
        loc = ("strategy", i) if ("strategy", 0) in at.lines else ("strategy",)
        if spec.name not in STRATEGIES:
            msgs.append(at(loc + ("name",), STRATEGIES.unknown_message(spec.name)))
            continue
        msgs += at.params(STRATEGIES.get(spec.name).Params, spec.model_extra or {}, loc)[1]
    return msgs + check_export(cfg, at) if not msgs else msgs


def check_export(cfg: Any, at: Any) -> list[str]:
    """`export.format` against the strategies' capability flags (`exports_hf`, `exports_peft`). A default
    export the strategy cannot write is skipped at run time; one the config asks for is refused here."""
    ex = cfg.export
    if ex.stages == "none":
        return []
    classes = [STRATEGIES.get(s.name) for s in cfg.strategy]
    names = " + ".join(s.name for s in cfg.strategy)
    lacking = [c for c in classes if not c.exports_hf]
    why = next((c.export_note for c in lacking if c.export_note), "")
    if ex.format == "peft" and (lacking or not any(c.exports_peft for c in classes)):
        reason = why or "it trains the model's own weights, so a stage's model is full weights, not an adapter"
        return [at(("export", "format"), f"strategy {names} cannot export `peft`: {reason}; use format: hf")]
    if ex.format == "hf" and lacking and "export" in cfg.model_fields_set:
        return [
            at(
                ("export",),
                f"strategy {names} cannot export its stage models: {why or 'they are no plain model'}; "
                "set export.stages: none",
            )
        ]
    return []


def build_strategy(specs: list, seed: int = 0) -> Strategy:
    """Instantiate strategies from config specs (`name` plus typed params); several are composed."""
    built = [STRATEGIES.get(s.name)(STRATEGIES.get(s.name).Params(**(s.model_extra or {})), seed=seed) for s in specs]
    return built[0] if len(built) == 1 else Compose(built)


__all__ = ["STRATEGIES", "Strategy", "StageContext", "Compose", "build_strategy", "check_config", "check_export"]
