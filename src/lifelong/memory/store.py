"""The memory: documents with a key, the stage that added them and the stage that superseded or deleted
them, in an exact inner-product FAISS index over normalized embeddings (cosine similarity). FAISS because it
is the most used embedded vector index, installs as a wheel (`faiss-cpu`), needs no server, and its flat index
is exact, so retrieval is reproducible. Adding N documents embeds and indexes only those N (`add_with_ids`);
superseded documents stay in the index and are filtered by stage, so the memory answers "as of stage k".
Persisted in the run directory (`memory/index.faiss`, `memory/docs.json`, `memory/embeddings.npz`),
written atomically, and reloaded on resume.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np


class MemoryStore:
    def __init__(self, dim: int) -> None:
        import faiss

        self.dim = dim
        self.index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
        self.docs: list[dict] = []  # {id, key, text, added, removed}

    # ---- updates ------------------------------------------------------------------------------
    def add(self, rows: list[dict], vectors: np.ndarray, stage: int) -> dict[str, int]:
        """Add documents (a row with an existing key supersedes it); rows with `delete: true` remove a key."""
        live = {d["key"]: d for d in self.docs if d["removed"] is None}
        added = superseded = deleted = 0
        new_ids, new_vecs = [], []
        for row, vec in zip(rows, vectors):
            key = str(row.get("key") or row["text"])
            if key in live:
                live[key]["removed"] = stage
                superseded += 0 if row.get("delete") else 1
                deleted += 1 if row.get("delete") else 0
            if row.get("delete"):
                continue
            doc = {"id": len(self.docs), "key": key, "text": row["text"], "added": stage, "removed": None}
            self.docs.append(doc)
            live[key] = doc
            new_ids.append(doc["id"])
            new_vecs.append(vec)
            added += 1
        if new_ids:
            self.index.add_with_ids(np.asarray(new_vecs, dtype=np.float32), np.asarray(new_ids, dtype=np.int64))
        return {"added": added, "superseded": superseded, "deleted": deleted}

    def valid(self, doc: dict, as_of: int) -> bool:
        return doc["added"] <= as_of and (doc["removed"] is None or doc["removed"] > as_of)

    def search(self, query: np.ndarray, k: int, as_of: int) -> list[list[dict]]:
        """Top-k valid documents per query vector (rows of `query`), most similar first."""
        if self.index.ntotal == 0:
            return [[] for _ in range(len(query))]
        want = min(self.index.ntotal, max(4 * k, k + 16))
        while True:
            scores, ids = self.index.search(np.asarray(query, dtype=np.float32), want)
            out = [
                [
                    dict(self.docs[i], score=float(s))
                    for s, i in zip(sr, ir)
                    if i >= 0 and self.valid(self.docs[i], as_of)
                ][:k]
                for sr, ir in zip(scores, ids)
            ]
            if all(len(o) == k for o in out) or want >= self.index.ntotal:
                return out
            want = min(self.index.ntotal, want * 4)

    # ---- persistence --------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        import faiss

        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".index.tmp{os.getpid()}"
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, folder / "index.faiss")
        t2 = folder / f".docs.tmp{os.getpid()}"
        t2.write_text(json.dumps({"dim": self.dim, "docs": self.docs}))
        os.replace(t2, folder / "docs.json")

    @classmethod
    def load(cls, folder: Path) -> Optional["MemoryStore"]:
        import faiss

        if not (folder / "docs.json").exists() or not (folder / "index.faiss").exists():
            return None
        meta = json.loads((folder / "docs.json").read_text())
        store = cls(meta["dim"])
        store.index = faiss.read_index(str(folder / "index.faiss"))  # type: ignore[assignment]
        store.docs = meta["docs"]
        return store


CONTEXT_TEMPLATE = "Context:\n{passages}\n\n{prompt}"
"""How retrieved passages enter a prompt: one `- passage` line each, then the original prompt."""


def augment(prompt: str, passages: list[dict]) -> str:
    if not passages:
        return prompt
    return CONTEXT_TEMPLATE.format(passages="\n".join(f"- {p['text']}" for p in passages), prompt=prompt)
