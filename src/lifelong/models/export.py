"""Stage models out of a run: Hugging Face model directories and PEFT adapters, each with a model card
(README.md) and a machine-readable `lineage.json` (docs/export.md).

An `hf` export is what `save_pretrained` writes (config.json, generation_config.json, safetensors shards,
tokenizer files with the chat template), so `AutoModelForCausalLM.from_pretrained(dir)` loads it with plain
transformers; adapters are merged in (PEFT's `merge_and_unload`, on a copy). A `peft` export is the stage's
adapter as PEFT saves it (several adapters active together are concatenated into one with PEFT's
`add_weighted_adapter(..., combination_type="cat")`, which sums them exactly), loadable with
`PeftModel.from_pretrained(base, dir)`; `merged` adds the full merged weights in `merged/`.

Every export is written under a temporary name and renamed into place, so a kill leaves no half export
(the run redoes it on `--resume`). The content hash is the sha256 of the tensors in the export's safetensors
files (names, dtypes, shapes and bytes, in name order), so it does not depend on sharding or file metadata.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import struct
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from lifelong.config import DataConfig, ModelConfig, RunConfig
from lifelong.faults import fault_point
from lifelong.fileio import folder_bytes
from lifelong.progress import progress

__all__ = ["content_hash", "describe_base", "export_stage_model", "stage_parent", "tensor_digest"]


def tensor_digest(files: list[Path]) -> str:
    """sha256 over the tensors of safetensors files, in tensor-name order: name, dtype, shape, raw bytes.
    Read from each file's header (8-byte length, JSON of dtype, shape and data offsets) and data."""
    entries = []
    for path in files:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for name, info in header.items():
            if name != "__metadata__":
                entries.append((name, info, path, 8 + n))
    h = hashlib.sha256()
    for name, info, path, start in sorted(entries, key=lambda e: e[0]):
        h.update(f"{name}|{info['dtype']}|{info['shape']}|".encode())
        begin, end = info["data_offsets"]
        with open(path, "rb") as f:
            f.seek(start + begin)
            left = end - begin
            while left > 0:
                chunk = f.read(min(left, 1 << 24))
                if not chunk:
                    raise ValueError(f"{path}: truncated safetensors file (tensor {name})")
                h.update(chunk)
                left -= len(chunk)
    return h.hexdigest()


def content_hash(folder: Path) -> Optional[str]:
    """Digest of the safetensors files directly in `folder` (None when there are none)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    return tensor_digest(files) if files else None


def describe_base(m: ModelConfig) -> dict[str, Any]:
    """Where the run's starting model comes from, and what it is when it is an export of another run."""
    if m.tiny:
        out: dict[str, Any] = {"tiny": m.tiny, "tiny_config": dict(m.tiny_config)}
    else:
        out = {k: v for k in ("path", "package", "gguf_file", "revision") if (v := getattr(m, k))}
    lineage = Path(m.path) / "lineage.json" if m.path else None
    if lineage is not None and lineage.is_file():  # a stage model exported by an earlier run
        try:
            up = json.loads(lineage.read_text(encoding="utf-8"))
            out["exported_from"] = {k: up.get(k) for k in ("run", "stage", "content_hash", "config_hash")}
        except (OSError, ValueError):
            pass
    return out


def stage_parent(cfg: RunConfig, index: int) -> str:
    """The model stage `index` starts from: `base`, or an earlier stage's name."""
    src = cfg.stages[index].start_from
    if src != "previous":
        return src
    return cfg.stages[index - 1].name if index > 0 else "base"


def config_hash(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def _data(d: Optional[DataConfig]) -> str:
    if d is None:
        return "—"
    if d.path:
        return f"`{d.path}`"
    if d.hub:
        return f"hub `{d.hub}`" + (f" ({d.subset})" if d.subset else "") + f", split {d.split}"
    return f"{len(d.rows or [])} inline rows"


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers draws a bar per shard write; a run prints its own progress."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def write_hf(model: Any, tokenizer: Any, folder: Path, adapters: list[str], max_shard_size: str) -> None:
    """A Hugging Face model directory: adapters merged into a copy of a PEFT model (others unloaded)."""
    plain = model
    if _is_peft(model):
        work = copy.deepcopy(model)
        plain = work.merge_and_unload(adapter_names=adapters) if adapters else work.unload()
    with _no_progress_bars():
        plain.save_pretrained(str(folder), safe_serialization=True, max_shard_size=max_shard_size)
    if not (folder / "generation_config.json").exists():
        from transformers import GenerationConfig

        GenerationConfig.from_model_config(plain.config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def write_peft(model: Any, tokenizer: Any, folder: Path, adapters: list[str]) -> None:
    """The stage's adapters as one PEFT adapter directory."""
    if not _is_peft(model) or not adapters:
        raise ValueError("this stage trained no adapter, so it has no PEFT export; export it with format: hf")
    work, name = model, adapters[0]
    if len(adapters) > 1:  # all active together: B_cat A_cat = sum_i s_i B_i A_i exactly
        work, name = copy.deepcopy(model), "lifelong_export"
        work.add_weighted_adapter(adapters, [1.0] * len(adapters), name, combination_type="cat")
    tmp = folder / ".tmp-peft"
    work.save_pretrained(str(tmp), selected_adapters=[name])
    src = tmp / name if (tmp / name).is_dir() else tmp
    for f in src.iterdir():
        if f.is_file():
            os.replace(f, folder / f.name)
    shutil.rmtree(tmp)
    tokenizer.save_pretrained(str(folder))


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def model_card(cfg: RunConfig, index: int, results: dict, lineage: dict) -> str:
    """README.md of an export: base, the stream so far, the strategy, the results matrix up to the stage."""
    stage = cfg.stages[index]
    fmt = lineage["format"]
    lib = "peft" if fmt == "peft" else "transformers"
    base = lineage["base"]
    hub = base.get("path") if base.get("path") and not Path(base["path"]).exists() else None
    front = ["---", f"library_name: {lib}"] + ([f"base_model: {hub}"] if hub else [])
    front += ["tags:", "- lifelong", "- continual-learning", "---", ""]
    what = "a PEFT adapter" if fmt == "peft" else "a Hugging Face model directory"
    out = front + [
        f"# {cfg.name} / {stage.name}",
        "",
        f"The model after stage {index + 1} of {len(cfg.stages)} (`{stage.name}`, kind `{stage.kind}`) of the "
        f"continual-learning run `{cfg.name}`, exported as {what} by lifelong {lineage['lifelong']}.",
        "",
        "## Base model",
        "",
    ]
    if base.get("tiny"):
        out.append(f"- a tiny `{base['tiny']}` built from a config (random initialisation, seed {cfg.seed})")
    for k in ("path", "package", "gguf_file", "revision"):
        if base.get(k):
            out.append(f"- {k}: `{base[k]}`")
    if base.get("exported_from"):
        e = base["exported_from"]
        out.append(f"- itself exported from run `{e.get('run')}`, stage `{e.get('stage')}` ({e.get('content_hash')})")
    out += ["", "## Stream up to this stage", ""]
    out.append(
        _table(
            ["#", "stage", "kind", "data", "starts from"],
            [
                [str(k + 1), f"`{s.name}`", s.kind, _data(s.data) if not s.mix else f"mix of {len(s.mix)}", p]
                for k, s in enumerate(cfg.stages[: index + 1])
                for p in [stage_parent(cfg, k)]
            ],
        )
    )
    out += ["", "## Strategy", ""]
    for spec in cfg.strategy:
        params = ", ".join(f"{k}={v}" for k, v in (spec.model_extra or {}).items()) or "default parameters"
        out.append(f"- `{spec.name}`: {params}")
    if lineage.get("adapters"):
        out.append(f"- adapters in this export: {', '.join(lineage['adapters'])}")
    out += ["", "## Results up to this stage", ""]
    tasks = results.get("tasks", [])
    if tasks:
        out.append("Score of each eval task (column) after each stage (row); ↑ higher is better, ↓ lower.")
        out.append("")
        head = ["after stage"] + [f"{t['name']} ({t['metric']} {'↑' if t['higher_is_better'] else '↓'})" for t in tasks]
        rows = [
            [r] + ["—" if v is None else f"{v:.2f}" for v in vals]
            for r, vals in zip(results["rows"][: index + 2], results["matrix"][: index + 2])
        ]
        out.append(_table(head, rows))
    else:
        out.append("No results recorded.")
    parent = lineage["parent"]
    out += [
        "",
        "## Lineage",
        "",
        f"- parent: `{parent['name']}`" + (f" ({parent['content_hash'][:16]})" if parent.get("content_hash") else ""),
        f"- content hash (sha256 of the tensors): `{lineage['content_hash']}`",
        f"- config hash (sha256 of the run's resolved config): `{lineage['config_hash']}`",
        "- the same, machine-readable: `lineage.json`",
        "",
        "## Load it",
        "",
        "```python",
    ]
    if fmt == "peft":
        where = base.get("path", "<the base model>")
        out += [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'base = AutoModelForCausalLM.from_pretrained("{where}")',
            'model = PeftModel.from_pretrained(base, "<this folder>")',
            'tokenizer = AutoTokenizer.from_pretrained("<this folder>")',
        ]
    else:
        out += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model = AutoModelForCausalLM.from_pretrained("<this folder>")',
            'tokenizer = AutoTokenizer.from_pretrained("<this folder>")',
        ]
    return "\n".join(out + ["```", ""])


def _finish(folder: Path, cfg: RunConfig, index: int, results: dict, lineage: dict) -> dict:
    lineage = {**lineage, "content_hash": content_hash(folder)}
    lineage["bytes"] = folder_bytes(folder)  # before the two small files below
    (folder / "lineage.json").write_text(json.dumps(lineage, indent=1), encoding="utf-8")
    (folder / "README.md").write_text(model_card(cfg, index, results, lineage), encoding="utf-8")
    return lineage


def export_stage_model(
    out: Path,
    model: Any,
    tokenizer: Any,
    cfg: RunConfig,
    index: int,
    adapters: list[str],
    results: dict,
    fmt: str = "hf",
    merged: bool = False,
    parent_hash: Optional[str] = None,
    quiet: bool = False,
    console: Optional[Any] = None,
) -> dict:
    """Write stage `index`'s model to `out` (atomically: a temporary folder renamed into place) as `fmt`
    (`hf` or `peft`, plus `merged/` full weights on request) with README.md and lineage.json; `results` holds
    the run's `rows`, `tasks`, `matrix`. Returns the lineage record. Progress per model folder written
    (`lifelong.progress`; `quiet`: none)."""
    import lifelong

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    stage = cfg.stages[index]
    lineage: dict[str, Any] = {
        "lifelong": lifelong.__version__,
        "run": cfg.name,
        "stage": stage.name,
        "stage_index": index,
        "kind": stage.kind,
        "format": fmt,
        "adapters": list(adapters),
        "parent": {"name": stage_parent(cfg, index), "content_hash": parent_hash},
        "base": describe_base(cfg.model),
        "config_hash": config_hash(cfg),
        "strategy": [s.model_dump() for s in cfg.strategy],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if stage.merge is not None:
        lineage["merged_from"] = list(stage.merge.models)
    parts = 2 if fmt == "peft" and merged else 1
    with progress(parts, f"export {stage.name} ({fmt})", quiet, console, unit="folders") as bar:
        if fmt == "peft":
            write_peft(model, tokenizer, tmp, adapters)
            bar.advance()
            if merged:
                (tmp / "merged").mkdir()
                write_hf(model, tokenizer, tmp / "merged", adapters, cfg.export.max_shard_size)
                _finish(tmp / "merged", cfg, index, results, {**lineage, "format": "hf", "merged": True})
                bar.advance()
        else:
            write_hf(model, tokenizer, tmp, adapters, cfg.export.max_shard_size)
            bar.advance()
        lineage = _finish(tmp, cfg, index, results, lineage)
    fault_point("export-write")  # the export complete in its temporary folder, not renamed yet
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return lineage
