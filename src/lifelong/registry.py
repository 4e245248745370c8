"""One generic registry for strategies, stage kinds, scorers, merge and edit methods.

A method registers itself under its module's file name; the package imports its siblings, so adding a
method is adding one file. Unknown names fail with a "did you mean" suggestion.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object map with helpful errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            try:
                setattr(obj, "registered_name", name)
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ValueError(self.unknown_message(name))
        return self._items[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._items, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})"

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        for n in self.names():
            yield n, self._items[n]

    def __contains__(self, name: object) -> bool:
        return name in self._items


def import_siblings(package_name: str, package_path: list[str]) -> None:
    """Import every module of a package so their `register` decorators run."""
    for info in pkgutil.iter_modules(package_path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
