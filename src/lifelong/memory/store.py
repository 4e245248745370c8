"""The memory: documents with a key, the stage that added them and the stage that superseded or deleted
them, and their embeddings in FAISS indexes (inner product over normalized embeddings: cosine similarity).

Layout of the memory folder (docs/memory.md):
- `meta.sqlite`: every document (id, key, text, added, removed), the index segments and each stage's
  progress. SQLite (the standard library's) because a memory grows to millions of documents: they stay on
  disk, a superseding key is found by an index lookup, and a chunk's documents, its segment and the stage's
  progress are committed in one transaction, which a kill -9 either completes or leaves out.
- `seg-NNNNNN.faiss`: immutable index segments. A stage is added in chunks (`memory.chunk` documents): each
  chunk is written as an exact flat segment and committed; at the end of the stage the stage's chunks become
  one segment of the configured type (`flat`, `hnsw`, or `ivfpq` once its quantizers are trained), and
  segments are merged size-tiered (the newest with the one before while that is no larger), so a memory of
  N documents has O(log N) segments. A segment file not in `meta.sqlite` is a leftover of a kill; opening
  the memory removes it.
- `ivfpq.trained.faiss`: the trained, empty IVF-PQ index every IVF-PQ segment is copied from.
- `vectors.f32` (IVF-PQ): every document's exact vector, row = document id, appended before each chunk's
  commit and cut back to the committed documents when the memory opens; searched candidates are re-scored
  from it (memory-mapped), since product-quantized scores blur near neighbours.

Superseded and deleted documents stay in the indexes and are filtered by stage, so the memory answers "as
of stage k" for every index type. Searching asks every segment for its best candidates, merges them by score
and keeps the valid ones, asking for more while fewer than k are valid.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from lifelong.faults import fault_point

META = "meta.sqlite"
TRAINED = "ivfpq.trained.faiss"
VECTORS = "vectors.f32"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (id INTEGER PRIMARY KEY, key TEXT NOT NULL, text TEXT NOT NULL,
                                 added INTEGER NOT NULL, removed INTEGER);
CREATE INDEX IF NOT EXISTS live_key ON docs(key) WHERE removed IS NULL;
CREATE TABLE IF NOT EXISTS segments (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, n INTEGER NOT NULL,
                                     stage INTEGER NOT NULL, final INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS progress (stage INTEGER PRIMARY KEY, rows_done INTEGER NOT NULL,
                                     done INTEGER NOT NULL, counts TEXT NOT NULL);
"""


@dataclass
class Segment:
    seq: int
    kind: str  # flat | hnsw | ivfpq
    n: int
    stage: int
    final: bool

    @property
    def file(self) -> str:
        return f"seg-{self.seq:06d}.faiss"


def _faiss() -> Any:
    import faiss

    return faiss


class MemoryStore:
    """The memory in `folder`. `index`: a `lifelong.config.MemoryIndexConfig` (default: exact). The main
    process opens it writable; other processes of a launch open it read-only and `refresh` after a stage."""

    def __init__(self, folder: Path, dim: int, index: Any = None, writable: bool = True) -> None:
        from lifelong.config import MemoryIndexConfig

        self.folder = Path(folder)
        self.cfg = index if index is not None else MemoryIndexConfig()
        self.writable = writable
        if writable:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.folder / META), isolation_level=None)
            self.db.executescript(_SCHEMA)
        else:
            self.db = sqlite3.connect(f"file:{self.folder / META}?mode=ro", uri=True, isolation_level=None)
        stored = dict(self.db.execute("SELECT k, v FROM info").fetchall())
        if not stored and writable:
            self._set_info(dim=str(dim), type=self.cfg.type, build=json.dumps(self._build_params()))
            stored = dict(self.db.execute("SELECT k, v FROM info").fetchall())
        self.dim = int(stored.get("dim", dim))
        if stored.get("type", self.cfg.type) != self.cfg.type or (
            stored.get("build") and json.loads(stored["build"]) != self._build_params()
        ):
            raise ValueError(
                f"memory.index: this run's memory ({self.folder}) was built as {stored.get('type')} with "
                f"{stored.get('build')}; the config asks for {self.cfg.type} with {json.dumps(self._build_params())}. "
                "An index is built once: keep its type and build parameters (ef_search, nprobe and mmap may change)"
            )
        if self.cfg.type == "ivfpq" and self.dim % self.cfg.pq_m:
            raise ValueError(
                f"memory.index.pq_m: {self.cfg.pq_m} does not divide the embedding dimension {self.dim}; "
                f"choose a divisor (e.g. {next(m for m in (48, 32, 24, 16, 12, 8, 6, 4, 2, 1) if self.dim % m == 0)})"
            )
        if self.dim != dim:
            raise ValueError(
                f"memory: the stored embeddings have dimension {self.dim}, the embedder gives {dim}; "
                "keep the run's memory.embedder"
            )
        self._loaded: dict[int, Any] = {}
        self._trained: Any = None
        self._exact: Any = None  # np.memmap of vectors.f32, opened on first use
        if writable:
            self._remove_orphans()

    def _build_params(self) -> dict:
        c = self.cfg
        if c.type == "hnsw":
            return {"hnsw_m": c.hnsw_m, "ef_construction": c.ef_construction}
        if c.type == "ivfpq":
            return {"nlist": c.nlist, "pq_m": c.pq_m, "nbits": c.nbits, "train_size": c.trained_at()}
        return {}

    def _set_info(self, **kv: str) -> None:
        self.db.executemany("INSERT OR REPLACE INTO info VALUES (?, ?)", list(kv.items()))

    # ---- reading ------------------------------------------------------------------------------
    def segments(self, final_only: bool = False) -> list[Segment]:
        q = "SELECT seq, kind, n, stage, final FROM segments" + (" WHERE final = 1" if final_only else "")
        return [Segment(s, k, n, st, bool(f)) for s, k, n, st, f in self.db.execute(q + " ORDER BY seq")]

    @property
    def ntotal(self) -> int:
        """Vectors in the indexes (superseded and deleted documents included)."""
        return sum(s.n for s in self.segments())

    def count(self, live_only: bool = False) -> int:
        q = "SELECT COUNT(*) FROM docs" + (" WHERE removed IS NULL" if live_only else "")
        return int(self.db.execute(q).fetchone()[0])

    @property
    def docs(self) -> list[dict]:
        """Every document, in id order (for inspection and tests; a large memory is better read by query)."""
        rows = self.db.execute("SELECT id, key, text, added, removed FROM docs ORDER BY id")
        return [dict(zip(("id", "key", "text", "added", "removed"), r)) for r in rows]

    def progress(self, stage: int) -> tuple[int, bool, dict]:
        """(rows done, finished, counts so far) of a memory stage."""
        row = self.db.execute("SELECT rows_done, done, counts FROM progress WHERE stage = ?", (stage,)).fetchone()
        return (
            (0, False, {"added": 0, "superseded": 0, "deleted": 0})
            if row is None
            else (
                int(row[0]),
                bool(row[1]),
                json.loads(row[2]),
            )
        )

    def applied(self) -> list[int]:
        return [int(r[0]) for r in self.db.execute("SELECT stage FROM progress WHERE done = 1 ORDER BY stage")]

    def refresh(self) -> None:
        """Forget loaded segments that are no longer in the memory (after another process changed it)."""
        keep = {s.seq for s in self.segments()}
        self._loaded = {k: v for k, v in self._loaded.items() if k in keep}

    def _load(self, seg: Segment, mmap: Optional[bool] = None) -> Any:
        if seg.seq in self._loaded:
            return self._loaded[seg.seq]
        faiss = _faiss()
        use_mmap = self.cfg.mmap if mmap is None else mmap
        flags = 0
        if use_mmap:
            flags = faiss.IO_FLAG_MMAP if seg.kind == "ivfpq" else faiss.IO_FLAG_MMAP_IFC
        index = faiss.read_index(str(self.folder / seg.file), flags)
        if mmap is None:
            self._loaded[seg.seq] = index
        return index

    def search(self, query: np.ndarray, k: int, as_of: int) -> list[list[dict]]:
        """Top-k documents valid as of stage `as_of` per query vector (rows of `query`), most similar first."""
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1, self.dim)
        segs = self.segments()
        total = sum(s.n for s in segs)
        if total == 0:
            return [[] for _ in range(len(query))]
        want = min(total, max(4 * k, k + 16))
        todo = list(range(len(query)))
        out: list[list[dict]] = [[] for _ in range(len(query))]
        while todo:
            cand = self._candidates(segs, query[todo], want)
            again = []
            for qi, (scores, ids) in zip(todo, cand):
                docs = self._fetch(ids)
                hits = [dict(docs[i], score=float(s)) for s, i in zip(scores, ids) if self._valid(docs[i], as_of)]
                out[qi] = hits[:k]
                if len(hits) < k and want < total:
                    again.append(qi)
            todo, want = again, min(total, want * 4)
        return out

    def _candidates(self, segs: list[Segment], q: np.ndarray, want: int) -> list[tuple[list, list]]:
        faiss = _faiss()
        threads = faiss.omp_get_max_threads()
        if len(q) < 20:  # a few queries: FAISS's OpenMP loop costs more than it saves (0.5 ms -> 8 ms a call on
            faiss.omp_set_num_threads(1)  # a busy machine, bench/memory.py); batches keep every thread
        try:
            return self._search_segments(segs, q, want)
        finally:
            faiss.omp_set_num_threads(threads)

    def _search_segments(self, segs: list[Segment], q: np.ndarray, want: int) -> list[tuple[list, list]]:
        parts_s, parts_i = [], []
        for seg in segs:
            index = self._load(seg)
            rerank = seg.kind == "ivfpq" and self.cfg.rerank > 0 and (self.folder / VECTORS).exists()
            kk = min(want * (self.cfg.rerank if rerank else 1), seg.n)
            self._search_params(index, seg.kind, kk)
            s, i = index.search(q, kk)
            if rerank:
                s = self._exact_scores(q, i)
            parts_s.append(s)
            parts_i.append(i)
        scores, ids = np.concatenate(parts_s, axis=1), np.concatenate(parts_i, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :want]
        res = []
        for r in range(len(q)):
            keep = [(float(scores[r, j]), int(ids[r, j])) for j in order[r] if ids[r, j] >= 0]
            res.append(([s for s, _ in keep], [i for _, i in keep]))
        return res

    def _exact_scores(self, q: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Inner products of each query with its candidates' exact vectors (-inf where no candidate)."""
        if self._exact is None:
            self._exact = np.memmap(self.folder / VECTORS, dtype=np.float32, mode="r").reshape(-1, self.dim)
        scores = np.full(ids.shape, -np.inf, dtype=np.float32)
        for r in range(len(q)):  # one query's candidates at a time: a bounded read
            ok = ids[r] >= 0
            scores[r, ok] = self._exact[ids[r, ok]] @ q[r]
        return scores

    def _search_params(self, index: Any, kind: str, k: int) -> None:
        faiss = _faiss()
        if kind == "hnsw":
            faiss.downcast_index(index.index).hnsw.efSearch = max(self.cfg.ef_search, k)
        elif kind == "ivfpq":
            index.nprobe = min(self.cfg.nprobe, self.cfg.nlist)

    def _fetch(self, ids: Iterable[int]) -> dict[int, dict]:
        ids = list(ids)
        out: dict[int, dict] = {}
        for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
            part = ids[start : start + 900]
            q = f"SELECT id, key, text, added, removed FROM docs WHERE id IN ({','.join('?' * len(part))})"
            for r in self.db.execute(q, part):
                out[int(r[0])] = dict(zip(("id", "key", "text", "added", "removed"), r))
        return out

    @staticmethod
    def _valid(doc: dict, as_of: int) -> bool:
        return doc["added"] <= as_of and (doc["removed"] is None or doc["removed"] > as_of)

    valid = _valid

    # ---- writing ------------------------------------------------------------------------------
    def add_chunk(self, rows: list[dict], vectors: list[Optional[np.ndarray]], stage: int, rows_done: int) -> dict:
        """Add one chunk of a stage's rows (a row with an existing key supersedes it; `delete: true` removes
        the key), as a flat segment committed with its documents and the stage's progress (`rows_done`: the
        rows of the stage done after this chunk). Returns the stage's counts so far."""
        _, _, counts = self.progress(stage)
        next_id = int(self.db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM docs").fetchone()[0])
        new_docs: list[list] = []  # [id, key, text, added, removed]
        vecs: list[np.ndarray] = []
        here: dict[str, int] = {}  # key -> index in new_docs of its live document added in this chunk
        removed: list[int] = []  # ids of stored documents this chunk supersedes or deletes
        for row, vec in zip(rows, vectors):
            key = str(row.get("key") or row["text"])
            hit = False
            if key in here:
                new_docs[here.pop(key)][4] = stage
                hit = True
            else:
                got = self.db.execute("SELECT id FROM docs WHERE key = ? AND removed IS NULL", (key,)).fetchone()
                if got is not None and int(got[0]) not in removed:
                    removed.append(int(got[0]))
                    hit = True
            if hit:
                counts["deleted" if row.get("delete") else "superseded"] += 1
            if row.get("delete"):
                continue
            here[key] = len(new_docs)
            new_docs.append([next_id, key, row["text"], stage, None])
            vecs.append(np.asarray(vec, dtype=np.float32))
            next_id += 1
            counts["added"] += 1
        seg = None
        if new_docs and self.cfg.type == "ivfpq":  # exact vectors for re-scoring, rows = ids
            with open(self.folder / VECTORS, "ab") as f:
                assert f.tell() == new_docs[0][0] * self.dim * 4, "vectors.f32 out of step with the documents"
                f.write(np.ascontiguousarray(np.stack(vecs), dtype=np.float32).tobytes())
                f.flush()
                os.fsync(f.fileno())
            self._exact = None
        if new_docs:
            seg = self._next_segment("flat", len(new_docs), stage, final=False)
            index = self._flat(np.asarray(vecs, dtype=np.float32), np.array([d[0] for d in new_docs], dtype=np.int64))
            self._write(index, seg)
            fault_point("memory-segment")  # the chunk's segment written, nothing committed
        with self._transaction():
            self.db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", new_docs)
            self.db.executemany("UPDATE docs SET removed = ? WHERE id = ?", [(stage, i) for i in removed])
            if seg is not None:
                self.db.execute("INSERT INTO segments VALUES (?, ?, ?, ?, ?)", (seg.seq, seg.kind, seg.n, stage, 0))
            self.db.execute(
                "INSERT OR REPLACE INTO progress VALUES (?, ?, 0, ?)", (stage, rows_done, json.dumps(counts))
            )
        return counts

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One SQLite transaction: committed whole, or rolled back on any error (a kill -9 rolls it back too,
        from the journal, when the memory is next opened)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def finish_stage(self, stage: int) -> None:
        """Turn the stage's chunk segments into one segment of the configured type, merge segments
        size-tiered, and mark the stage done: one transaction; replaced files are removed after it."""
        chunks = [s for s in self.segments() if s.stage == stage and not s.final]
        finals = self.segments(final_only=True)
        plan_new: list[tuple[Segment, Any]] = []
        drop = list(chunks)
        if chunks:
            vecs, ids = self._vectors(chunks)
            kind = self._kind_for(len(ids) + sum(s.n for s in finals if s.kind == "flat"))
            if kind == "ivfpq" and self._trained is None and not (self.folder / TRAINED).exists():
                self._train(np.concatenate([vecs] + [self._vectors([s])[0] for s in finals if s.kind == "flat"]))
            if kind == "ivfpq":  # once trained, every exact segment so far is re-encoded too
                olds = [s for s in finals if s.kind == "flat"]
                if olds:
                    ov, oi = self._vectors(olds)
                    vecs, ids = np.concatenate([ov, vecs]), np.concatenate([oi, ids])
                    drop += olds
                    finals = [s for s in finals if s.kind != "flat"]
            cur = (self._next_segment(kind, len(ids), stage, final=True), self._build(kind, vecs, ids))
            while finals and finals[-1].kind == kind and finals[-1].n <= cur[0].n:  # size-tiered merge
                prev = finals.pop()
                drop.append(prev)
                cur = (
                    self._next_segment(kind, prev.n + cur[0].n, stage, final=True, after=cur[0].seq),
                    self._merge(kind, prev, cur[1]),
                )
            self._write(cur[1], cur[0])
            plan_new.append(cur)
        fault_point("memory-finish")  # the stage's segment written, not committed
        _, _, counts = self.progress(stage)
        with self._transaction():
            self.db.executemany("DELETE FROM segments WHERE seq = ?", [(s.seq,) for s in drop])
            for seg, _ in plan_new:
                self.db.execute("INSERT INTO segments VALUES (?, ?, ?, ?, 1)", (seg.seq, seg.kind, seg.n, seg.stage))
            rows_done = self.progress(stage)[0]
            self.db.execute(
                "INSERT OR REPLACE INTO progress VALUES (?, ?, 1, ?)", (stage, rows_done, json.dumps(counts))
            )
        for s in drop:
            self._loaded.pop(s.seq, None)
            (self.folder / s.file).unlink(missing_ok=True)

    def _kind_for(self, n_flat_after: int) -> str:
        t = self.cfg.type
        if t == "ivfpq" and self._trained is None and not (self.folder / TRAINED).exists():
            return "ivfpq" if n_flat_after >= self.cfg.trained_at() else "flat"
        return t

    def _next_segment(self, kind: str, n: int, stage: int, final: bool, after: int = -1) -> Segment:
        top = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM segments").fetchone()[0]
        on_disk = [int(p.name[4:10]) for p in self.folder.glob("seg-*.faiss") if p.name[4:10].isdigit()]
        return Segment(max([int(top), after, *on_disk]) + 1, kind, n, stage, final)

    def _write(self, index: Any, seg: Segment) -> None:
        faiss = _faiss()
        tmp = self.folder / f".{seg.file}.tmp{os.getpid()}"
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / seg.file)

    def _remove_orphans(self) -> None:
        known = {s.file for s in self.segments()}
        for p in self.folder.glob("seg-*.faiss"):
            if p.name not in known:
                p.unlink()
        for p in self.folder.glob(".*.tmp*"):  # a segment or the trained index being written when killed
            p.unlink()
        vectors = self.folder / VECTORS
        if vectors.exists():  # rows appended for a chunk that was never committed
            keep = self.count() * self.dim * 4
            if vectors.stat().st_size > keep:
                with open(vectors, "r+b") as f:
                    f.truncate(keep)

    # ---- index construction -------------------------------------------------------------------
    def _flat(self, vecs: np.ndarray, ids: np.ndarray) -> Any:
        faiss = _faiss()
        index = faiss.IndexIDMap(faiss.IndexFlatIP(self.dim))
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), ids)
        return index

    def _build(self, kind: str, vecs: np.ndarray, ids: np.ndarray) -> Any:
        faiss = _faiss()
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if kind == "flat":
            return self._flat(vecs, ids)
        if kind == "hnsw":  # built on one thread: FAISS's parallel insertion gives a different graph each time,
            inner = faiss.IndexHNSWFlat(self.dim, self.cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)  # and a resumed
            inner.hnsw.efConstruction = self.cfg.ef_construction  # run must rebuild the same one
            index = faiss.IndexIDMap(inner)
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                index.add_with_ids(vecs, ids)
            finally:
                faiss.omp_set_num_threads(threads)
            return index
        index = faiss.clone_index(self._trained_index())
        index.add_with_ids(vecs, ids)
        return index

    def _trained_index(self) -> Any:
        if self._trained is None:
            self._trained = _faiss().read_index(str(self.folder / TRAINED))
        return self._trained

    def _train(self, vecs: np.ndarray) -> None:
        """Train the IVF-PQ quantizers on (a seeded sample of at most 256 per list of) the vectors so far."""
        faiss = _faiss()
        c = self.cfg
        cap = max(256 * c.nlist, 64 * (1 << c.nbits))
        if len(vecs) > cap:
            vecs = vecs[np.sort(np.random.default_rng(0).choice(len(vecs), cap, replace=False))]
        index = faiss.IndexIVFPQ(
            faiss.IndexFlatIP(self.dim), self.dim, c.nlist, c.pq_m, c.nbits, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.seed = 1234
        index.train(np.ascontiguousarray(vecs, dtype=np.float32))
        tmp = self.folder / f".{TRAINED}.tmp{os.getpid()}"
        faiss.write_index(index, str(tmp))
        os.replace(tmp, self.folder / TRAINED)
        self._trained = index

    def _vectors(self, segs: list[Segment]) -> tuple[np.ndarray, np.ndarray]:
        """The vectors and ids of flat or HNSW segments (stored exactly)."""
        faiss = _faiss()
        vs, ids = [], []
        for seg in segs:
            index = self._load(seg, mmap=True)
            n = index.ntotal
            vs.append(index.index.reconstruct_n(0, n))
            ids.append(faiss.vector_to_array(index.id_map).astype(np.int64))
        if not vs:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64)
        return np.concatenate(vs), np.concatenate(ids)

    def _merge(self, kind: str, older: Segment, newer: Any) -> Any:
        if kind == "ivfpq":
            merged = _faiss().read_index(str(self.folder / older.file))
            merged.merge_from(newer, 0)
            return merged
        ov, oi = self._vectors([older])
        faiss = _faiss()
        nv = newer.index.reconstruct_n(0, newer.ntotal)
        ni = faiss.vector_to_array(newer.id_map).astype(np.int64)
        return self._build(kind, np.concatenate([ov, nv]), np.concatenate([oi, ni]))

    def close(self) -> None:
        self._loaded.clear()
        self._exact = None
        self.db.close()

    @classmethod
    def open(cls, folder: Path, index: Any = None, writable: bool = True) -> Optional["MemoryStore"]:
        """The memory saved in `folder`, or None if there is none."""
        if not (Path(folder) / META).exists():
            return None
        db = sqlite3.connect(f"file:{Path(folder) / META}?mode=ro", uri=True)
        try:
            info = dict(db.execute("SELECT k, v FROM info").fetchall())
        except sqlite3.Error:
            info = {}
        finally:
            db.close()
        if "dim" not in info:
            return None
        if index is None:
            from lifelong.config import MemoryIndexConfig

            index = MemoryIndexConfig(type=info["type"], **json.loads(info.get("build") or "{}"))
        return cls(folder, int(info["dim"]), index, writable=writable)

    load = open


CONTEXT_TEMPLATE = "Context:\n{passages}\n\n{prompt}"
"""How retrieved passages enter a prompt: one `- passage` line each, then the original prompt."""


def augment(prompt: str, passages: list[dict]) -> str:
    if not passages:
        return prompt
    return CONTEXT_TEMPLATE.format(passages="\n".join(f"- {p['text']}" for p in passages), prompt=prompt)
