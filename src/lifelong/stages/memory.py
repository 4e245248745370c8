"""Memory stage: add documents or facts to the external memory (no weight changes). Rows have `text`, an
optional `key` (a row with a key already in memory supersedes it from this stage on) and an optional
`delete: true` (removes the key). Tool rows (`name`, `signature`, `doc`) become documents
`Tool name(signature): doc` keyed by the tool's name, so a tool-use eval task retrieves their docs; so do the
tool objects of the `tool_call` format (`name`, `description`, `parameters`: `Tool name: description
Parameters: {schema}`). Eval tasks with `retrieve: {k}` then see the memory as of each stage."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from lifelong.data import load_rows
from lifelong.data.formats import shown
from lifelong.data.scenarios.tool_call import check_tool, tool_document
from lifelong.faults import fault_point
from lifelong.fileio import atomic_write_text
from lifelong.progress import progress
from lifelong.stages import STAGE_KINDS
from lifelong.stages.base import StageKind, StageState
from lifelong.train.context import StageEnv


class MemoryState(StageState):
    """The run's retrieval memory: the FAISS store with every document's stage range, the embedder, and the
    memory stages already applied. Saved as `memory/` (index, documents, `applied.json`), replaced as a
    whole: written complete under `.memory.tmp`, then swapped in by two renames; a kill between them leaves
    `.memory.old`, which `restore` puts back. A store whose files disagree with each other never exists."""

    folders = ("memory", ".memory.old")

    def __init__(self, cfg: Any, run_dir: Path, is_main: bool) -> None:
        super().__init__(cfg, run_dir, is_main)
        self.store: Any = None  # lifelong.memory.store.MemoryStore, created by the first memory stage
        self.embedder: Any = None
        self.applied: list[int] = []

    def ensure(self) -> Any:
        """The store (and embedder), created empty on first use."""
        from lifelong.memory.embed import Embedder
        from lifelong.memory.store import MemoryStore

        if self.embedder is None:
            self.embedder = Embedder(self.cfg.memory.embedder, self.cfg.memory.batch_size)
        if self.store is None:
            self.store = MemoryStore(self.embedder.dim())
        return self.store

    def save(self) -> None:
        if self.store is None or not self.is_main:
            return
        folder, new, old = self.run_dir / "memory", self.run_dir / ".memory.tmp", self.run_dir / ".memory.old"
        shutil.rmtree(new, ignore_errors=True)
        self.store.save(new)
        atomic_write_text(new / "applied.json", json.dumps(self.applied))
        fault_point("memory-save")  # the new memory complete, not yet in place
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            fault_point("memory-swap")
        os.replace(new, folder)
        shutil.rmtree(old, ignore_errors=True)

    def restore(self) -> None:
        from lifelong.memory.store import MemoryStore

        folder, old = self.run_dir / "memory", self.run_dir / ".memory.old"
        if self.is_main:
            if old.exists() and not folder.exists():  # killed between the two renames of save
                os.replace(old, folder)
            shutil.rmtree(old, ignore_errors=True)
        store = MemoryStore.load(folder)
        if store is not None:
            self.store = store
            self.applied = (
                json.loads((folder / "applied.json").read_text()) if (folder / "applied.json").exists() else []
            )

    def eval_items(self, task: Any, row: int, items: list[dict]) -> list[dict]:
        """Retrieval-augmented tasks: each prompt gets the top-k passages of the memory as of the row's
        stage."""
        from lifelong.memory.store import augment

        if task.retrieve is None or not any("prompt" in it for it in items):
            return items
        self.ensure()  # also the embedder of a memory reloaded on resume
        queries = [it.get("prompt", "") for it in items]
        hits = self.store.search(self.embedder(queries), task.retrieve, row - 1)
        return [dict(it, prompt=augment(it["prompt"], h)) if "prompt" in it else it for it, h in zip(items, hits)]


@STAGE_KINDS.register("memory")
class Memory(StageKind):
    """Add, supersede or delete documents in the retrieval memory; the weights are untouched."""

    trainable = True  # needs `data`; it does not train
    State = MemoryState

    def prepare(self, run: StageEnv, index: int) -> Any:
        rows = load_rows(run.cfg.stages[index].data)  # type: ignore[arg-type]
        cols = set(rows.columns or ())
        if rows.columns is not None and "text" not in cols and "delete" not in cols and not {"name", "doc"} <= cols:
            raise ValueError(
                f"{rows.source} line 1: no column 'text' in the header ({', '.join(rows.columns)}); "
                "memory rows: text, key, delete (or tools: name, signature, doc)"
            )
        for r, where in zip(rows.rows, rows.where):
            check_row(r, where)
        return rows.rows

    def apply(self, run: StageEnv, index: int, prepared: Any, resume: Optional[dict] = None) -> dict:
        t0 = time.perf_counter()
        state: MemoryState = run.stage_state("memory")
        mem = state.ensure()
        if index in state.applied:  # resumed after this stage's memory was already written
            return {"wall_s": 0.0, "steps": 0, "tokens": 0, "trainable_params": 0}
        texts = [r["text"] for r in prepared if not r.get("delete")]
        quiet = run.quiet or not run.accelerator.is_main_process
        with progress(len(texts), f"memory {run.cfg.stages[index].name}: embed", quiet, run.console) as bar:
            vecs = state.embedder(texts, bar)
        it = iter(vecs)
        full = [next(it) if not r.get("delete") else None for r in prepared]
        counts = mem.add(prepared, full, index)
        fault_point("memory-added")  # a testing hook (lifelong.faults): documents added, memory not saved
        state.applied.append(index)
        state.save()
        run.log(type="memory", stage=index, **counts, total=len(mem.docs))
        return {
            "wall_s": time.perf_counter() - t0,
            "steps": 0,
            "tokens": 0,
            "trainable_params": 0,
            "memory_documents": sum(1 for d in mem.docs if d["removed"] is None),
            **counts,
        }


def _flag(v: Any, where: str) -> bool:
    """`delete` as a boolean; a CSV gives it as text (true / false / empty)."""
    if v is None or isinstance(v, bool) or v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false", ""):
        return v.strip().lower() == "true"
    raise ValueError(f"{where}: field 'delete' must be true or false, got {shown(v)}")


def check_row(r: dict, where: str) -> None:
    """Check one memory row in place: a tool becomes a document, `delete` a boolean; errors name the row."""
    if "name" in r and "doc" in r and "text" not in r:  # a tool: name, signature, documentation
        for f in ("name", "doc", "signature"):
            if f in r and (not isinstance(r[f], str) or not r[f].strip()):
                raise ValueError(f"{where}: field {f!r} of a tool must be a non-empty string, got {shown(r[f])}")
        r["text"] = f"Tool {r['name']}{r.get('signature', '()')}: {r['doc']}"
        r.setdefault("key", f"tool:{r['name']}")
    elif {"name", "description", "parameters"} <= set(r) and "text" not in r:  # a tool_call format's tool
        check_tool(r, where)
        r["text"] = tool_document(r)
        r.setdefault("key", f"tool:{r['name']}")
    if "delete" in r:
        r["delete"] = _flag(r["delete"], where)
    key = r.get("key")
    if key is not None and not (isinstance(key, (str, int)) and not isinstance(key, bool) and str(key).strip()):
        raise ValueError(f"{where}: field 'key' must be a non-empty string, got {shown(key)}")
    if r.get("delete"):
        if not key:
            raise ValueError(f"{where}: `delete: true` needs the `key` to delete")
        r.setdefault("text", "")
    elif r.get("text") is None:
        raise ValueError(f"{where}: field 'text' is missing (memory rows: text, key, delete)")
    elif not isinstance(r["text"], str) or not r["text"].strip():
        raise ValueError(f"{where}: field 'text' must be a non-empty string, got {shown(r['text'])}")
