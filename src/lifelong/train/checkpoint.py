"""Atomic files and checkpoints.

Everything in a run directory is written under a temporary name and renamed into place, so a kill -9 at
any moment leaves either the old file or the new one. A checkpoint is a directory written as
`ckpt/.tmp-*` and renamed; `ckpt/latest` names the newest complete one.
Contents: `model.safetensors` (weights), `optimizer.pt` and `rng.pt` (read back with
`weights_only=True`), `strategy.json` + `strategy.safetensors`, `meta.json` (stage, step, data position).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from lifelong.faults import fault_point
from lifelong.fileio import TEMPORARY, _json_default, atomic_write_json, atomic_write_text, remove_stale_temporaries

__all__ = [
    "TEMPORARY",
    "atomic_write_json",
    "atomic_write_text",
    "latest_checkpoint",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]


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


def save_checkpoint(
    run_dir: Path,
    tag: str,
    model: Any,
    strategy: Any,
    meta: dict,
    optimizer: Optional[Any] = None,
    scheduler: Optional[Any] = None,
) -> Path:
    """Write checkpoint `tag` atomically, point `ckpt/latest` at it, remove older ones."""
    root = Path(run_dir) / "ckpt"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{tag}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    fault_point("checkpoint-write")  # some files written, the rest and the rename not yet
    if optimizer is not None:
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
            },
            tmp / "optimizer.pt",
        )
    torch.save(rng_state(), tmp / "rng.pt")
    save_tree(strategy.state_dict(), tmp, "strategy")
    (tmp / "meta.json").write_text(json.dumps(meta, default=_json_default))
    final = root / tag
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fault_point("checkpoint-renamed")  # complete, but `latest` still names the previous one
    atomic_write_text(root / "latest", tag)
    for old in root.iterdir():  # keep only the newest complete checkpoint
        if old.name not in (tag, "latest") and not old.name.startswith("."):
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
    if unexpected or [m for m in missing if m not in _tied_names(model)]:
        raise ValueError(
            f"{path}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    opt = path / "optimizer.pt"
    if opt.exists():
        meta["optimizer_state"] = torch.load(opt, weights_only=True)
    return model, meta


def _tied_names(model: Any) -> set[str]:
    seen: dict[int, str] = {}
    tied = set()
    for name, p in model.state_dict(keep_vars=True).items():
        if id(p) in seen:
            tied.add(name)
        seen.setdefault(id(p), name)
    return tied
