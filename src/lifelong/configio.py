"""Reading run configs: YAML with located errors, dotted overrides, the schema, and the checks that need no
registry (references between stages, eval task names, local paths). Method names and parameters are
checked by the packages that own the registries (`lifelong.validation` runs every check)."""

from __future__ import annotations

import copy
import difflib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ValidationError

from lifelong import yamlio
from lifelong.config import DataConfig, RunConfig


class ConfigError(ValueError):
    """A config problem, already formatted with file, line and field."""


def _fmt_loc(loc: tuple) -> str:
    return ".".join(str(x) for x in loc) or "<top level>"


class Locator:
    """Turns a dotted config location into `file:line: dotted.path: message` (the line of the deepest part
    of the location that the YAML file has)."""

    def __init__(self, source: str, lines: Optional[dict[tuple, int]] = None) -> None:
        self.source, self.lines = source, lines or {}

    def where(self, loc: tuple) -> str:
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return f"{self.source}:{self.lines[loc[:n]]}"
        return self.source

    def __call__(self, loc: tuple, message: str) -> str:
        return f"{self.where(loc)}: {_fmt_loc(loc)}: {message}"

    def params(self, model: type[BaseModel], params: dict, loc: tuple) -> tuple[Optional[BaseModel], list[str]]:
        """`model(**params)` or None, and the located messages of its validation errors."""
        try:
            return model(**params), []
        except ValidationError as err:
            return None, format_validation_error(err, self.source, self.lines, loc)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply dotted `key=value` overrides (values parsed as YAML) to a raw config dict."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=3e-4")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = raw
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {key!r}: {where} is not an index of a list of {len(node)}")
                idx: Any = int(part)
            elif isinstance(node, dict):
                idx = part
            else:
                raise ConfigError(f"override {key!r}: {'.'.join(parts[:depth])} is not a mapping or list")
            if last:
                try:
                    node[idx], _ = yamlio.load(value, f"override {key}")
                except yamlio.YamlError as e:
                    raise ConfigError(str(e)) from None
            else:
                if isinstance(node, dict) and idx not in node:
                    node[idx] = {}
                node = node[idx]
    return raw


def format_validation_error(
    err: ValidationError, source: str, lines: dict[tuple, int], prefix: tuple = ()
) -> list[str]:
    msgs = []
    for e in err.errors():
        loc = prefix + tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        line = None
        for n in range(len(loc), -1, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        where = f"{source}:{line}" if line else source
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check spelling; `lifelong ls config` lists the fields)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        msgs.append(f"{where}: {_fmt_loc(loc)}: {msg}")
    return msgs


def check_stream(cfg: RunConfig, at: Locator) -> list[str]:
    """References between stages (start_from, merge inputs, adapt_ratios tasks), unique stage and eval task
    names, and at least one eval task: located messages."""
    msgs: list[str] = []
    names = [s.name for s in cfg.stages]
    col_locs: list[tuple[tuple, str]] = [
        (("stages", i, "eval"), t.name or s.name) for i, s in enumerate(cfg.stages) for t in [s.eval] if t
    ]
    col_locs += [(("eval", "probes", i), t.name or f"probe{i}") for i, t in enumerate(cfg.eval.probes)]
    cols = [c for _, c in col_locs]
    for i, s in enumerate(cfg.stages):
        earlier = ["base"] + names[:i]
        if s.adapt_ratios is not None:
            if len(s.adapt_ratios.tasks) != len(s.mix):
                msgs.append(at(("stages", i, "adapt_ratios", "tasks"), f"one eval task per mix source ({len(s.mix)})"))
            unknown = [t for t in s.adapt_ratios.tasks if t not in cols]
            if unknown:
                msgs.append(
                    at(
                        ("stages", i, "adapt_ratios", "tasks"),
                        f"unknown eval task {unknown[0]!r} (known: {', '.join(cols)})",
                    )
                )
        if s.start_from not in ["previous"] + earlier:
            msgs.append(
                at(
                    ("stages", i, "start_from"),
                    f"{s.start_from!r} is not `previous`, `base` or an earlier "
                    f"stage ({', '.join(names[:i]) or 'none'})",
                )
            )
        if s.merge is not None:
            for m in s.merge.models + [s.merge.base]:
                if m not in earlier:
                    msgs.append(at(("stages", i, "merge"), f"{m!r} is not `base` or an earlier stage"))
            if s.merge.weights is not None and len(s.merge.weights) != len(s.merge.models):
                msgs.append(at(("stages", i, "merge", "weights"), "one weight per model"))
        if names.index(s.name) != i:
            msgs.append(at(("stages", i, "name"), f"duplicate stage name {s.name!r}"))
    if isinstance(cfg.export.stages, list):
        for k, name in enumerate(cfg.export.stages):
            if name not in names:
                near = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                msgs.append(
                    at(
                        ("export", "stages", k),
                        f"unknown stage {name!r}; {hint}export.stages is `last`, `all`, `none` or a list of "
                        f"stage names ({', '.join(names)})",
                    )
                )
    for loc, col in col_locs:
        first = next(loc0 for loc0, c in col_locs if c == col)
        if first != loc:
            msgs.append(
                at(
                    loc,
                    f"eval task name {col!r} is already used by {_fmt_loc(first)}; eval task names "
                    "must be unique (set `name:`)",
                )
            )
    return msgs


def check_eval_tasks(cfg: RunConfig, at: Locator, defaults: list[str]) -> list[str]:
    """`train.eval_tasks` (run level and per stage) names only eval tasks of the suite: the stages' `eval`,
    the probes, and `defaults` (tasks that stage kinds give stages without `eval`, e.g. an edit stage's own
    edits; known where the kinds are registered)."""
    known = [t.name or s.name for s in cfg.stages for t in [s.eval] if t]
    known += [t.name or f"probe{i}" for i, t in enumerate(cfg.eval.probes)] + defaults
    where: list[tuple[tuple, Optional[list[str]]]] = [(("train", "eval_tasks"), cfg.train.eval_tasks)]
    for i, s in enumerate(cfg.stages):
        where.append((("stages", i, "train", "eval_tasks"), s.train.eval_tasks))  # type: ignore[attr-defined]
    msgs: list[str] = []
    for loc, names in where:
        for k, name in enumerate(names or []):
            if name not in known:
                near = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                msgs.append(
                    at(
                        loc + (k,),
                        f"unknown eval task {name!r}; {hint}eval_tasks lists names of the suite's tasks "
                        f"({', '.join(known) or 'none'})",
                    )
                )
    return msgs


def read_yaml(path: str | Path, what: str = "config") -> tuple[dict, dict[tuple, int]]:
    """The mapping in a YAML file and the line of every dotted path in it; located ConfigErrors (size,
    encoding, depth, alias expansion and duplicate keys are checked, see `lifelong.yamlio`)."""
    try:
        raw, lines = yamlio.load_file(path, what)
    except yamlio.YamlError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    return raw, lines


def read_run_config(path: str | Path, overrides: Optional[list[str]] = None) -> tuple[dict, dict[tuple, int]]:
    """The raw mapping of a run config file with `key=value` overrides applied, and its line map."""
    raw, lines = read_yaml(path)
    if isinstance(raw.get("strategy"), (str, dict)) and any(o.startswith("strategy.") for o in overrides or []):
        s = raw["strategy"]
        raw["strategy"] = [{"name": s} if isinstance(s, str) else s]  # so `strategy.0.x=` overrides work
    return apply_overrides(raw, overrides or []), lines


def parse(raw: dict, at: Locator, base_dir: Optional[Path] = None) -> tuple[RunConfig, list[str]]:
    """The schema (a ConfigError if it fails), then the registry-free checks: the config, with paths resolved
    against `base_dir`, and the located messages of the checks (references, names, paths that do not exist)."""
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("\n".join(format_validation_error(err, at.source, at.lines))) from None
    if base_dir is not None:
        _resolve_paths(cfg, base_dir)
    return cfg, check_stream(cfg, at) + check_paths(cfg, at)


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
"""`org/name`: what a model or dataset path must look like to be taken as a hub id when no such local path
exists."""


def check_paths(cfg: RunConfig, at: Locator) -> list[str]:
    """Located messages for local paths that do not exist (checked without loading anything; a path that
    is not local must look like a hub id)."""
    msgs: list[str] = []
    where = at.where

    m = cfg.model
    if m.path and not Path(m.path).expanduser().exists() and not HUB_ID.match(m.path):
        msgs.append(
            f"{where(('model', 'path'))}: model.path: {m.path!r} is no local folder or file and no hub id "
            "(`org/name`); check the path (relative paths are read from the config file's folder)"
        )
    data: list[tuple[tuple, Optional[DataConfig]]] = []
    for i, s in enumerate(cfg.stages):
        data += [(("stages", i, "data"), s.data), (("stages", i, "eval"), s.eval)]
        data += [(("stages", i, "mix", j), d) for j, d in enumerate(s.mix)]
    data += [(("eval", "probes", i), t) for i, t in enumerate(cfg.eval.probes)]
    for loc, d in data:
        if d is not None and d.path and not Path(d.path).exists():
            msgs.append(
                f"{where(loc + ('path',))}: {_fmt_loc(loc + ('path',))}: no such file or folder "
                f"{d.path!r} (relative paths are read from the config file's folder)"
            )
        inc = getattr(d, "include_path", None)  # an lm_eval task's folder of task YAMLs
        if inc and not Path(inc).is_dir():
            msgs.append(
                at(
                    loc + ("include_path",),
                    f"no such folder {inc!r} (relative paths are read from the config file's folder)",
                )
            )
        if getattr(d, "lm_eval", None) and importlib.util.find_spec("lm_eval") is None:
            msgs.append(
                at(
                    loc + ("lm_eval",),
                    "lm-eval is not installed, and this task runs through it; "
                    "pip install lm-eval (an optional dependency of lifelong)",
                )
            )
    return msgs


def _resolve_paths(cfg: RunConfig, base: Path) -> None:
    """Make data paths relative to the config file absolute (when the file exists there)."""

    def fix(d: Optional[DataConfig]) -> None:
        if d is not None and d.path and not Path(d.path).is_absolute():
            cand = base / d.path
            if cand.exists() or not Path(d.path).exists():
                d.path = str(cand.resolve())

    for s in cfg.stages:
        stats = s.edit.params.get("stats")
        corpus = stats.get("corpus") if isinstance(stats, dict) else None
        for holder, key in ((corpus, "path"), (s.edit.params, "train_requests"), (s.edit.params, "editor_path")):
            value = holder.get(key) if isinstance(holder, dict) else None
            if isinstance(value, str) and not Path(value).is_absolute() and (base / value).exists():
                holder[key] = str((base / value).resolve())  # type: ignore[index]
        if s.data is not None:
            fix(s.data)
        for m in s.mix:
            fix(m)
        fix(s.eval)
    for t in cfg.eval.probes:
        fix(t)
    for task in [s.eval for s in cfg.stages] + list(cfg.eval.probes):  # lm_eval task folders
        if task is not None and task.include_path and not Path(task.include_path).is_absolute():
            if (base / task.include_path).exists() or not Path(task.include_path).exists():
                task.include_path = str((base / task.include_path).resolve())
    model = cfg.model
    if model.path and not Path(model.path).is_absolute() and (base / model.path).exists():
        model.path = str((base / model.path).resolve())


def first_difference(a: Any, b: Any, path: str = "") -> Optional[str]:
    """The first dotted path where two resolved configs differ, with both values (None: equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}.{i}")
            if d:
                return d
        return None
    return None if a == b else f"{path or '<root>'}: {json.dumps(a)[:80]} != {json.dumps(b)[:80]}"
