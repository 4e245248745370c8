"""Data for examples/translation.yaml and examples/qa.yaml, from files that PyPI packages ship. Standard library
only, fixed seeds; rebuilds the files byte for byte (`--check` compares instead of writing).

Translation (`translation/en-de`, `translation/en-fr`): English user-interface messages of Django and their
German and French translations, read from the gettext catalogues in the Django wheel
(`django/**/locale/{de,fr}/LC_MESSAGES/*.po`; BSD-3-Clause, translations by the Django translators under the
same licence). Both pairs share their English sources: the same 150 train and 40 eval sentences.

Question answering (`qa/squad_wiki`, `qa/squad_nyt`, `qa/arithmetic`): reading comprehension on SQuADShifts
(Miller et al. 2020; new Wikipedia articles, then New York Times articles; CC BY 4.0) and two-digit arithmetic
(BIG-bench `arithmetic`, Apache-2.0), both from the BIG-bench source archive.

    pip download --no-deps django==5.2.19 -d /tmp/dj
    TMPDIR=/tmp/bbtmp pip download --no-deps --no-clean bigbench==1.0.0 -d /tmp/bb   # errors, leaves the tree
    python examples/data/build_translation_qa.py --django /tmp/dj/django-5.2.19-py3-none-any.whl \\
        --bigbench /tmp/bbtmp        # a directory holding bigbench/benchmark_tasks, or the sdist .tar.gz

See examples/data/README.md for sources, licences and choices.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).parent
N_TRAIN, N_EVAL = 150, 40

# ---- translation: Django's gettext catalogues -------------------------------------------------------------------


def po_entries(text: str) -> Iterator[tuple[str, str]]:
    """(msgid, msgstr) of the translated, non-fuzzy, singular entries without context of a .po file."""
    entry: dict[str, str] = {}
    key, fuzzy = "", False
    for line in text.splitlines() + [""]:
        line = line.strip()
        if not line:
            if (
                entry.get("msgid")
                and entry.get("msgstr")
                and not fuzzy
                and not {"msgid_plural", "msgctxt"} & set(entry)
            ):
                yield entry["msgid"], entry["msgstr"]
            entry, key, fuzzy = {}, "", False
        elif line.startswith("#,") and "fuzzy" in line:
            fuzzy = True
        elif line.startswith("#"):
            continue
        elif m := re.match(r'^(msgid|msgstr|msgid_plural|msgctxt|msgstr\[\d+\])\s+(".*")$', line):
            key = m.group(1)
            entry[key] = ast.literal_eval(m.group(2))
        elif line.startswith('"') and key:
            entry[key] += ast.literal_eval(line)


def usable(src: str, tgt: str) -> bool:
    """A whole message of 2-25 words without placeholders, markup or line breaks, translated into something else."""
    if any(c in src + tgt for c in "%{}<>\n\t_") or src.strip() != src or tgt.strip() != tgt:
        return False
    return 2 <= len(src.split()) <= 25 and tgt != src


def catalogue(wheel: str, lang: str) -> dict[str, str]:
    """English message -> its translation into `lang`, the first one met in sorted path order."""
    out: dict[str, str] = {}
    pat = re.compile(rf"^django/(.+/)?locale/{lang}/LC_MESSAGES/[^/]+\.po$")
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(n for n in z.namelist() if pat.match(n)):
            for src, tgt in po_entries(z.read(name).decode("utf-8")):
                if usable(src, tgt):
                    out.setdefault(src, tgt)
    return out


def translation(wheel: str) -> dict[str, list[dict]]:
    cats = {lang: catalogue(wheel, lang) for lang in ("de", "fr")}
    common = sorted(set(cats["de"]) & set(cats["fr"]))
    random.Random(0).shuffle(common)
    if len(common) < N_TRAIN + N_EVAL:
        sys.exit(f"only {len(common)} messages are translated into both German and French")
    splits = {"eval": common[:N_EVAL], "train": common[N_EVAL : N_EVAL + N_TRAIN]}
    files = {}
    for lang in ("de", "fr"):
        for split, sources in splits.items():
            files[f"translation/en-{lang}/{split}.jsonl"] = [
                {"source": s, "target": cats[lang][s], "pair": f"en-{lang}"} for s in sources
            ]
    return files


# ---- question answering: BIG-bench's squad_shifts and arithmetic ----------------------------------------------


def read_bigbench(path: str, wanted: list[str]) -> dict[str, Any]:
    """The JSON files `wanted` (paths below bigbench/benchmark_tasks) from the sdist or a directory holding them."""
    found: dict[str, Any] = {}
    if os.path.isfile(path) and tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                for w in wanted:
                    if member.name.endswith("bigbench/benchmark_tasks/" + w):
                        found[w] = json.load(tar.extractfile(member))  # type: ignore[arg-type]
    else:
        for root, _dirs, _files in os.walk(path):
            if root.endswith("bigbench/benchmark_tasks"):
                for w in wanted:
                    if os.path.exists(os.path.join(root, w)):
                        found[w] = json.loads(Path(root, w).read_text(encoding="utf-8"))
                break
    missing = [w for w in wanted if w not in found]
    if missing:
        sys.exit(f"{path}: no bigbench/benchmark_tasks/{missing[0]} found")
    return found


SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’]?\s+(?=[\"“‘(]?[A-Z0-9])")


def sentence_around(context: str, start: int) -> tuple[int, int]:
    """[begin, end) of the sentence of `context` holding offset `start`."""
    begin, end = 0, len(context)
    for m in SENTENCE_END.finditer(context):
        if m.end() <= start:
            begin = m.end()
        elif m.start() >= start:
            end = m.start()
            break
    return begin, end


def squad_items(data: dict) -> list[tuple[str, dict]]:
    """(article title, row) for the first usable question of every paragraph: its context cut to the sentence
    holding the first answer (8-45 words), the answers inside that sentence with their offsets moved."""
    out = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            ctx = para["context"]
            for qa in para["qas"]:
                answers = qa["answers"]
                if not answers or len(qa["question"].split()) > 20:
                    continue
                b, e = sentence_around(ctx, answers[0]["answer_start"])
                sent = ctx[b:e].strip()
                lead = b + len(ctx[b:e]) - len(ctx[b:e].lstrip())
                kept = [
                    a
                    for a in answers
                    if lead <= a["answer_start"] and a["answer_start"] + len(a["text"]) <= lead + len(sent)
                ]
                if not (8 <= len(sent.split()) <= 45) or not kept or len(kept[0]["text"].split()) > 5:
                    continue
                row = {
                    "context": sent,
                    "question": qa["question"].strip(),
                    "answers": {
                        "text": [a["text"] for a in kept],
                        "answer_start": [a["answer_start"] - lead for a in kept],
                    },
                }
                if all(
                    sent[s : s + len(t)] == t for s, t in zip(row["answers"]["answer_start"], row["answers"]["text"])
                ):
                    out.append((article.get("title", ""), row))
                    break
    return out


def split_by_article(items: list[tuple[str, dict]], seed: int, per_article: int) -> dict[str, list[dict]]:
    """40 eval then 150 train questions, at most `per_article` from an article and no article in both, articles
    in a seeded random order."""
    titles = sorted({t for t, _ in items})
    random.Random(seed).shuffle(titles)
    by_title: dict[str, list[dict]] = {}
    for t, row in items:
        by_title.setdefault(t, []).append(row)
    ev: list[dict] = []
    tr: list[dict] = []
    for t in titles:
        (ev if len(ev) < N_EVAL else tr).extend(by_title[t][:per_article])
    if len(ev) < N_EVAL or len(tr) < N_TRAIN:
        sys.exit(f"too few questions: {len(ev)} eval, {len(tr)} train")
    return {"eval": ev[:N_EVAL], "train": tr[:N_TRAIN]}


def arithmetic(tasks: dict[str, Any]) -> dict[str, list[dict]]:
    """Two-digit addition and subtraction, half each: `{"question": "What is 80 plus 29?", "answer": "109"}`."""
    out: dict[str, list[dict]] = {"eval": [], "train": []}
    for k, op in enumerate(("addition", "subtraction")):
        ex = list(tasks[f"arithmetic/2_digit_{op}/task.json"]["examples"])
        random.Random(k).shuffle(ex)
        rows = [{"question": e["input"], "answer": e["target"]} for e in ex]
        out["eval"] += rows[: N_EVAL // 2]
        out["train"] += rows[N_EVAL // 2 : N_EVAL // 2 + N_TRAIN // 2]
    for split in out.values():
        random.Random(2).shuffle(split)
    return out


def qa(bigbench: str) -> dict[str, list[dict]]:
    wanted = [
        "squad_shifts/new_wiki_v1.0.json",
        "squad_shifts/nyt_v1.0.json",
        "arithmetic/2_digit_addition/task.json",
        "arithmetic/2_digit_subtraction/task.json",
    ]
    tasks = read_bigbench(bigbench, wanted)
    files = {}
    # new_wiki: 48 articles of ~30 usable questions each; nyt: 788 articles of 1-3
    for name, source, per in (("squad_wiki", "new_wiki_v1.0.json", 8), ("squad_nyt", "nyt_v1.0.json", 3)):
        for split, rows in split_by_article(squad_items(tasks["squad_shifts/" + source]), 0, per).items():
            files[f"qa/{name}/{split}.jsonl"] = rows
    for split, rows in arithmetic(tasks).items():
        files[f"qa/arithmetic/{split}.jsonl"] = rows
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--django", help="the Django wheel (django-5.2.19-py3-none-any.whl)")
    ap.add_argument("--bigbench", help="the bigbench 1.0.0 sdist or a directory holding bigbench/benchmark_tasks")
    ap.add_argument("--check", action="store_true", help="compare with the files in examples/data, write nothing")
    args = ap.parse_args()
    files: dict[str, list[dict]] = {}
    if args.django:
        files.update(translation(args.django))
    if args.bigbench:
        files.update(qa(args.bigbench))
    if not files:
        ap.error("give --django and/or --bigbench")
    bad = 0
    for rel, rows in sorted(files.items()):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        path = HERE / rel
        if args.check:
            same = path.exists() and path.read_text(encoding="utf-8") == text
            bad += not same
            print(f"{'same' if same else 'DIFFERENT'}: {rel} ({len(rows)} rows)")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {rel} ({len(rows)} rows)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
