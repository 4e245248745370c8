"""mergekit's parameter settings, resolved per tensor.

A parameter's value in a merge YAML (global `parameters:`, a slice's `parameters:`, a model's or a slice
source's `parameters:`) is a *setting*, as in mergekit:

- a scalar (`density: 0.5`);
- a gradient, a list of scalars interpolated over the layers of a slice: at position t in [0, 1] (layer
  idx of n in its slice: t = idx / (n - 1), 1 for a one-layer slice, 0 for tensors outside the layers)
  with s = t (len - 1), i = floor(s), the value is (1 - (s - i)) v[i] + (s - i) v[min(i + 1, len - 1)];
  a list of non-numbers (booleans, strings) picks v[int(t (len - 1))] instead;
- a list of conditions `{filter: <substring of the tensor name>, value: <scalar or gradient>}`: the first
  whose filter is in the tensor's name (no filter, or `*`, matches every tensor) gives the value; none
  matching leaves the parameter to the next scope.

Scopes, highest precedence first: the model's own parameters (the slice source's, for `slices:`), the
slice's, then the global ones. A method's per-model parameters (its `model_params` ClassVar: weight,
density, ...) are resolved per model against that model's tensor name (the source layer, for slices),
with the global value as every model's default; every other name is global, validated by the method's
`Params`, and resolved against the output tensor's name from the slice and global scopes only.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional, Union

from pydantic import BaseModel, TypeAdapter, ValidationError

SCALARS = (bool, int, float, str)
NO_VALUE = object()


class SettingError(ValueError):
    """A setting that cannot be used: `loc` is its dotted location in the config (for file:line)."""

    def __init__(self, loc: tuple, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message

    def __str__(self) -> str:
        where = ".".join(str(x) for x in self.loc)
        return f"{where}: {self.message}" if where else self.message


@dataclass(frozen=True)
class Condition:
    filter: Optional[str]
    value: Any
    """A scalar or a gradient (tuple of scalars)."""
    loc: tuple = field(default=(), compare=False)
    """Where the condition is in the config."""

    def matches(self, name: str) -> bool:
        return self.filter is None or self.filter == "*" or (bool(name) and self.filter in name)


@dataclass(frozen=True)
class Constant:
    """A global parameter that is not a scalar (e.g. greedy_soup's `eval` task): taken as is."""

    value: Any


Setting = Union[bool, int, float, str, tuple, list, Constant]
"""Parsed: a scalar, a gradient (tuple of scalars), a list of `Condition`s, or a `Constant`."""


def _scalar_or_gradient(raw: Any, loc: tuple) -> Any:
    if isinstance(raw, SCALARS):
        return raw
    if isinstance(raw, list) and all(isinstance(e, SCALARS) for e in raw):
        return tuple(raw)
    raise SettingError(loc, f"expected a value or a list of values (a gradient over the layers), got {raw!r}")


def _condition(raw: dict, loc: tuple) -> Condition:
    extra = sorted(set(raw) - {"filter", "value"})
    if extra:
        hint = " (mergekit ignores it, so the condition would match every tensor)" if extra[0] == "pattern" else ""
        raise SettingError(
            loc + (extra[0],), f"unknown key of a condition{hint}; a condition is {{filter: <substring>, value: ...}}"
        )
    if "value" not in raw:
        raise SettingError(loc, "a condition needs `value` (and optionally `filter`, a substring of tensor names)")
    f = raw.get("filter")
    if f is not None and not isinstance(f, str):
        raise SettingError(loc + ("filter",), f"a filter is a substring of tensor names, got {f!r}")
    return Condition(f, _scalar_or_gradient(raw["value"], loc + ("value",)), loc)


def parse_setting(raw: Any, loc: tuple) -> Setting:
    """A raw YAML value as a setting (see the module docstring); SettingError located at `loc`."""
    if isinstance(raw, SCALARS):
        return raw
    if isinstance(raw, dict):
        return [_condition(raw, loc)]
    if isinstance(raw, list):
        if all(isinstance(e, SCALARS) for e in raw):
            return tuple(raw)
        if all(isinstance(e, dict) for e in raw):
            return [_condition(e, loc + (i,)) for i, e in enumerate(raw)]
        raise SettingError(
            loc, "a list is either all values (a gradient over the layers) or all {filter, value} conditions"
        )
    raise SettingError(
        loc, f"expected a value, a gradient (list of values) or a list of {{filter, value}} conditions, got {raw!r}"
    )


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def evaluate(setting: Setting, name: str, t: float, validate: Callable[[Any], Any]) -> Any:
    """The setting's value for tensor `name` at layer position t, or NO_VALUE (no condition matched, or an
    empty list): exactly mergekit's `evaluate_setting`."""
    if isinstance(setting, list):
        for cond in setting:
            if cond.matches(name):
                return evaluate(cond.value, name, t, validate)
        return NO_VALUE
    if isinstance(setting, tuple):
        if not setting:
            return NO_VALUE
        values = [validate(v) for v in setting]
        if not all(_numeric(v) for v in values):
            return values[int(t * (len(values) - 1))]
        scaled = t * (len(values) - 1)
        i0 = int(scaled)
        i1 = min(len(values) - 1, i0 + 1)
        frac = scaled - i0
        return validate((1 - frac) * values[i0] + frac * values[i1])
    return validate(setting)


def leaves(setting: Setting, loc: tuple) -> list[tuple[Any, tuple]]:
    """Every scalar of a setting with its location (validated when the config is read)."""
    if isinstance(setting, list):
        return [leaf for c in setting for leaf in leaves(c.value, c.loc + ("value",))]
    if isinstance(setting, tuple):
        return [(v, loc + (i,)) for i, v in enumerate(setting)]
    return [(setting, loc)]


def _unwrap(tp: Any) -> list[Any]:
    """The members of an Optional/Union/Annotated annotation."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [m for a in typing.get_args(tp) for m in _unwrap(a)]
    return [tp]


def _is_scalar_type(tp: Any) -> bool:
    members = [m for m in _unwrap(tp) if m is not type(None)]
    return bool(members) and all(m in SCALARS or typing.get_origin(m) is Literal for m in members)


def _pydantic_message(err: ValidationError) -> str:
    e = err.errors()[0]
    return str(e["msg"]).removeprefix("Value error, ")


class MethodParams:
    """The parameter names of a merge method, split as mergekit does: per-model ("input") parameters from
    the method's `model_params` ClassVar, global ("shared") ones from its `Params` fields."""

    def __init__(self, method: str, method_cls: Any) -> None:
        self.method = method
        self.Params: type[BaseModel] = method_cls.Params
        self.model_defaults: dict[str, Any] = dict(method_cls.model_params)
        self.model_defaults.setdefault("weight", 1.0)
        self.global_fields: dict[str, str] = {}  # YAML key -> field name
        self.constant: set[str] = set()  # globals that are not scalars (e.g. greedy_soup's eval task)
        populate = bool(self.Params.model_config.get("populate_by_name"))
        for fname, fi in self.Params.model_fields.items():
            key = fi.alias or fname
            self.global_fields[key] = fname
            if populate and fi.alias:
                self.global_fields[fname] = fname
            if not _is_scalar_type(fi.annotation):
                self.constant.add(key)
                if populate and fi.alias:
                    self.constant.add(fname)
        self._empty = self.Params.model_construct()

    # ---- names ----------------------------------------------------------------------------------
    def describe(self) -> str:
        per = ", ".join(self.model_defaults) or "none"
        glob = ", ".join(k for k, f in self.global_fields.items() if k == (self.Params.model_fields[f].alias or f))
        return f"{self.method} takes per-model parameters: {per}; global parameters: {glob or 'none'}"

    def is_model(self, name: str) -> bool:
        return name in self.model_defaults

    def is_global(self, name: str) -> bool:
        return name in self.global_fields and name not in self.model_defaults

    # ---- validation of one value ----------------------------------------------------------------
    def validator(self, name: str) -> Callable[[Any], Any]:
        if self.is_model(name):
            default = self.model_defaults[name]

            def model_value(v: Any) -> Any:
                if isinstance(default, bool):
                    if not isinstance(v, bool):
                        raise ValueError(f"expected true or false, got {v!r}")
                    return v
                if isinstance(default, str):
                    if not isinstance(v, str):
                        raise ValueError(f"expected a string, got {v!r}")
                    return v
                if isinstance(v, bool):
                    raise ValueError(f"expected a number, got the boolean {str(v).lower()}")
                try:
                    x = TypeAdapter(float).validate_python(v)
                except ValidationError as err:
                    raise ValueError(f"expected a number, got {v!r}") from err
                if not math.isfinite(x):
                    raise ValueError(f"{v} is not a usable number (NaN and infinity are never valid)")
                if isinstance(default, int):
                    if x != int(x):
                        raise ValueError(f"expected a whole number, got {v!r}")
                    return int(x)
                return x

            return model_value
        fname = self.global_fields[name]

        def global_value(v: Any) -> Any:
            try:
                obj = self.Params.__pydantic_validator__.validate_assignment(self.Params.model_construct(), fname, v)
            except ValidationError as err:
                raise ValueError(_pydantic_message(err)) from None
            return getattr(obj, fname)

        return global_value

    def parse_scope(self, raw: Optional[dict], loc: tuple, allow_global: bool, where: str) -> dict[str, Setting]:
        """Parse and check one `parameters:` mapping; SettingError located at the offending key/value.
        `where` names the scope for messages (e.g. "a model's parameters")."""
        out: dict[str, Setting] = {}
        for name, value in (raw or {}).items():
            at = loc + (name,)
            if not self.is_model(name) and not self.is_global(name):
                raise SettingError(at, f"unknown parameter {name!r}: {self.describe()}")
            if self.is_global(name) and not allow_global:
                raise SettingError(
                    at,
                    f"{name!r} is a global parameter of {self.method} (one value for all models): put it under "
                    "the top-level `parameters:` or a slice's `parameters:`, not in " + where,
                )
            if name in self.constant:
                out[name] = Constant(value)
                continue
            setting = parse_setting(value, at)
            check = self.validator(name)
            for leaf, leaf_loc in leaves(setting, at):
                try:
                    check(leaf)
                except ValueError as err:
                    raise SettingError(leaf_loc, str(err)) from None
            out[name] = setting
        return out

    # ---- resolution -----------------------------------------------------------------------------
    def _resolve(self, name: str, scopes: list[dict[str, Setting]], tensor: str, t: float) -> tuple[Any, int]:
        """(value, index of the scope that gave it), or (NO_VALUE, -1)."""
        check = self.validator(name)
        for k, scope in enumerate(scopes):
            if name in scope:
                s = scope[name]
                if isinstance(s, Constant):
                    return s.value, k
                v = evaluate(s, tensor, t, check)
                if v is not NO_VALUE and v is not None:
                    return v, k
        return NO_VALUE, -1

    def resolve_globals(self, scopes: list[dict[str, Setting]], tensor: str, t: float) -> dict[str, Any]:
        """The global parameters given for this tensor (names not given keep the Params defaults)."""
        out = {}
        for key in self.global_fields:
            if self.is_model(key):
                continue
            v, _ = self._resolve(key, scopes, tensor, t)
            if v is not NO_VALUE:
                out[key] = v
        return out

    def resolve_model(
        self, scopes: list[dict[str, Setting]], tensor: str, t: float
    ) -> tuple[dict[str, Any], dict[str, int]]:
        """Every per-model parameter of one model for this tensor (its defaults where nothing is given), and
        the index of the scope each given value came from."""
        out, origin = {}, {}
        for key, default in self.model_defaults.items():
            v, k = self._resolve(key, scopes, tensor, t)
            out[key] = default if v is NO_VALUE else v
            if k >= 0:
                origin[key] = k
        return out, origin
