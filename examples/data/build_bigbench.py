"""Builds the data of examples/bigbench.yaml from the BIG-bench tasks of the `bigbench` 1.0.0 source archive on PyPI.

- `bigbench/benchmark_tasks/<task>/task.json` for the stream's tasks, copied as they are (the `bigbench` benchmark
  reads BIG-bench's own layout): sports_understanding, date_understanding, object_counting.
- `lm_eval_tasks/`: an lm-evaluation-harness task folder (the run's general-ability probe, `include_path`): BIG-bench's
  general_knowledge as `general_knowledge.jsonl` (`inputs`: BIG-bench's zero-shot prompt as the `bigbench` benchmark
  writes it, `choices` in the task's order, `label` the top-scored choice) and `bigbench_general_knowledge.yaml`
  scoring it as lm-eval's own `bigbench_general_knowledge_multiple_choice` does (acc, and acc_norm beside it); its
  documents are read by `loader.py` next to the YAML, so the task does not depend on the working directory.

    TMPDIR=/tmp/bbt pip download --no-deps --no-clean bigbench==1.0.0 -d /tmp/bb   # fails after unpacking
    python examples/data/build_bigbench.py --bigbench /tmp/bbt/pip-download-*/bigbench_*/bigbench [--check]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent
STREAM = ["sports_understanding", "date_understanding", "object_counting"]
PROBE = "general_knowledge"

YAML = """task: bigbench_general_knowledge_local
custom_dataset: !function loader.general_knowledge
test_split: test
output_type: multiple_choice
doc_to_text: inputs
doc_to_target: label
doc_to_choice: choices
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

LOADER = '''"""The documents of bigbench_general_knowledge_local (lm-eval's `custom_dataset`): the JSON lines file beside this
file, whatever the working directory."""

from pathlib import Path
from typing import Any


def general_knowledge(**kwargs: Any) -> Any:
    import datasets

    path = Path(__file__).with_name("general_knowledge.jsonl")
    return datasets.DatasetDict({"test": datasets.load_dataset("json", data_files=str(path), split="train")})
'''


def build(bigbench: Path) -> dict[str, str]:
    """Relative path -> file text of everything this script writes."""
    sys.path.insert(0, str(HERE.parents[1] / "src"))
    from lifelong.benchmarks.bigbench import Conventions

    tasks = bigbench / "benchmark_tasks"
    out = {}
    for t in STREAM:
        out[f"bigbench/benchmark_tasks/{t}/task.json"] = (tasks / t / "task.json").read_text(encoding="utf-8")
    task = json.loads((tasks / PROBE / "task.json").read_text(encoding="utf-8"))
    conv = Conventions(task)
    rows = []
    for ex in task["examples"]:
        row = conv.eval_row(ex, [], mc=True)
        rows.append({"inputs": row["prompt"], "choices": list(ex["target_scores"]), "label": row["answer"]})
    out["lm_eval_tasks/general_knowledge.jsonl"] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    out["lm_eval_tasks/bigbench_general_knowledge.yaml"] = YAML
    out["lm_eval_tasks/loader.py"] = LOADER
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bigbench", type=Path, required=True, help="the bigbench package folder of the sdist")
    ap.add_argument("--check", action="store_true", help="compare with the files here instead of writing")
    args = ap.parse_args()
    files = build(args.bigbench)
    for rel, text in files.items():
        dest = HERE / rel
        if args.check:
            same = dest.is_file() and dest.read_text(encoding="utf-8") == text
            print(f"{'same' if same else 'DIFFERENT'}: {rel}")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
        print(f"wrote {rel}")
    if not args.check:
        shutil.rmtree(HERE / "lm_eval_tasks" / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    main()
