"""Benchmarks by name: one file each, registered by file name; `benchmark: {name: ..., <params>}` in a config
expands into ordinary stages (and the probes it adds to `eval.probes`) when the raw config is read (`expand_config`),
before validation.

Plugins: entry-point group `lifelong.benchmarks` (docs/architecture.md), or `BENCHMARKS.register(name)(cls)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lifelong.benchmarks.base import Benchmark, BenchmarkError, BenchmarkParams
from lifelong.configio import ConfigError, Locator
from lifelong.registry import Registry, import_siblings

BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark", group="lifelong.benchmarks")

import_siblings(__name__, __path__)


def expand_config(raw: dict, at: Locator, base_dir: Optional[Path] = None) -> dict:
    """`raw` with its `benchmark:` section replaced by the `stages` the benchmark expands to (`raw` itself when
    it has none). The stages' lines in `at` become the benchmark's line, so a problem found later in an expanded
    stage points at it. Raises ConfigError, located at `benchmark.<field>`, for an unknown name, params that do
    not validate or do not fit the data, and a config that gives `stages` too."""
    if "benchmark" not in raw:
        return raw
    spec: Any = raw["benchmark"]
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ConfigError(
            at(
                ("benchmark",),
                "give the benchmark as `benchmark: NAME` or `benchmark: {name: NAME, <params>}` "
                "(`lifelong ls benchmarks` lists them)",
            )
        )
    if "stages" in raw:
        raise ConfigError(
            at(
                ("stages",),
                "`stages` and `benchmark` are exclusive: the benchmark expands into the stages; drop one of them",
            )
        )
    name = spec["name"]
    if name not in BENCHMARKS:
        raise ConfigError(at(("benchmark", "name"), BENCHMARKS.unknown_message(name)))
    cls = BENCHMARKS.get(name)
    params, msgs = at.params(cls.Params, {k: v for k, v in spec.items() if k != "name"}, ("benchmark",))
    if msgs:
        raise ConfigError("\n".join(msgs))
    bench = cls()
    try:
        stages = bench.expand(params, base_dir if base_dir is not None else Path.cwd())
        probes = bench.probes(params, base_dir if base_dir is not None else Path.cwd())
    except BenchmarkError as e:
        raise ConfigError(at(("benchmark",) + ((e.field,) if e.field else ()), str(e))) from None
    line = next((at.lines[k] for k in (("benchmark",), ("benchmark", "name")) if k in at.lines), None)
    if line is not None:
        at.lines[("stages",)] = line
    out = {k: v for k, v in raw.items() if k != "benchmark"}
    out["stages"] = stages
    ev = raw.get("eval", {})
    own = (ev.get("probes") or []) if isinstance(ev, dict) else None
    if probes and isinstance(ev, dict) and isinstance(own, list):  # after the config's own, at the benchmark's line
        out["eval"] = {**ev, "probes": own + probes}
        for k in range(len(own), len(own) + len(probes)):
            if line is not None:
                at.lines[("eval", "probes", k)] = line
    return out


__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkError", "BenchmarkParams", "expand_config"]
