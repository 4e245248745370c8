"""Agreement of the `standard_cl` / `long_sequence` prompts with O-LoRA's own data code, run on the same files.

O-LoRA builds a prompt in two places: its dataset builder (`src/uie_dataset_lora.py`,
`UIEInstructions.load_<category>_dataset`: instruction + options + "{0}" + "\\nAnswer:") and its collator
(`src/uie_collator.py`, `DataCollatorForUIE.get_instruction`: the Task/Dataset prefix, then `.format(sentence)`).
This script imports both modules from a checkout of github.com/cmnfriend/O-LoRA (nothing of them is copied into
lifelong), feeds them every row of every task folder present under `<checkout>/CL_Benchmark` (or under `--data`),
with the instruction file and flags of O-LoRA's scripts (`configs/instruction_config.json`,
`--instruction_strategy single --add_task_name True --add_dataset_name True`), and compares each prompt and target
with what lifelong's expanded stage gives for the same row (through lifelong's own eval-item builder). Prints, per
task, rows compared, rows equal, and O-LoRA rows lifelong leaves out (a label outside labels.json: MNLI's test set
has 131 labelled "-", which O-LoRA keeps and no prediction can match).

    python bench/olora_prompt_agreement.py /path/to/O-LoRA [--data tests/data/benchmarks/olora]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import types
import warnings
from pathlib import Path


def load_module(path: Path, name: str) -> types.ModuleType:
    """Import an O-LoRA module. Its collator takes typing names from `transformers.data.data_collator import *`,
    which newer transformers no longer re-export: they are put in its namespace first."""
    import dataclasses
    import typing

    from transformers import PreTrainedTokenizerBase
    from transformers.utils import PaddingStrategy

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__dict__.update({k: getattr(typing, k) for k in ("Any", "Optional", "Union", "List", "Dict")})
    mod.__dict__.update(
        dataclass=dataclasses.dataclass,
        PreTrainedTokenizerBase=PreTrainedTokenizerBase,
        PaddingStrategy=PaddingStrategy,
    )
    spec.loader.exec_module(mod)
    return mod


def olora_prompts(checkout: Path, data: Path, category: str, dataset: str, split: str) -> list[tuple[str, str]]:
    """(prompt, target) of every row, as O-LoRA's builder and collator make them."""
    ds_mod = load_module(checkout / "src" / "uie_dataset_lora.py", "olora_uie_dataset")
    col_mod = load_module(checkout / "src" / "uie_collator.py", "olora_uie_collator")
    builder = ds_mod.UIEInstructions.__new__(ds_mod.UIEInstructions)  # no dataset build: only its row methods
    config = types.SimpleNamespace(num_examples=None, over_sampling=None, instruction_strategy="single")
    instruction_file = str(checkout / "configs" / "instruction_config.json")
    config.instructions = ds_mod.UIEConfig._parse_instruction(config, instruction_file)
    builder.__dict__["config"] = config
    load = getattr(builder, f"load_{category}_dataset")
    folder = data / category / dataset
    rows = load(str(folder / f"{split}.json"), str(folder / "labels.json"), dataset, "full", None, split)
    collator = col_mod.DataCollatorForUIE(tokenizer=None, add_task_name=True, add_dataset_name=True)
    return [(collator.get_instruction(ex), ex["Instance"]["label"]) for ex in rows]


def lifelong_prompts(bench: str, task: str, data: Path) -> list[tuple[str, str]]:
    from lifelong.data import load_rows
    from lifelong.data.formats import to_eval_items
    from lifelong.validation import validate_raw

    bench_cfg = {"name": bench, "path": str(data), "tasks": [task]}
    raw = {"name": "agree", "model": {"tiny": "llama"}, "benchmark": bench_cfg}
    stage = validate_raw(raw).stages[0]
    task_cfg = stage.eval
    assert task_cfg is not None
    items = to_eval_items(load_rows(task_cfg), "classification", task_cfg, task_cfg.labels)
    return [(it["prompt"], it["targets"][0]) for it in items]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path, help="a checkout of github.com/cmnfriend/O-LoRA")
    ap.add_argument("--data", type=Path, help="a CL_Benchmark folder (default: the checkout's)")
    args = ap.parse_args()
    data = args.data or args.checkout / "CL_Benchmark"
    if (data / "CL_Benchmark").is_dir():
        data = data / "CL_Benchmark"
    os.environ.setdefault("LIFELONG_CACHE", tempfile.mkdtemp(prefix="olora-agree-"))
    sys.path.insert(0, str(args.checkout / "src"))

    from lifelong.benchmarks._olora import TASKS

    total = equal = 0
    print(f"{'task':10} {'rows':>6} {'equal':>6} {'left out':>8}")
    for task, (category, dataset) in TASKS.items():
        files = [data / category / dataset / f"{s}.json" for s in ("train", "test")]
        if not all(f.is_file() and f.stat().st_size > 100 for f in files):  # missing, or a Git LFS pointer
            print(f"{task:10} {'-':>6} {'-':>6}  (train.json or test.json missing here)")
            continue
        labels = json.loads((data / category / dataset / "labels.json").read_text(encoding="utf-8"))
        everything = olora_prompts(args.checkout, data, category, dataset, "test")
        ref = [(p, t) for p, t in everything if t in labels]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the left-out rows are counted here
            ours = lifelong_prompts("long_sequence", task, data)
        same = sum(a == b for a, b in zip(ref, ours)) if len(ref) == len(ours) else 0
        total, equal = total + len(ref), equal + same
        print(f"{task:10} {len(ref):>6} {same:>6} {len(everything) - len(ref):>8}")
    print(f"{'all':10} {total:>6} {equal:>6}")
    return 0 if total and equal == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
