"""Disk of models out of a run (issue 15 items 1 and 3): checkpoint weights before and after adapter-only
checkpoints (a full copy of the model every checkpoint, against the trained adapter tensors only) and export
sizes, on the tiny model (measured on real runs) and on SmolLM2-135M's shape (counted from its config on the
meta device: no weights loaded, nothing trained); and the load check of every tiny export: the max |logit
difference| between the export loaded with plain transformers / PEFT and the run's model.

    python bench/export_sizes.py [--r 8] [--smollm2-config PATH/config.json]

Sizes are bytes of float32 safetensors; ratios are adapter-only / full.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from lifelong.testing import SMOLLM2_135M_SHAPE as SMOLLM2_135M


def mib(n: float) -> str:
    return f"{n / 2**20:,.3f} MiB"


def unique_bytes(tensors: dict) -> int:
    seen, total = set(), 0
    for t in tensors.values():
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def tiny(r: int, root: Path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM

    from lifelong.runner import Run
    from lifelong.testing import tiny_llama, tiny_run_config, tiny_tokenizer
    from lifelong.validation import validate_raw

    base = root / "base"
    tiny_llama().save_pretrained(str(base))
    tiny_tokenizer().save_pretrained(str(base))
    ids = torch.tensor([[1, 33, 5, 40, 14, 15, 86, 70]])

    def logits(m: Any) -> Any:
        with torch.no_grad():
            return m.eval()(ids).logits

    runs = {}
    for name, spec, export in (
        ("naive", "naive", {"stages": "all"}),
        ("lora", {"name": "lora", "r": r}, {"stages": "all", "format": "peft", "merged": True}),
    ):
        raw = tiny_run_config(spec, n_stages=2, steps=4, name=name, output_dir=str(root / "runs"))
        raw["model"] = {"path": str(base)}
        raw["train"]["checkpoint_every"] = 2
        raw["eval"]["bootstrap"] = 0
        raw["export"] = export
        run = Run(validate_raw(raw), quiet=True)
        run.execute()
        runs[name] = run
    lora, naive = runs["lora"], runs["naive"]
    ck = lora.run_dir / "ckpt" / "stage1-end" / "model.safetensors"
    save_model(lora.model, str(root / "full.safetensors"))  # what every checkpoint held before
    full, after = (root / "full.safetensors").stat().st_size, ck.stat().st_size
    print(f"tiny llama (hidden 64, 2 layers), lora r={r} all-linear, 2 stages")
    print(f"  checkpoint weights: full {mib(full)} -> adapter-only {mib(after)} (ratio {after / full:.3f})")
    for d in sorted((lora.run_dir / "ckpt").iterdir()):
        if d.is_dir():
            print(f"    {d.name}: whole checkpoint folder {mib(sum(f.stat().st_size for f in d.iterdir()))}")
    res = json.loads((lora.run_dir / "results.json").read_text())
    print(
        "  disk per stage (results.json costs): "
        + ", ".join(f"{s} {c['disk_mb']:.3f} MiB" for s, c in res["costs"].items())
    )

    def size(p: Path) -> int:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())

    print("exports and load checks (max |logit - run's logit|, loaded with plain transformers / PEFT)")
    final = AutoModelForCausalLM.from_pretrained(str(naive.run_dir / "models" / "task1"))
    d_naive = float((logits(final) - logits(naive.model)).abs().max())
    print(f"  naive hf export task1: {mib(size(naive.run_dir / 'models' / 'task1'))}, max diff {d_naive:.2e}")
    lora.model.base_model.enable_adapter_layers()
    for i, s in enumerate(("task0", "task1")):
        lora.model.base_model.set_adapter(f"stage{i}")
        ref = logits(lora.model)
        d = lora.run_dir / "models" / s
        peft_m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(d))
        merged = AutoModelForCausalLM.from_pretrained(str(d / "merged"))
        adapter_bytes = (d / "adapter_model.safetensors").stat().st_size
        d_peft, d_merged = (float((logits(m) - ref).abs().max()) for m in (peft_m, merged))
        print(
            f"  lora {s}: peft adapter {mib(adapter_bytes)} (max diff {d_peft:.2e}), "
            f"merged {mib(size(d / 'merged'))} (max diff {d_merged:.2e})"
        )


def smollm2(r: int, config_path: str | None) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lifelong.strategies.lora import LoRAParams, add_adapter

    fields = json.loads(Path(config_path).read_text()) if config_path else SMOLLM2_135M
    cfg = AutoConfig.for_model(**{k: v for k, v in fields.items() if k in SMOLLM2_135M})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    full = unique_bytes(dict(model.state_dict(keep_vars=True)))
    model = add_adapter(model, "stage0", LoRAParams(r=r))
    lora = sum(t.numel() * t.element_size() for n, t in model.state_dict().items() if "lora_" in n)
    with_adapter = unique_bytes(dict(model.state_dict(keep_vars=True)))
    print(f"SmolLM2-135M shape ({full // 4:,} parameters, float32), lora r={r} all-linear, one adapter")
    print(
        f"  checkpoint weights: full {mib(with_adapter)} -> adapter-only {mib(lora)} (ratio {lora / with_adapter:.4f})"
    )
    print(f"  hf export (full weights): {mib(full)}; peft export (one stage's adapter): {mib(lora)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--smollm2-config", default=None, help="a SmolLM2-135M config.json (default: its known shape)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tiny(a.r, Path(tmp))
    smollm2(a.r, a.smollm2_config)


if __name__ == "__main__":
    main()
