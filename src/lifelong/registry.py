"""One generic registry for strategies, stage kinds, scorers, merge and edit methods.

A built-in method registers itself under its module's file name; the package imports its siblings, so
adding a method is adding one file. Unknown names fail with a "did you mean" suggestion.

Methods from outside the package arrive two ways, both without forking:
- **Entry points** of installed distributions, one group per registry (`ENTRY_POINT_GROUPS`, named like
  `lifelong ls <what>`): `lifelong.strategies`, `lifelong.stages`, `lifelong.scorers`, `lifelong.merges`,
  `lifelong.editors`. A value `pkg.mod:Cls` registers the object `Cls` under the entry point's name; a value
  `pkg.mod` (a module) is imported, and its `@REGISTRY.register(...)` decorators do the registering (the
  entry point's name is then only a label). Entry points load lazily, once per registry, at its first
  lookup (`get`, `in`, `names`, `items`), so importing the package stays cheap and a registry with no plugin
  installed works as before. Only installed code is imported: nothing is fetched.
- **User code at run time**: `STRATEGIES.register("name")(cls)` (or the decorator) before the run starts.

A plugin that fails to import is a `ValueError` naming the distribution, the entry point and the exception;
a name registered twice is refused with both origins named.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import pkgutil
import types
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

ENTRY_POINT_GROUPS: dict[str, str] = {
    "strategy": "lifelong.strategies",
    "stage kind": "lifelong.stages",
    "scorer": "lifelong.scorers",
    "merge method": "lifelong.merges",
    "editing method": "lifelong.editors",
    "format": "lifelong.formats",
    "benchmark": "lifelong.benchmarks",
}
"""Entry-point group of each registry, keyed by the registry's `kind` (used when a registry is created
without an explicit `group`). The group's last part is the word `lifelong ls` takes."""


class DuplicateNameError(ValueError):
    """A name is registered a second time with a different object; the message names both origins."""


def _origin_of(obj: Any) -> str:
    """Where an object was defined, as `module.QualName` (or its repr for objects without a module)."""
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return f"{module}.{name}" if module and name else repr(obj)


def _describe(ep: importlib.metadata.EntryPoint) -> str:
    """`entry point 'name = value' (group g) of distribution d 1.0`, for messages."""
    dist = getattr(ep, "dist", None)
    who = f"distribution {dist.name} {dist.version}" if dist is not None else "an unknown distribution"
    return f"entry point '{ep.name} = {ep.value}' (group {ep.group}) of {who}"


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "<unknown>"


class Registry(Generic[T]):
    """A name -> object map with helpful errors, filled by built-in modules, user code and entry points.

    `kind` names an entry in messages ("strategy"); `group` is the entry-point group whose plugins load at
    the first lookup (default: `ENTRY_POINT_GROUPS[kind]`; None when the kind has none)."""

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group: str | None = group if group is not None else ENTRY_POINT_GROUPS.get(kind)
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._plugins_loaded = False  # set once every entry point of `group` loaded without error
        self._loading: str | None = None  # the entry point being loaded (origin of what it registers)
        self._loaded_eps: set[tuple[str, str, str]] = set()  # (distribution, name, value) already loaded

    # ---- registering ------------------------------------------------------------------------------
    def register(self, name: str) -> Callable[[T], T]:
        """Decorator (or plain call: `REGISTRY.register("name")(obj)`) adding `obj` under `name`.

        Registering the same object again is a no-op; another object under a taken name raises
        `DuplicateNameError` naming both origins. Never loads plugins (built-ins register during import)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def deco(obj: T) -> T:
            origin = _origin_of(obj) + (f" from {self._loading}" if self._loading else "")
            if name in self._items and self._items[name] is not obj:
                raise DuplicateNameError(
                    f"{self.kind} {name!r} is registered twice: by {self._origins[name]} and by {origin}; "
                    f"rename one of them (`lifelong ls` lists the names in use)"
                )
            self._items[name] = obj
            self._origins.setdefault(name, origin)
            try:
                setattr(obj, "registered_name", name)  # noqa: B010  (T has no such attribute to a type checker)
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def unregister(self, name: str) -> T:
        """Remove `name` and return its object (tests, or a notebook replacing its own method)."""
        if name not in self._items:
            raise ValueError(self.unknown_message(name))
        self._origins.pop(name, None)
        return self._items.pop(name)

    # ---- lookups (each loads the plugins first, once) ----------------------------------------------
    def get(self, name: str) -> T:
        self._ensure_plugins()
        if name not in self._items:
            raise ValueError(self.unknown_message(name))
        return self._items[name]

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(known)})"

    def names(self) -> list[str]:
        self._ensure_plugins()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        for n in self.names():
            yield n, self._items[n]

    def origin(self, name: str) -> str:
        """Where `name` was registered from: `module.Class`, plus the entry point and distribution for
        plugins."""
        self.get(name)
        return self._origins[name]

    def __contains__(self, name: object) -> bool:
        self._ensure_plugins()
        return name in self._items

    # ---- plugins ------------------------------------------------------------------------------------
    def _ensure_plugins(self) -> None:
        if not self._plugins_loaded and self._loading is None:  # not re-entered from a plugin's import
            self.load_plugins()

    def load_plugins(self) -> None:
        """Load the entry points of `group` not loaded yet. Runs by itself at the first lookup; call it
        again only to pick up a distribution installed into the running process.

        Raises ValueError naming the distribution, the entry point and the error when a plugin fails to
        import (what it registered before failing is taken back, so the error repeats at the next lookup
        until the plugin is fixed or uninstalled), and `DuplicateNameError` when it takes a name in use."""
        if self.group is None:
            self._plugins_loaded = True
            return
        for ep in sorted(importlib.metadata.entry_points(group=self.group), key=lambda e: (e.name, e.value)):
            key = (_dist_name(ep), ep.name, ep.value)
            if key not in self._loaded_eps:
                self._load_entry_point(ep)
                self._loaded_eps.add(key)
        self._plugins_loaded = True

    def _load_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        before = dict(self._items)
        self._loading = _describe(ep)
        try:
            self._register_entry_point(ep)
        except Exception:
            self._rollback(before)
            raise
        finally:
            self._loading = None

    def _register_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        try:
            obj = ep.load()
        except DuplicateNameError:  # a plugin module's decorator took a name in use: already clear
            raise
        except Exception as e:  # a broken plugin: one clear message instead of a traceback into its code
            raise ValueError(
                f"{self.kind} plugin failed to load: {self._loading}: {type(e).__name__}: {e}; fix the plugin "
                f"or uninstall its distribution (`pip uninstall {_dist_name(ep)}`)"
            ) from e
        if isinstance(obj, types.ModuleType):  # `pkg.mod`: importing it ran its register decorators
            return
        # `pkg.mod:Obj`: registered under the entry point's name (a name set by a decorator on the object
        # itself must agree; one inherited from a registered base class does not count)
        taken = (getattr(obj, "__dict__", None) or {}).get("registered_name")
        if taken is not None and taken != ep.name:
            raise ValueError(
                f"{self._loading}: the object already registers itself as {self.kind} {taken!r}; "
                f"name the entry point {taken!r} too, or drop its register decorator"
            )
        self.register(ep.name)(obj)

    def _rollback(self, before: dict[str, T]) -> None:
        """Forget what a failed entry point registered (its module is re-imported at the next attempt)."""
        for name in [n for n in self._items if n not in before]:
            self._items.pop(name)
            self._origins.pop(name, None)


def import_siblings(package_name: str, package_path: list[str]) -> None:
    """Import every module of a package so their `register` decorators run."""
    for info in pkgutil.iter_modules(package_path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
