"""The stage models of a run directory, after the fact: which exist (exports in `models/`, weights kept for
later stages in `keep/`, stage-end checkpoints in `ckpt/`) with their content hash, parent and size on disk
(`lifelong show`, `lifelong runs`), and a stage's model loaded back from them and exported
(`lifelong export`). The run's own exports, written as stages end, are the runner's (`Run.export_stage`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from lifelong.config import RunConfig
from lifelong.fileio import folder_bytes
from lifelong.models import load_model_and_tokenizer
from lifelong.models.export import export_stage_model, stage_parent, tensor_digest
from lifelong.strategies import build_strategy
from lifelong.train.checkpoint import base_unchanged, latest_checkpoint, load_checkpoint, load_tree
from lifelong.train.context import StageContext

__all__ = ["StageModel", "export_from_run", "list_stage_models", "open_stage_model", "read_run_config"]


@dataclass
class StageModel:
    """One place where a stage's weights exist."""

    stage: str
    index: int
    where: str
    """Path relative to the run directory."""
    what: str
    """`hf export`, `peft export` (`+ merged`), `kept` (for a later stage's start_from or merge) or
    `checkpoint` (`adapter checkpoint`: adapter tensors only)."""
    parent: str
    """`base` or the stage it started from."""
    bytes: int
    content_hash: Optional[str] = None
    """sha256 of the tensors (`lifelong.models.export.tensor_digest`); None when not computed."""


def read_run_config(run_dir: Path) -> RunConfig:
    """The resolved config a run directory was started with."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ValueError(f"{run_dir}: not a run directory (no config.yaml); give the folder `lifelong run` made")
    try:
        return RunConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not a config this version of lifelong reads ({str(e).splitlines()[0]})") from None


def list_stage_models(run_dir: Path, hashes: bool = True) -> list[StageModel]:
    """Every stage model in the run directory, in stream order. Exports carry their hash in lineage.json;
    with `hashes`, kept weights and checkpoints are hashed too (reads every tensor once)."""
    d = Path(run_dir)
    cfg = read_run_config(d)
    out: list[StageModel] = []
    for i, s in enumerate(cfg.stages):
        parent = stage_parent(cfg, i)
        m = d / "models" / s.name
        if (m / "lineage.json").is_file():
            try:
                lin = json.loads((m / "lineage.json").read_text(encoding="utf-8"))
            except ValueError:
                lin = {}
            what = f"{lin.get('format', '?')} export" + (" + merged" if (m / "merged").is_dir() else "")
            out.append(
                StageModel(s.name, i, f"models/{s.name}", what, parent, folder_bytes(m), lin.get("content_hash"))
            )
        k = d / "keep" / s.name / "model.safetensors"
        if k.is_file():
            out.append(
                StageModel(
                    s.name, i, f"keep/{s.name}", "kept", parent, folder_bytes(k), tensor_digest([k]) if hashes else None
                )
            )
        ck = d / "ckpt" / f"stage{i}-end"
        if (ck / "meta.json").is_file() and (ck / "model.safetensors").is_file():
            meta = json.loads((ck / "meta.json").read_text())
            what = "adapter checkpoint" if (meta.get("weights") or {}).get("frozen") else "checkpoint"
            digest = tensor_digest([ck / "model.safetensors"]) if hashes else None
            out.append(StageModel(s.name, i, f"ckpt/{ck.name}", what, parent, folder_bytes(ck), digest))
    return out


def _stage_index(cfg: RunConfig, stage: Optional[str]) -> int:
    names = [s.name for s in cfg.stages]
    if stage is None:
        return len(names) - 1
    if stage not in names:
        raise ValueError(f"run {cfg.name} has no stage {stage!r}; its stages: {', '.join(names)}")
    return names.index(stage)


def _missing(run_dir: Path, cfg: RunConfig, index: int) -> ValueError:
    have = ", ".join(sorted({f"{m.stage} ({m.where})" for m in list_stage_models(run_dir, hashes=False)})) or "none"
    name = cfg.stages[index].name
    return ValueError(
        f"{run_dir}: the weights of stage {name!r} are not in the run directory: it was not exported "
        "(export.stages), no later stage started from it or merged it (keep/), and its stage-end checkpoint was "
        f"replaced by newer ones. Stage models there: {have}. To have every stage's model, run with "
        f"`export.stages: all` (or list {name}), or keep more checkpoints with `train.keep_checkpoints: N`"
    )


def open_stage_model(run_dir: Path, stage: Optional[str] = None) -> tuple[RunConfig, int, Any, Any, Any]:
    """Load stage `stage`'s model (default: the last stage) from its stage-end checkpoint or its kept weights:
    `(config, index, model, tokenizer, strategy)`, the model with the strategy's structure (adapters)."""
    d = Path(run_dir)
    cfg = read_run_config(d)
    i = _stage_index(cfg, stage)
    ck = d / "ckpt" / f"stage{i}-end"
    kept = d / "keep" / cfg.stages[i].name / "model.safetensors"
    if not (ck / "meta.json").is_file() and not kept.is_file():
        raise _missing(d, cfg, i)
    model, tok = load_model_and_tokenizer(cfg.model, seed=cfg.seed)
    strategy = build_strategy(cfg.strategy, seed=cfg.seed)

    def rebuild(m: Any, meta: dict) -> Any:
        k = meta["stage"]
        return strategy.wrap_model(
            StageContext(stage_index=k, stage_name=cfg.stages[k].name, model=m, tokenizer=tok, resuming=True)
        )

    if (ck / "meta.json").is_file():
        model, _ = load_checkpoint(ck, model, strategy, rebuild)
    else:  # kept weights: the structure as of the newest checkpoint (it has every adapter the kept one had)
        from safetensors.torch import load_model

        latest = latest_checkpoint(d)
        if latest is not None:
            strategy.load_state_dict(load_tree(latest, "strategy"))
            model = rebuild(model, {"stage": i})
        _, unexpected = load_model(model, str(kept), strict=False)
        if unexpected:
            raise ValueError(f"{kept}: weights do not fit the model the run's config builds ({unexpected[:3]})")
    return cfg, i, model.eval(), tok, strategy


def _check_capability(cfg: RunConfig, strategy: Any, fmt: str) -> None:
    names = " + ".join(s.name for s in cfg.strategy)
    if not strategy.exports_hf:
        raise ValueError(f"strategy {names} cannot export its stage models: {strategy.export_note}")
    if fmt == "peft" and not strategy.exports_peft:
        why = "it trains the model's own weights, so a stage's model is full weights, not an adapter"
        raise ValueError(f"strategy {names} cannot export peft: {why}; use --format hf")


def _copy_export(src: Path, out: Path) -> None:
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    os.replace(tmp, out)


def export_from_run(
    run_dir: Path, out: Path, stage: Optional[str] = None, fmt: str = "hf", merged: bool = False
) -> dict:
    """Export stage `stage` (default: the last) of a run into a new folder `out`, as `lifelong export` does;
    returns its lineage record. An export the run already wrote in that format is copied; otherwise the
    model is rebuilt from the stage-end checkpoint or the kept weights (or, for `hf`, from a PEFT export)."""
    d, out = Path(run_dir), Path(out)
    cfg = read_run_config(d)
    i = _stage_index(cfg, stage)
    name = cfg.stages[i].name
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists and is not empty; exports never overwrite: choose a new --out folder")
    if merged and fmt != "peft":
        raise ValueError("--merged goes with --format peft (an hf export is full merged weights already)")
    _check_capability(cfg, build_strategy(cfg.strategy, seed=cfg.seed), fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_dir():
        out.rmdir()
    done = d / "models" / name
    lin = json.loads((done / "lineage.json").read_text()) if (done / "lineage.json").is_file() else None
    if lin is not None and lin.get("format") == fmt and (not merged or (done / "merged").is_dir()):
        _copy_export(done, out)
        return lin
    results = json.loads((d / "results.json").read_text()) if (d / "results.json").is_file() else {}
    parent = d / "models" / stage_parent(cfg, i) / "lineage.json"
    parent_hash = json.loads(parent.read_text()).get("content_hash") if parent.is_file() else None
    has_weights = (d / "ckpt" / f"stage{i}-end" / "meta.json").is_file() or (d / "keep" / name).is_dir()
    if not has_weights and lin is not None and lin.get("format") == "peft" and fmt == "hf":
        from peft import PeftModel

        base, tok = load_model_and_tokenizer(cfg.model, seed=cfg.seed)
        model = PeftModel.from_pretrained(base, str(done))
        return export_stage_model(out, model, tok, cfg, i, ["default"], results, "hf", False, parent_hash)
    cfg, i, model, tok, strategy = open_stage_model(d, name)
    if fmt == "peft" and not base_unchanged(d, model, strategy):
        raise ValueError(
            f"stage {name!r}: the base weights changed during the run, so an adapter alone is not "
            "the model; export it with --format hf"
        )
    ctx = StageContext(stage_index=i, stage_name=name, model=model, tokenizer=tok)
    return export_stage_model(out, model, tok, cfg, i, strategy.export_adapters(ctx), results, fmt, merged, parent_hash)
