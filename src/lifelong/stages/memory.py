"""Memory stage: add documents or facts to the external memory (no weight changes). Rows have `text`, an
optional `key` (a row with a key already in memory supersedes it from this stage on) and an optional
`delete: true` (removes the key). Tool rows (`name`, `signature`, `doc`) become documents
`Tool name(signature): doc` keyed by the tool's name, so a tool-use eval task retrieves their docs. Eval tasks with `retrieve: {k}` then see the memory as of each stage."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional

from lifelong.data import load_rows
from lifelong.faults import fault_point
from lifelong.stages import STAGE_KINDS
from lifelong.stages.base import StageKind

if TYPE_CHECKING:
    from lifelong.runner import Run


@STAGE_KINDS.register("memory")
class Memory(StageKind):
    """Add, supersede or delete documents in the retrieval memory; the weights are untouched."""

    trainable = True  # needs `data`; it does not train

    def prepare(self, run: "Run", index: int) -> Any:
        rows = load_rows(run.cfg.stages[index].data)  # type: ignore[arg-type]
        for r, where in zip(rows.rows, rows.where):
            if "name" in r and "doc" in r and "text" not in r:  # a tool: name, signature, documentation
                r["text"] = f"Tool {r['name']}{r.get('signature', '()')}: {r['doc']}"
                r.setdefault("key", f"tool:{r['name']}")
            if not isinstance(r.get("text"), str) or not r["text"].strip():
                if not r.get("delete"):
                    raise ValueError(f"{where}: field 'text' is missing or empty (memory rows: text, key, delete)")
                r.setdefault("text", "")
            if r.get("delete") and not r.get("key"):
                raise ValueError(f"{where}: `delete: true` needs the `key` to delete")
        return rows.rows

    def apply(self, run: "Run", index: int, prepared: Any, resume: Optional[dict] = None) -> dict:
        t0 = time.perf_counter()
        mem = run.ensure_memory()
        if index in run.memory_applied:  # resumed after this stage's memory was already written
            return {"wall_s": 0.0, "steps": 0, "tokens": 0, "trainable_params": 0}
        texts = [r["text"] for r in prepared if not r.get("delete")]
        vecs = run.embedder(texts)
        it = iter(vecs)
        full = [next(it) if not r.get("delete") else None for r in prepared]
        counts = mem.add(prepared, full, index)
        fault_point("memory-added")  # a testing hook (lifelong.faults): documents added, memory not saved
        run.memory_applied.append(index)
        run.save_memory()
        run.log(type="memory", stage=index, **counts, total=len(mem.docs))
        return {"wall_s": time.perf_counter() - t0, "steps": 0, "tokens": 0, "trainable_params": 0,
                "memory_documents": sum(1 for d in mem.docs if d["removed"] is None), **counts}
