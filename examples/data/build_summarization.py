"""Data for examples/summarization.yaml: news summarization (XSum, from the GEM task that the BIG-bench source
archive on PyPI ships: `bigbench/benchmark_tasks/gem/xsum/task.json` in bigbench 1.0.0) then sentence
simplification (`plain_simplify/pairs.tsv`, 190 sentences with two simpler rewrites each, written for lifelong,
CC0). Standard library only, fixed seeds; rebuilds the files byte for byte.

    TMPDIR=/tmp/bbtmp pip download --no-deps --no-clean bigbench==1.0.0 -d /tmp/bb
    python examples/data/build_summarization.py --bigbench /tmp/bb/bigbench-1.0.0.tar.gz   # or the unpacked tree
    python examples/data/build_summarization.py            # without --bigbench: the simplification split only

writes examples/data/xsum_lead/{train,eval}.jsonl (`{"document", "summary"}`) and examples/data/plain_simplify/
{train,eval}.jsonl (`{"source", "references"}`); see examples/data/README.md for sources, licences and choices.
(BIG-bench's GEM `asset` and `turk` tasks are no use here: their input is one crowd rewrite, not the original
sentence, and their targets the other rewrites.)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).parent
TASKS = {"xsum": "gem/xsum/task.json"}
N_TRAIN, N_EVAL = 150, 40
LEAD_WORDS = 45
"""A document is the article's lead: its first lines (XSum has one sentence per line) up to this many words."""
SUMMARY_WORDS = 28


def read_tasks(path: str) -> dict[str, dict]:
    """The GEM task.json files from the bigbench sdist (.tar.gz, streamed) or a directory holding them."""
    found: dict[str, dict] = {}
    if os.path.isfile(path) and tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                for short, rel in TASKS.items():
                    if member.isfile() and member.name.endswith("bigbench/benchmark_tasks/" + rel):
                        f = tar.extractfile(member)
                        assert f is not None
                        found[short] = json.load(io.TextIOWrapper(f, encoding="utf-8"))
    elif os.path.isdir(path):
        for root, _dirs, files in os.walk(path):
            for short, rel in TASKS.items():
                if "task.json" in files and os.path.join(root, "task.json").endswith("benchmark_tasks/" + rel):
                    found[short] = json.loads(Path(root, "task.json").read_text(encoding="utf-8"))
    missing = set(TASKS) - set(found)
    if missing:
        sys.exit(f"--bigbench: not found under {path}: {', '.join(TASKS[m] for m in sorted(missing))}")
    return found


def clean(s: str) -> str:
    return re.sub(r"\s+", " ", s.replace("\u2019", "'").replace("\u2018", "'")).strip()


def lead(article: str) -> str | None:
    """The article's first lines while they fit in LEAD_WORDS words (None: the first line alone is longer)."""
    words: list[str] = []
    for line in (x for x in article.split("\n") if x.strip()):
        w = clean(line).split()
        if len(words) + len(w) > LEAD_WORDS:
            break
        words += w
    return " ".join(words) if len(words) >= 20 else None


def xsum_rows(task: dict) -> list[dict]:
    rows, seen = [], set()
    for ex in task["examples"]:
        doc, summary = lead(ex["input"]), clean(ex["target"] if isinstance(ex["target"], str) else ex["target"][0])
        if doc is None or not 6 <= len(summary.split()) <= SUMMARY_WORDS or doc.lower() in seen:
            continue
        seen.add(doc.lower())
        rows.append({"document": doc, "summary": summary})
    return rows


def simplification_rows() -> list[dict]:
    """`plain_simplify/pairs.tsv`: source, then two references, tab-separated, one item a line."""
    rows = []
    for k, line in enumerate((HERE / "plain_simplify" / "pairs.tsv").read_text(encoding="utf-8").splitlines(), 1):
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) != 3 or not all(parts):
            sys.exit(f"plain_simplify/pairs.tsv line {k}: want a source and two references, tab-separated")
        rows.append({"source": parts[0], "references": parts[1:]})
    return rows


def write(name: str, rows: list[dict], rng: random.Random) -> None:
    if len(rows) < N_TRAIN + N_EVAL:
        sys.exit(f"{name}: only {len(rows)} rows pass the filters, {N_TRAIN + N_EVAL} needed")
    passing = len(rows)
    rows = rng.sample(rows, N_TRAIN + N_EVAL)
    out = HERE / name
    out.mkdir(exist_ok=True)
    for split, part in (("train", rows[:N_TRAIN]), ("eval", rows[N_TRAIN:])):
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for r in part:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{name}: {N_TRAIN} train, {N_EVAL} eval (of {passing} rows passing the filters)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bigbench", help="bigbench-1.0.0.tar.gz or a directory holding its tasks")
    args = ap.parse_args()
    if args.bigbench:
        write("xsum_lead", xsum_rows(read_tasks(args.bigbench)["xsum"]), random.Random(0))
    write("plain_simplify", simplification_rows(), random.Random(1))


if __name__ == "__main__":
    main()
