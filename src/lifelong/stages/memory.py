"""Memory stage: add documents or facts to the external memory (no weight changes). Rows have `text`, an
optional `key` (a row with a key already in memory supersedes it from this stage on) and an optional
`delete: true` (removes the key). Tool rows (`name`, `signature`, `doc`) become documents
`Tool name(signature): doc` keyed by the tool's name, so a tool-use eval task retrieves their docs; so do the
tool objects of the `tool_call` format (`name`, `description`, `parameters`: `Tool name: description
Parameters: {schema}`). Eval tasks with `retrieve: {k}` then see the memory as of each stage."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Optional

from lifelong.data import load_rows
from lifelong.data.formats import shown
from lifelong.data.scenarios.tool_call import check_tool, tool_document
from lifelong.faults import fault_point
from lifelong.progress import progress
from lifelong.stages import STAGE_KINDS
from lifelong.stages.base import StageKind, StageState
from lifelong.train.context import StageEnv


class MemoryState(StageState):
    """The run's retrieval memory (`lifelong.memory.store.MemoryStore` in `memory/`), its embedder, and the
    memory stages already applied. The main process writes it, one committed chunk at a time (a kill -9
    loses at most the chunk being written, and `--resume` continues after the last committed one); the other
    processes of a launch read it."""

    folders = ("memory",)

    def __init__(self, cfg: Any, run_dir: Path, is_main: bool) -> None:
        super().__init__(cfg, run_dir, is_main)
        self.store: Any = None  # lifelong.memory.store.MemoryStore, created by the first memory stage
        self.embedder: Any = None

    @property
    def applied(self) -> list[int]:
        return [] if self.store is None else self.store.applied()

    def ensure(self) -> Any:
        """The embedder, and the store (created empty by the main process on first use; None on another
        process before the main one created it)."""
        from lifelong.memory.embed import Embedder

        if self.embedder is None:
            self.embedder = Embedder(self.cfg.memory.embedder, self.cfg.memory.batch_size)
        if self.store is None:
            self.store = self._open(create=self.is_main)
        return self.store

    def _open(self, create: bool) -> Any:
        from lifelong.memory.store import META, MemoryStore

        folder = self.run_dir / "memory"
        if (folder / "docs.json").exists() and not (folder / META).exists():
            raise ValueError(
                f"{folder} holds a memory in the earlier format (docs.json and index.faiss; this lifelong "
                "keeps memory/meta.sqlite and index segments): finish the run with the lifelong that started "
                "it, or start it again under a new name"
            )
        if create:
            dim = self.embedder.dim() if self.embedder is not None else None
            got = MemoryStore.open(folder, self.cfg.memory.index)
            return got if got is not None or dim is None else MemoryStore(folder, dim, self.cfg.memory.index)
        return MemoryStore.open(folder, self.cfg.memory.index, writable=False)

    def reopen(self) -> None:
        """Another process changed the memory: read it again."""
        if self.store is not None:
            self.store.close()
        self.store = self._open(create=False)

    def restore(self) -> None:
        shutil.rmtree(self.run_dir / ".memory.old", ignore_errors=True)  # left by the earlier memory format's swap
        self.store = self._open(create=self.is_main)

    def eval_items(self, task: Any, row: int, items: list[dict]) -> list[dict]:
        """Retrieval-augmented tasks: each prompt gets the top-k passages of the memory as of the row's
        stage."""
        from lifelong.memory.store import augment

        if task.retrieve is None or not any("prompt" in it for it in items):
            return items
        self.ensure()  # also the embedder of a memory reloaded on resume
        if self.store is None:  # no memory stage has run yet: nothing to retrieve
            return items
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
        main = run.accelerator.is_main_process
        if main:
            done_rows, done, _ = state.ensure().progress(index)
            if not done:
                self._add(run, index, prepared, state, done_rows)
        run.accelerator.wait_for_everyone()  # the other processes read the memory the main one wrote
        if not main:
            state.reopen()
        mem = state.store
        counts = mem.progress(index)[2]
        run.log(type="memory", stage=index, **counts, total=mem.count())
        return {
            "wall_s": time.perf_counter() - t0,
            "steps": 0,
            "tokens": 0,
            "trainable_params": 0,
            "memory_documents": mem.count(live_only=True),
            **counts,
        }

    @staticmethod
    def _add(run: StageEnv, index: int, rows: list[dict], state: MemoryState, start: int) -> None:
        """Embed and add the stage's rows from `start` (the rows a killed run committed), one committed chunk
        of `memory.chunk` rows at a time, then finish the stage (its index segment)."""
        mem, chunk = state.store, run.cfg.memory.chunk
        with progress(len(rows), f"memory {run.cfg.stages[index].name}: embed", run.quiet, run.console) as bar:
            bar.advance(start)
            for at in range(start, len(rows), chunk):
                part = rows[at : at + chunk]
                texts = [r["text"] for r in part if not r.get("delete")]
                vecs = iter(state.embedder(texts, bar, cache=False))  # the bar advances per embedding batch
                full = [None if r.get("delete") else next(vecs) for r in part]
                mem.add_chunk(part, full, index, at + len(part))
                bar.advance(len(part) - len(texts))
                fault_point("memory-chunk")  # a testing hook (lifelong.faults): a chunk committed
        mem.finish_stage(index)


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
