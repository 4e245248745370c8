"""The Python entry points behind `lifelong edit`: load a model and requests, run a protocol, write the
results (edited model as safetensors, exact deltas, metrics) into a fresh directory."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from lifelong.data.edit_requests import load_requests
from lifelong.editing import EDITORS, Editor


def model_config(spec: str) -> Any:
    from lifelong.config import ModelConfig

    if spec.startswith("package:"):
        return ModelConfig(package=spec.split(":", 1)[1])
    return ModelConfig(path=spec)


def build(method: str, overrides: list[str] | dict | None = None) -> Editor:
    """An editor from its name and `key=value` overrides (dotted keys for nested settings)."""
    from lifelong.configio import apply_overrides

    cls = EDITORS.get(method)
    raw = overrides if isinstance(overrides, dict) else apply_overrides({}, list(overrides or []))
    try:
        return cls(cls.Params(**raw))
    except ValidationError as err:
        msgs = [
            f"{method}.{'.'.join(str(x) for x in e['loc'])}: "
            f"{'unknown parameter' if e['type'] == 'extra_forbidden' else e['msg']}"
            for e in err.errors()
        ]
        raise ValueError("; ".join(msgs) + f" (see `lifelong ls editors` for {method}'s parameters)") from None


def edit_to_dir(
    requests_path: str,
    model: str,
    method: str,
    out: str,
    overrides: list[str] | None = None,
    protocol: str = "sequential",
    group: Optional[int] = None,
    every: Optional[int] = None,
    fluency_tokens: int = 0,
    seed: int = 0,
) -> dict:
    import torch
    from safetensors.torch import save_file

    from lifelong.editing.metrics import table
    from lifelong.editing.protocol import run_protocol
    from lifelong.models import load_model_and_tokenizer
    from lifelong.models.threads import set_torch_threads

    dest = Path(out)
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} already exists and is not empty; choose another --out (nothing is overwritten)")
    requests = load_requests(requests_path)
    editor = build(method, overrides)
    torch.manual_seed(seed)
    mdl, tok = load_model_and_tokenizer(model_config(model), seed=seed)
    set_torch_threads(mdl)  # OMP_NUM_THREADS, else by model size (lifelong.models.threads)
    mdl.eval()
    if group is None:
        group = len(requests) if editor.batched else 1
    res = run_protocol(mdl, tok, editor, requests, protocol, group, every, fluency_tokens, seed=seed)  # type: ignore[arg-type]
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    results = res.pop("results")
    meta = {k: v for k, v in res.items() if k != "per_request"}
    meta.update(model=model, params=editor.params.model_dump(mode="json"), requests_file=str(requests_path))
    written = protocol == "sequential" and bool(results) and editor.changes_weights
    why = (
        ""
        if written
        else "\n\nNo model written: "
        + (
            "each edit was undone after scoring (rollback)."
            if protocol == "rollback"
            else f"{method} keeps its edits outside the weights."
        )
    )
    meta["model_written"] = written
    (tmp / "metrics.json").write_text(json.dumps(meta, indent=2))
    (tmp / "metrics.md").write_text(
        f"# {method} on {len(requests)} edits ({protocol}, group {group})\n\n" + table(res["summary"]) + why + "\n"
    )
    with open(tmp / "per_request.jsonl", "w", encoding="utf-8") as f:
        for r, m in zip(requests, res["per_request"]):
            f.write(json.dumps({"id": r.id, "subject": r.subject, "target_new": r.target_new, **m}) + "\n")
    if written:
        deltas: dict[str, Any] = {}
        for r in results:
            for name, d in r.deltas.items():
                deltas[name] = deltas[name] + d if name in deltas else d
        save_file(
            {k: v.contiguous() for k, v in deltas.items()},
            str(tmp / "deltas.safetensors"),
            metadata={"method": method, "edits": str(len(requests))},
        )
        mdl.save_pretrained(str(tmp / "model"), safe_serialization=True)
        tok.save_pretrained(str(tmp / "model"))
    if dest.exists():
        dest.rmdir()
    os.replace(tmp, dest)
    return res["summary"]
