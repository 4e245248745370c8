"""Atomic files and checkpoints.

Everything in a run directory is written under a temporary name and renamed into place, so a kill -9 at
any moment leaves either the old file or the new one. A checkpoint is a directory written as
`ckpt/.tmp-*` and renamed; `ckpt/latest` names the newest complete one, and the newest `keep` complete
ones stay (`train.keep_checkpoints`).
Contents: `model.safetensors` (weights), `optimizer.pt` and `rng.pt` (read back with
`weights_only=True`), `strategy.json` + `strategy.safetensors`, `meta.json` (stage, step, data position).

Adapter-only checkpoints: when the strategy names the tensors it trains (`Strategy.trained_tensors`:
adapters, soft prompts) and every other tensor still equals the run's starting model (same digest as
`ckpt/base.json`, recorded when the run starts), `model.safetensors` holds only the trained tensors and
`meta.json` the digest of the rest; loading takes the rest from the starting model (reloaded from the
config) and checks the digest. Otherwise (an edit or merge changed the base) the checkpoint is full.
`ckpt/written.json` adds up the bytes of checkpoints written per stage (the costs table's disk figures).

Sharded runs (FSDP2): the caller gathers the whole state dict on every process (`train.sharding.
full_state_dict`, a collective) and the main process writes it as `weights`, the same files as unsharded (tied
tensors once), so a checkpoint resumes sharded or not; `optimizer.pt` then holds the optimizer state keyed by
parameter name (`lifelong.train.loop.optimizer_state_as` converts between the two keyings).

DeepSpeed (ZeRO-2): the optimizer state exists only in parts, one per process (DeepSpeed's own state dict of
its partition, `lifelong.train.accel.zero_state`): every process stages its part (`stage_part`) before the main
process writes the checkpoint, which moves them in as `zero/rank<r>.pt` (`meta.json`: `zero.processes`);
`optimizer.pt` then holds the scheduler only. Such a checkpoint resumes under DeepSpeed with the same number of
processes (`read_part` says so otherwise); its weights are whole, as always.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from lifelong.faults import fault_point
from lifelong.fileio import (
    TEMPORARY,
    _json_default,
    atomic_write_json,
    atomic_write_text,
    folder_bytes,
    remove_stale_temporaries,
)

__all__ = [
    "TEMPORARY",
    "atomic_write_json",
    "atomic_write_text",
    "base_unchanged",
    "checkpoints",
    "folder_bytes",
    "latest_checkpoint",
    "load_checkpoint",
    "read_part",
    "record_base",
    "remove_stale_temporaries",
    "save_checkpoint",
    "stage_part",
    "state_digest",
    "StateHolder",
    "tied_names",
    "untied",
    "written_bytes",
]

BASE_RECORD = "base.json"
"""`ckpt/base.json`: the digest of the run's starting model (adapter-only checkpoints leave it out)."""
PARTS = "zero"
"""`<checkpoint>/zero/rank<r>.pt`: process r's part of a DeepSpeed ZeRO optimizer state."""
LEDGER = "written.json"
"""`ckpt/written.json`: bytes of checkpoints written so far, per stage index."""


def save_tree(state: Any, folder: Path, name: str) -> None:
    """Save a nested dict/list with tensor leaves: tensors to safetensors, the rest to JSON."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(x: Any, key: str) -> Any:
        if isinstance(x, torch.Tensor):
            t = x.detach().contiguous().cpu()
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen:  # tied weights share storage; safetensors stores each tensor once
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
            tensors[key] = t
            return {"__tensor__": key}
        if isinstance(x, dict):
            return {str(k): walk(v, f"{key}.{k}") for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(x)]
        return x

    skeleton = walk(state, "s")
    (folder / f"{name}.json").write_text(json.dumps(skeleton, default=_json_default))
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))


def load_tree(folder: Path, name: str) -> Any:
    skeleton = json.loads((folder / f"{name}.json").read_text())
    st = folder / f"{name}.safetensors"
    tensors = load_file(str(st)) if st.exists() else {}

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            if set(x) == {"__tensor__"}:
                return tensors[x["__tensor__"]]
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(skeleton)


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def state_digest(model: Any, exclude: frozenset[str] | set[str] = frozenset()) -> str:
    """sha256 of a model's tensors (or of a whole state dict's, tied names left out) in state-dict order,
    names aside (a wrapped model's base tensors digest like the unwrapped model's), each shared tensor once;
    tensors named in `exclude` are left out."""
    h = hashlib.sha256()
    seen: set[int] = set()
    items = model.items() if isinstance(model, dict) else model.state_dict(keep_vars=True).items()
    for name, t in items:
        if name in exclude or id(t) in seen:
            continue
        seen.add(id(t))
        x = t.detach().cpu().contiguous()
        h.update(f"{x.dtype}{tuple(x.shape)}".encode())
        h.update(x.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def record_base(run_dir: Path, model: Any) -> None:
    """Write `ckpt/base.json` (the starting model's digest) once, so checkpoints may leave the base out."""
    path = Path(run_dir) / "ckpt" / BASE_RECORD
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"digest": state_digest(model)})


def base_unchanged(run_dir: Path, model: Any, strategy: Any) -> bool:
    """Whether every tensor the strategy does not train still equals the run's starting model (so an adapter
    alone, on that base, is the model). False when the strategy trains the model's own weights."""
    trained = strategy.trained_tensors(model)
    base = _read_json(Path(run_dir) / "ckpt" / BASE_RECORD)
    return trained is not None and base is not None and state_digest(model, trained) == base.get("digest")


def written_bytes(run_dir: Path) -> dict[int, int]:
    """Bytes of checkpoints written per stage index so far, including ones deleted since."""
    try:
        return {int(k): int(v) for k, v in json.loads((Path(run_dir) / "ckpt" / LEDGER).read_text()).items()}
    except (OSError, ValueError):
        return {}


def _read_json(path: Path) -> Optional[dict]:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def _order(meta: dict) -> tuple[int, int, int]:
    """Checkpoints in the order they were written: by stage, its step checkpoints, then its end."""
    return (int(meta.get("stage", -1)), 1 if meta.get("done") else 0, int(meta.get("step") or 0))


def checkpoints(run_dir: Path) -> list[tuple[Path, dict]]:
    """The complete checkpoints of a run with their meta, oldest first."""
    root = Path(run_dir) / "ckpt"
    found = [
        (d, meta)
        for d in (sorted(root.iterdir()) if root.is_dir() else [])
        if d.is_dir() and not d.name.startswith(".") and (meta := _read_json(d / "meta.json")) is not None
    ]
    return sorted(found, key=lambda c: _order(c[1]))


def _save_weights(
    root: Path, folder: Path, model: Any, strategy: Any, meta: dict, weights: Optional[dict] = None
) -> None:
    """`model.safetensors`: only the trained tensors when the rest is still the starting model, else all.
    `weights`: the model's whole state dict (a sharded model's, gathered), written instead of reading it."""
    trained = strategy.trained_tensors(model) if hasattr(strategy, "trained_tensors") else None
    base = _read_json(root / BASE_RECORD)
    if trained is not None and base is not None:
        digest = state_digest(model, trained) if weights is None else state_digest(weights, trained | tied_names(model))
        if digest == base.get("digest"):
            held = model.state_dict() if weights is None else weights
            tensors = {n: t.detach().contiguous().cpu() for n, t in held.items() if n in trained}
            save_file(tensors, str(folder / "model.safetensors"))
            meta["weights"] = {"frozen": "start", "digest": digest}
            return
    if weights is None:
        save_model(model, str(folder / "model.safetensors"))
    else:
        save_file(untied(model, weights), str(folder / "model.safetensors"), {"format": "pt"})


def untied(model: Any, weights: dict) -> dict:
    """A whole state dict of `model` as `safetensors.torch.save_model` writes the model: each group of tied
    tensors once, under the name that sorts first."""
    groups: dict[int, list[str]] = {}
    for n, p in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(p), []).append(n)
    dropped = {n for names in groups.values() for n in sorted(names)[1:]}
    return {n: t.contiguous() for n, t in weights.items() if n not in dropped}


def save_checkpoint(
    run_dir: Path,
    tag: str,
    model: Any,
    strategy: Any,
    meta: dict,
    optimizer: Optional[Any] = None,
    scheduler: Optional[Any] = None,
    keep: int = 1,
    weights: Optional[dict] = None,
    strategy_state: Optional[dict] = None,
    parts: Optional[Path] = None,
) -> Path:
    """Write checkpoint `tag` atomically, point `ckpt/latest` at it, keep the newest `keep` complete ones.
    `weights`: the whole state dict of a sharded `model` (gathered by the caller on every process);
    `strategy_state`: the strategy's `state_dict()`, taken by the caller on every process when sharded (the
    strategies gather their per-parameter state then: a collective); `parts`: the folder `stage_part` wrote
    every process's part of the optimizer state into (DeepSpeed), moved into the checkpoint."""
    root = Path(run_dir) / "ckpt"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{tag}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    meta = dict(meta)
    _save_weights(root, tmp, model, strategy, meta, weights)
    fault_point("checkpoint-write")  # some files written, the rest and the rename not yet
    if parts is not None:
        os.replace(parts, tmp / PARTS)
    if optimizer is not None:
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
            },
            tmp / "optimizer.pt",
        )
    torch.save(rng_state(), tmp / "rng.pt")
    save_tree(strategy.state_dict() if strategy_state is None else strategy_state, tmp, "strategy")
    (tmp / "meta.json").write_text(json.dumps(meta, default=_json_default))
    size = folder_bytes(tmp)
    final = root / tag
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fault_point("checkpoint-renamed")  # complete, but `latest` still names the previous one
    atomic_write_text(root / "latest", tag)
    ledger = written_bytes(run_dir)
    stage = int(meta.get("stage", -1))
    ledger[stage] = ledger.get(stage, 0) + size
    atomic_write_json(root / LEDGER, {str(k): v for k, v in sorted(ledger.items())})
    kept = {d.name for d, _ in checkpoints(run_dir)[-max(keep, 1) :]} | {tag}
    for old in root.iterdir():  # older checkpoints beyond `keep`, remnants of deleted ones, stale temporaries
        if old.is_dir() and not old.name.startswith(".") and old.name not in kept:
            shutil.rmtree(old, ignore_errors=True)
        elif old.name.startswith(".tmp-") and old != tmp:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    root = Path(run_dir) / "ckpt"
    ptr = root / "latest"
    if not ptr.exists():
        return None
    path = root / ptr.read_text().strip()
    return path if (path / "meta.json").exists() else None


def load_checkpoint(
    path: Path, model: Any, strategy: Any, rebuild: Optional[Callable[[Any, dict], Any]] = None
) -> tuple[Any, dict]:
    """Restore strategy state, the model's structure (`rebuild(model, meta)`, e.g. adapters a strategy
    added), weights and RNG. Returns the model and the meta plus `optimizer.pt` contents if present."""
    strategy.load_state_dict(load_tree(path, "strategy"))
    meta = json.loads((path / "meta.json").read_text())
    if rebuild is not None:
        model = rebuild(model, meta)
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    weights = meta.get("weights") or {}
    if weights.get("frozen") == "start":  # adapter-only: the rest is the starting model, as it was then
        with safe_open(str(path / "model.safetensors"), framework="pt") as f:
            held = set(f.keys())
        if unexpected or state_digest(model, held) != weights["digest"]:
            raise ValueError(
                f"{path}: the starting model (model: in the run's config) is not the one this run started "
                "from, and this checkpoint holds only the adapter; restore that model to resume"
            )
    elif unexpected or [m for m in missing if m not in tied_names(model)]:
        raise ValueError(
            f"{path}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    opt = path / "optimizer.pt"
    if opt.exists():
        meta["optimizer_state"] = torch.load(opt, weights_only=True)
    meta["path"] = str(path)
    return model, meta


def stage_part(run_dir: Path, tag: str, state: dict, rank: int) -> Path:
    """Write process `rank`'s part of the optimizer state (DeepSpeed ZeRO) for checkpoint `tag` into a
    temporary folder, which `save_checkpoint(parts=...)` moves into the checkpoint once every process has
    written its part (a kill before leaves a temporary the resume removes). Returns the folder."""
    folder = Path(run_dir) / "ckpt" / f".tmp-{tag}-parts"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / f"rank{rank}.pt")
    return folder


def read_part(meta: dict, rank: int, world: int, deepspeed: bool) -> dict:
    """Process `rank`'s part of the DeepSpeed optimizer state in the checkpoint `meta` describes (as
    `load_checkpoint` returned it). Raises ValueError when this run cannot take it: not under DeepSpeed, or
    another number of processes than wrote it."""
    path = Path(meta["path"])
    if "zero" not in meta:
        raise ValueError(
            f"{path}: its optimizer state is whole (written without DeepSpeed), and DeepSpeed resumes only its own "
            "per-process parts; resume it without DeepSpeed"
        )
    n = int(meta["zero"]["processes"])
    if not deepspeed or n != world:
        raise ValueError(
            f"{path}: its optimizer state is DeepSpeed ZeRO's, in {n} parts (one per process); resume it under "
            f"DeepSpeed with {n} processes (the same accelerate launch and --num_processes)"
        )
    return torch.load(path / PARTS / f"rank{rank}.pt", weights_only=True)


def tied_names(model: Any) -> set[str]:
    """Names of a model's tensors that repeat an earlier name's tensor (tied embeddings)."""
    seen: dict[int, str] = {}
    tied = set()
    for name, p in model.state_dict(keep_vars=True).items():
        if id(p) in seen:
            tied.add(name)
        seen.setdefault(id(p), name)
    return tied


class StateHolder:
    """A state dict already taken (a kept or gathered optimizer state), checkpointed like an optimizer."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def state_dict(self) -> dict:
        return self.state
