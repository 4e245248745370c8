"""Hostile configs: seeded mutants of every shipped example config go through `lifelong validate` in process.

Each mutant is either accepted or rejected with every message located (`file:line: field: ...`); none may
raise anything but a located error, none may hang. Mutants that set a number to NaN, infinity or an
absurd magnitude must be rejected (no setting takes such a value). A failure prints the seed and the
mutation, so `FUZZ_SEED=<seed> pytest tests/test_config_fuzz.py` reproduces it.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import signal
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from lifelong.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
N_MUTANTS = 1200
SEED = int(os.environ.get("FUZZ_SEED", "1234"))
NON_FINITE = [float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 2**63, -(2**63), 10**40]


def _absolute_paths(node: Any, base: Path) -> Any:
    """Data and model paths made absolute, so a mutant written elsewhere still finds the shipped files."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in ("path", "train_requests", "editor_path") and isinstance(v, str) and (base / v).exists():
                v = str((base / v).resolve())
            out[k] = _absolute_paths(v, base)
        return out
    if isinstance(node, list):
        return [_absolute_paths(v, base) for v in node]
    return node


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every dotted path into a config (keys and list indexes), inline data rows excluded."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            if k != "rows":
                out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _get(node: Any, path: tuple) -> Any:
    for p in path:
        node = node[p]
    return node


def _parent(node: Any, path: tuple) -> tuple[Any, Any]:
    return _get(node, path[:-1]), path[-1]


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 2:
        return word + "x"
    i = rng.randrange(len(word) - 1)
    ops = [word[:i] + word[i + 1 :], word[:i] + word[i + 1] + word[i] + word[i + 2 :], word[:i] + "q" + word[i:]]
    return rng.choice(ops)


def _nest(depth: int, rng: random.Random) -> Any:
    leaf: Any = 1
    for _ in range(depth):
        leaf = {"a": leaf} if rng.random() < 0.5 else [leaf]
    return leaf


# ---- mutation operators: (raw dict, text, rng) -> (kind, bytes of the mutant, numeric oracle?) -------------
def m_delete(raw: dict, text: str, rng: random.Random) -> tuple[str, Any, bool]:
    path = rng.choice(_paths(raw))
    parent, key = _parent(raw, path)
    del parent[key]
    return f"delete {path}", raw, False


def m_rename(raw: dict, text: str, rng: random.Random) -> tuple[str, Any, bool]:
    keyed = [p for p in _paths(raw) if isinstance(p[-1], str)]
    path = rng.choice(keyed)
    parent, key = _parent(raw, path)
    new = _typo(key, rng)
    if new in parent:
        return f"rename {path} (no-op)", raw, False
    parent[new] = parent.pop(key)
    return f"rename {path} -> {new}", raw, False


def m_wrong_type(raw: dict, text: str, rng: random.Random) -> tuple[str, Any, bool]:
    path = rng.choice(_paths(raw))
    parent, key = _parent(raw, path)
    value = rng.choice(["some text", [], {}, 5, 1.5, True, False, None, [1, 2], {"x": 1}, "", -1, 0])
    parent[key] = value
    return f"set {path} = {value!r}", raw, False


def m_extreme(raw: dict, text: str, rng: random.Random) -> tuple[str, Any, bool]:
    numeric = [p for p in _paths(raw) if isinstance(_get(raw, p), (int, float)) and not isinstance(_get(raw, p), bool)]
    path = rng.choice(numeric or _paths(raw))
    parent, key = _parent(raw, path)
    value = rng.choice(NON_FINITE)
    parent[key] = value
    return f"set {path} = {value!r}", raw, True


def m_small_number(raw: dict, text: str, rng: random.Random) -> tuple[str, Any, bool]:
    numeric = [p for p in _paths(raw) if isinstance(_get(raw, p), (int, float)) and not isinstance(_get(raw, p), bool)]
    path = rng.choice(numeric or _paths(raw))
    parent, key = _parent(raw, path)
    value = rng.choice([0, -1, 0.0, -0.5, 1e-320, 1, 2.5, True])
    parent[key] = value
    return f"set {path} = {value!r}", raw, False


def m_empty_list(raw: dict, text: str, rng: random.Random) -> tuple[str, Any, bool]:
    lists = [p for p in _paths(raw) if isinstance(_get(raw, p), list)]
    path = rng.choice(lists or _paths(raw))
    parent, key = _parent(raw, path)
    parent[key] = []
    return f"set {path} = []", raw, False


def m_null(raw: dict, text: str, rng: random.Random) -> tuple[str, Any, bool]:
    path = rng.choice(_paths(raw))
    parent, key = _parent(raw, path)
    parent[key] = None
    return f"set {path} = null", raw, False


def m_deep(raw: dict, text: str, rng: random.Random) -> tuple[str, Any, bool]:
    depth = rng.choice([70, 200, 500])
    path = rng.choice(_paths(raw))
    # written as flow text: PyYAML's own emitter would recurse as deep as the value
    flow = "{a: " * depth + "1" + "}" * depth if rng.random() < 0.5 else "[" * depth + "1" + "]" * depth
    parent, key = _parent(raw, path)
    parent[key] = "@@DEEP@@"
    out = yaml.safe_dump(raw, sort_keys=False).replace("'@@DEEP@@'", flow)
    return f"nest {path} {depth} deep", out, False


def m_aliases(raw: dict, text: str, rng: random.Random) -> tuple[str, Any, bool]:
    levels = rng.choice([3, 6, 9])
    lines = ["x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]")
    where = rng.choice(["top", "train"])
    if where == "top":
        out = text + "\n" + "\n".join(lines) + "\n"
    else:
        out = "\n".join(lines) + "\n" + text.replace("train:\n", f"train:\n  junk: *x{levels}\n", 1)
    return f"aliases {levels} levels at {where}", out, False


def m_bytes(raw: dict, text: str, rng: random.Random) -> tuple[str, Any, bool]:
    data = text.encode()
    i = rng.randrange(len(data))
    bad = rng.choice([b"\xff", b"\xfe\xfe", b"\xc3", b"\x80abc", b"\xed\xa0\x80"])
    return f"bytes {bad!r} at {i}", data[:i] + bad + data[i:], False


def m_duplicate(raw: dict, text: str, rng: random.Random) -> tuple[str, Any, bool]:
    lines = text.splitlines()
    keyed = [i for i, l in enumerate(lines) if re.match(r"^\s*[A-Za-z_]+:", l) and not l.lstrip().startswith("-")]
    i = rng.choice(keyed)
    lines.insert(i + 1, lines[i] if lines[i].rstrip().endswith(":") is False else lines[i] + " null")
    return f"duplicate line {i + 1}", "\n".join(lines) + "\n", False


def m_syntax(raw: dict, text: str, rng: random.Random) -> tuple[str, Any, bool]:
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    junk = rng.choice(
        [
            ": [",
            "\t- x",
            "'unclosed",
            "{a: 1",
            "key: value: other",
            "- - -",
            "]]",
            "*undefined",
            "&a &b x",
            "!!python/object:os.system ls",
            "? complex",
            "%TAG !",
            "@x",
            "`x",
        ]
    )
    lines.insert(i, (" " * rng.choice([0, 1, 2, 3])) + junk)
    return f"syntax {junk!r} at line {i + 1}", "\n".join(lines) + "\n", False


OPERATORS: list[Callable[..., tuple[str, Any, bool]]] = [
    m_delete,
    m_rename,
    m_wrong_type,
    m_extreme,
    m_small_number,
    m_empty_list,
    m_null,
    m_deep,
    m_aliases,
    m_bytes,
    m_duplicate,
    m_syntax,
]


class Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


LOCATED = "{path}:{line}: "


def run_fuzz(tmp: Path, n: int, seed: int) -> dict[str, Any]:
    """Validate `n` seeded mutants; return counts and the failures (each with its seed and mutation)."""
    sources = sorted(EXAMPLES.glob("*.yaml"))
    bases = []
    for src in sources:
        raw = _absolute_paths(yaml.safe_load(src.read_text()), src.parent)
        bases.append((src.name, raw))
    counts = {
        "mutants": 0,
        "rejected": 0,
        "accepted": 0,
        "tracebacks": 0,
        "hangs": 0,
        "unlocated": 0,
        "accepted_non_finite": 0,
    }
    failures: list[str] = []
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for k in range(n):
            rng = random.Random(f"{seed}:{k}")
            name, base = bases[k % len(bases)]
            raw = yaml.safe_load(yaml.safe_dump(base))  # a fresh copy
            text = yaml.safe_dump(raw, sort_keys=False)
            op = OPERATORS[rng.randrange(len(OPERATORS))]
            desc, mutant, must_reject = op(raw, text, rng)
            if isinstance(mutant, dict):
                mutant = yaml.safe_dump(mutant, sort_keys=False)
            data = mutant if isinstance(mutant, bytes) else mutant.encode()
            path = tmp / f"m{k}.yaml"
            path.write_bytes(data)
            tag = f"[seed {seed}:{k}, {name}, {desc}]"
            out, err = io.StringIO(), io.StringIO()
            counts["mutants"] += 1
            signal.setitimer(signal.ITIMER_REAL, 20.0)  # a hang detector, far above any real validation
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = main(["validate", str(path)])
            except Hang:
                counts["hangs"] += 1
                failures.append(f"hang {tag}")
                continue
            except BaseException as e:  # noqa: BLE001 (any escape is a traceback for the user)
                counts["tracebacks"] += 1
                failures.append(f"traceback {type(e).__name__}: {str(e)[:200]} {tag}")
                continue
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if code == 0:
                counts["accepted"] += 1
                if must_reject:
                    counts["accepted_non_finite"] += 1
                    failures.append(f"accepted a non-finite or absurd number {tag}")
                continue
            counts["rejected"] += 1
            msgs = [m for m in err.getvalue().splitlines() if m.strip()]
            prefix = re.compile(rf"^(error: )?{re.escape(str(path))}:\d+: \S")
            bad = [m for m in msgs if not prefix.match(m)]
            if not msgs or bad:
                counts["unlocated"] += 1
                failures.append(f"unlocated {bad[:2] or msgs[:1]} {tag}")
    finally:
        signal.signal(signal.SIGALRM, old)
    return {"counts": counts, "failures": failures}


def test_fuzzed_configs_are_accepted_or_rejected_with_a_location(tmp_path):
    got = run_fuzz(tmp_path, N_MUTANTS, SEED)
    c = got["counts"]
    print(f"\nconfig fuzz (seed {SEED}): {c}")
    assert not got["failures"], "\n".join(got["failures"][:20])
    assert c["mutants"] == N_MUTANTS >= 1000
    # both outcomes occur: the mutants exercise acceptance and rejection, not one of them only
    assert c["rejected"] > N_MUTANTS // 4 and c["accepted"] > N_MUTANTS // 20


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e30"])
def test_every_numeric_setting_rejects_non_finite_values(tmp_path, value):
    """Not sampled: each numeric leaf of the quickstart config in turn."""
    src = EXAMPLES / "quickstart.yaml"
    raw = _absolute_paths(yaml.safe_load(src.read_text()), src.parent)
    numeric = [p for p in _paths(raw) if isinstance(_get(raw, p), (int, float)) and not isinstance(_get(raw, p), bool)]
    assert len(numeric) >= 8
    for p in numeric:
        mutant = yaml.safe_load(yaml.safe_dump(raw))
        parent, key = _parent(mutant, p)
        parent[key] = float(value) if value != "1e30" else 10**30
        path = tmp_path / "m.yaml"
        path.write_text(yaml.safe_dump(mutant))
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(["validate", str(path)])
        assert code == 2, f"{'.'.join(map(str, p))} = {value} was accepted"
        assert re.search(rf"{re.escape(str(path))}:\d+: {re.escape('.'.join(map(str, p)))}", err.getvalue()), (
            err.getvalue()
        )
