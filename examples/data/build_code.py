"""Data for examples/code.yaml: next-line completion in the Python standard library's own source (PSF licence), two
styles one after the other: numeric code (`statistics`, `fractions`, `colorsys`, `_pydecimal`) then text-processing
code (`textwrap`, `shlex`, `difflib`, `configparser`, `argparse`). Standard library only, fixed seed; the files
depend on the Python version whose library is read (the shipped ones: CPython 3.11.7).

    python examples/data/build_code.py      # writes examples/data/stdlib_numeric/ and examples/data/stdlib_text/

A row is `{"prefix": <a function from its `def` line down to the line before the target>, "completion": <the
target line, indented as in the source>}`: each function gives up to MAX_PER_FUNCTION targets among its first
lines of code, its docstring and comment lines left out of the prefix (they would fill the context), blank lines
kept. Functions are taken from the modules in turn (so the largest does not crowd out the others), and train and
eval rows come from different functions.
"""

from __future__ import annotations

import ast
import json
import random
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).parent
STAGES = {
    "stdlib_numeric": ("statistics", "fractions", "colorsys", "_pydecimal"),
    "stdlib_text": ("textwrap", "shlex", "difflib", "configparser", "argparse"),
}
N_TRAIN, N_EVAL = 150, 40
MAX_PER_FUNCTION = 2
MAX_PREFIX_CHARS = 320
"""Long contexts would not fit train.max_length (128 SmolLM2 tokens) with their line."""


def docstring_lines(fn: ast.AST) -> set[int]:
    body = getattr(fn, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        if isinstance(body[0].value.value, str):
            return set(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    return set()


def is_target(line: str) -> bool:
    s = line.strip()
    return 8 <= len(s) <= 72 and not s.startswith(("#", '"', "'", "@")) and s not in ("else:", "try:", "finally:")


def function_rows(path: Path, module: str) -> list[list[dict]]:
    """Per function of `module`, its candidate rows (prefix, completion)."""
    src = path.read_text(encoding="utf-8")
    lines = src.split("\n")
    out = []
    for fn in ast.walk(ast.parse(src)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.end_lineno is None:
            continue
        first = min([fn.lineno] + [d.lineno for d in fn.decorator_list])
        skip = docstring_lines(fn)
        kept: list[str] = []
        rows = []
        for no in range(first, fn.end_lineno + 1):
            line = lines[no - 1]
            if no in skip or line.strip().startswith("#"):
                continue
            header_done = no > (fn.body[0].lineno - 1)
            if header_done and kept and is_target(line):
                prefix = "\n".join(kept) + "\n"
                if len(prefix) > MAX_PREFIX_CHARS:
                    break
                rows.append({"prefix": prefix, "completion": line.rstrip(), "module": module, "function": fn.name})
            kept.append(line.rstrip())
        if rows:
            out.append(rows)
    return out


def main() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    print(f"reading {stdlib} (Python {sys.version.split()[0]})")
    for name, modules in STAGES.items():
        rng = random.Random(name)
        per_module = [function_rows(stdlib / f"{m}.py", m) for m in modules]
        for fs in per_module:
            rng.shuffle(fs)
        functions = [fs[k] for k in range(max(map(len, per_module))) for fs in per_module if k < len(fs)]
        picked: list[list[dict]] = []
        for rows in functions:
            picked.append(rng.sample(rows, min(MAX_PER_FUNCTION, len(rows))))
        splits: dict[str, list[dict]] = {"eval": [], "train": []}
        for rows in picked:  # whole functions go to eval first, then to train
            split = "eval" if len(splits["eval"]) < N_EVAL else "train"
            splits[split] += rows[: (N_EVAL if split == "eval" else N_TRAIN) - len(splits[split])]
            if len(splits["train"]) >= N_TRAIN:
                break
        if len(splits["train"]) < N_TRAIN:
            sys.exit(f"{name}: only {len(splits['train'])} training rows")
        (HERE / name).mkdir(exist_ok=True)
        for split, rows in splits.items():
            with open(HERE / name / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        n_fn = {s: len({(r["module"], r["function"]) for r in rows}) for s, rows in splits.items()}
        print(
            f"{name}: {len(splits['train'])} train rows ({n_fn['train']} functions), {len(splits['eval'])} eval "
            f"rows ({n_fn['eval']} functions)"
        )


if __name__ == "__main__":
    main()
