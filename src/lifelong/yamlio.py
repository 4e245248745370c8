"""Reading YAML (and any user text file) safely: bounded in size, depth and alias expansion, strict about
duplicate keys and encoding, with every problem located as `file:line`.

PyYAML's `safe_load` runs no code, but on hostile input it still recurses once per nesting level (a
`RecursionError` at a few hundred levels), expands nested aliases into exponentially many values
downstream (a 6 KB "billion laughs" grows past gigabytes once validated), and keeps the last of two
duplicate keys silently. We compose the node graph once with a depth limit, measure its expanded size
with aliases counted every time they are used (cycles rejected), reject duplicate keys with both lines,
and only then construct Python values from the same graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 4 * 1024 * 1024
"""Largest YAML file read (a config is kilobytes; inline data belongs in data files)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and sequences."""
MAX_NODES = 200_000
"""Most values a document may expand to, aliases counted at every use."""


class YamlError(ValueError):
    """A YAML problem, already formatted as `source:line: what; how to fix`."""


def decode_utf8(data: bytes, source: str) -> str:
    """`data` as text, or a located error naming the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start
        line = data.count(b"\n", 0, start) + 1
        col = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise YamlError(
            f"{source}:{line}: not UTF-8 (byte 0x{data[start]:02x} at column {col}); save the file as UTF-8"
        ) from None


def read_text(path: str | Path, what: str = "file", max_bytes: int = MAX_BYTES) -> str:
    """A small user text file (a config) as UTF-8 text, with located errors for every way it can fail."""
    p = Path(path)
    if p.is_dir():
        raise YamlError(f"{p}: is a directory, not a {what} file")
    if not p.is_file():
        raise YamlError(f"{p}: no such {what} file")
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise YamlError(
                f"{p}: {size / 2**20:.1f} MB is too large for a {what} file (limit "
                f"{max_bytes / 2**20:.0f} MB); keep data in data files and point to them with `path:`"
            )
        data = p.read_bytes()
    except OSError as e:
        raise YamlError(f"{p}: cannot read the {what} file ({e.strerror or e})") from None
    return decode_utf8(data, str(p))


class _Loader(yaml.SafeLoader):
    """SafeLoader that stops at MAX_DEPTH before Python's recursion limit does."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._source = source

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102 (PyYAML's hook)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlError(
                    f"{self._source}:{mark.line + 1}: nested deeper than {MAX_DEPTH} levels; "
                    "a config never needs this, check the indentation or brackets"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _check_graph(root: yaml.Node, source: str) -> None:
    """Reject cycles, expansions past MAX_NODES and duplicate mapping keys, iteratively (no recursion)."""
    size: dict[int, int] = {}  # expanded size of each finished node
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        nid = id(node)
        if done:
            on_path.discard(nid)
            kids = _children(node)
            total = 1 + sum(size[id(k)] for k in kids)
            if total > MAX_NODES:
                raise YamlError(
                    f"{source}:{_line(node)}: expands to more than {MAX_NODES:,} values (nested "
                    "aliases?); write the values out or simplify the anchors"
                )
            size[nid] = total
            continue
        if nid in size:
            continue
        if nid in on_path:
            raise YamlError(
                f"{source}:{_line(node)}: an alias refers to a node that contains it (a cycle); "
                "aliases must point to finished values"
            )
        on_path.add(nid)
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for k, _ in node.value:
                if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
                    continue
                if k.value in seen:
                    raise YamlError(
                        f"{source}:{_line(k)}: duplicate key {k.value!r} (first at line "
                        f"{seen[k.value]}); keep one of the two"
                    )
                seen[k.value] = _line(k)
        stack.append((node, True))
        for k in reversed(_children(node)):
            if id(k) in on_path:
                raise YamlError(
                    f"{source}:{_line(k)}: an alias refers to a node that contains it (a cycle); "
                    "aliases must point to finished values"
                )
            if id(k) not in size:
                stack.append((k, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def line_map(root: yaml.Node | None) -> dict[tuple, int]:
    """Map each dotted path of a composed (checked) document to its 1-based line."""
    out: dict[tuple, int] = {}
    if root is None:
        return out
    stack: list[tuple[yaml.Node, tuple]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        out.setdefault(path, _line(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = path + (k.value,) if isinstance(k, yaml.ScalarNode) else path
                out[key] = _line(k)
                stack.append((v, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                stack.append((v, path + (i,)))
    return out


def load(text: str, source: str = "<yaml>") -> tuple[Any, dict[tuple, int]]:
    """The value of a YAML document and the line of every dotted path in it; YamlErrors are located."""
    if len(text) > MAX_BYTES:
        raise YamlError(f"{source}: {len(text):,} characters is too large for a config (limit {MAX_BYTES:,})")
    loader = _Loader(text, source)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}
        _check_graph(root, source)
        value = loader.construct_document(root)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise YamlError(f"{source}{line}: not valid YAML: {problem}") from None
    except RecursionError:  # a deep structure inside one scalar's tag/flow that slipped past the limit
        raise YamlError(f"{source}: nested too deeply to read; simplify the structure") from None
    finally:
        loader.dispose()
    return value, line_map(root)


def load_file(path: str | Path, what: str = "config") -> tuple[Any, dict[tuple, int]]:
    """`load` over a file read by `read_text` (size, encoding and existence checked first)."""
    return load(read_text(path, what), str(path))
