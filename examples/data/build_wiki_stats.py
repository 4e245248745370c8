"""examples/data/edits/wiki_stats.jsonl: English Wikipedia paragraphs for the key statistics C = E[k k^T] of
ROME-family editors when the hub's Wikitext-103 (the papers' corpus) is out of reach. Standard library only,
fixed seed; rebuilds the file byte for byte (`--check` compares instead of writing).

Source: SQuADShifts' new-Wikipedia articles (Miller et al. 2020; CC BY 4.0), from the BIG-bench source archive
(`bigbench/benchmark_tasks/squad_shifts/new_wiki_v1.0.json`):

    TMPDIR=/tmp/bbtmp pip download --no-deps --no-clean bigbench==1.0.0 -d /tmp/bb   # errors, leaves the tree
    python examples/data/build_wiki_stats.py --bigbench /tmp/bbtmp

Every paragraph of the 48 articles, in article order shuffled with seed 0, until WORDS words: one row
{"text", "title"} per paragraph.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from build_translation_qa import read_bigbench  # noqa: E402

OUT = Path(__file__).parent / "edits" / "wiki_stats.jsonl"
WORDS = 80_000


def build(bigbench: str) -> str:
    data = read_bigbench(bigbench, ["squad_shifts/new_wiki_v1.0.json"])["squad_shifts/new_wiki_v1.0.json"]
    paras = [(a["title"], p["context"].strip()) for a in data["data"] for p in a["paragraphs"]]
    random.Random(0).shuffle(paras)
    rows, words = [], 0
    for title, text in paras:
        if words >= WORDS:
            break
        rows.append(json.dumps({"text": text, "title": title.replace("_", " ")}, ensure_ascii=False))
        words += len(text.split())
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bigbench", required=True, help="the bigbench 1.0.0 sdist or a directory holding it")
    ap.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing")
    a = ap.parse_args()
    text = build(a.bigbench)
    if a.check:
        sys.exit(0 if OUT.read_text(encoding="utf-8") == text else f"{OUT} differs from a rebuild")
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({text.count(chr(10))} paragraphs)")


if __name__ == "__main__":
    main()
