"""The `bigbench` benchmark's prompts against BIG-bench's own formatting, over every JSON task of a BIG-bench copy.

BIG-bench's `bigbench/api/json_task.py` imports TensorFlow, so its two pure formatting functions
(`default_format_fn`, `make_nshot_dataset`) are taken from that file's syntax tree and run as they are; every
example of every task is formatted by them and by `lifelong.benchmarks.bigbench.Conventions`, and the texts are
compared character for character: the zero-shot query (task prefix + BIG-bench's input), the answer choices and
their order, the targets, and a 2-shot prompt built from the same shot examples.

    TMPDIR=/tmp/bbt pip download --no-deps --no-clean bigbench==1.0.0 -d /tmp/bb   # fails after unpacking;
    .venv/bin/python bench/bigbench_prompts_vs_reference.py /tmp/bbt/pip-download-*/bigbench_*/bigbench [N]

N: at most N examples per task (default all: 2.6 million examples, about 8 minutes on one core).
"""

from __future__ import annotations

import ast
import copy
import json
import sys
from pathlib import Path

import numpy as np

from lifelong.benchmarks.bigbench import Conventions


def reference_functions(bigbench: Path) -> dict:
    """`default_format_fn` and `make_nshot_dataset` of BIG-bench's json_task.py, compiled from its source."""
    src = (bigbench / "api" / "json_task.py").read_text()
    tree = ast.parse(src)
    keep = [
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("default_format_fn", "make_nshot_dataset")
    ]
    module = ast.Module(body=keep, type_ignores=[])
    scope: dict = {"np": np, "copy": copy, "Dict": dict, "Any": object, "List": list, "Optional": object}
    exec(compile(module, str(bigbench / "api" / "json_task.py"), "exec"), scope)  # noqa: S102 (the reference's own code)
    return scope


def main(bigbench: Path, per_task: int) -> None:
    ref = reference_functions(bigbench)
    tasks = sorted((bigbench / "benchmark_tasks").glob("**/task.json"))
    n_tasks = n_examples = n_same = n_shot = n_shot_same = 0
    first_diff = None
    for path in tasks:
        task = json.loads(path.read_text())
        if "examples" not in task:
            continue
        n_tasks += 1
        fmt = Conventions(task)
        kw = {
            "input_prefix": task.get("example_input_prefix", "\nQ: "),
            "output_prefix": task.get("example_output_prefix", "\nA: "),
            "choice_prefix": task.get("choice_prefix", "\n  choice: "),
            "append_choices_to_input": task.get("append_choices_to_input", True),
            "random_seed": 42,
        }
        formatted = []
        for ex in task["examples"][:per_task]:
            try:
                theirs = ref["default_format_fn"](copy.deepcopy(ex), **kw)
            except ValueError:
                continue  # BIG-bench itself refuses the example (no correct choice)
            formatted.append(theirs)
            n_examples += 1
            mc = "target_scores" in ex
            ours = fmt.eval_row(ex, [], mc)
            prompt = ours["prompt"] if mc else ours["question"]
            same = prompt + fmt.answer_prefix == fmt.task_prefix + theirs["input"] or (
                # a prompt that does not end in the output prefix's whitespace keeps its text unmoved
                prompt == fmt.task_prefix + theirs["input"]
            )
            if mc:
                same = same and [o[len(fmt.answer_prefix) :] for o in ours["options"]] == theirs["choice"]
                scores = ex["target_scores"]  # graded by the score of the choice: the answer is a top one
                same = same and scores[theirs["choice"][ours["answer"]]] == max(scores.values())
            else:
                same = same and [a[len(fmt.answer_prefix) :] for a in ours["answers"]] == theirs["target"]
            n_same += same
            if not same and first_diff is None:
                first_diff = (path, ex, ours, theirs)
        if len(formatted) >= 3:  # 2 shots: BIG-bench's separator and shot text, with the same shots given to both
            sep = task.get("few_shot_example_separator", "\n")
            q, shots = formatted[0], formatted[1:3]
            theirs_2 = fmt.task_prefix + sep.join(s["input"] + s["target"][0] for s in shots) + sep + q["input"]
            ex = task["examples"][0]
            ours_2 = fmt.eval_row(ex, [(s["input"], s["target"][0]) for s in shots], "target_scores" in ex)
            text = (ours_2.get("prompt") or ours_2["question"]) + fmt.answer_prefix
            n_shot += 1
            n_shot_same += text == theirs_2 or text[: len(text) - len(fmt.answer_prefix)] == theirs_2
    print(f"tasks with examples: {n_tasks}")
    print(f"0-shot examples identical (prompt, choices and order, targets): {n_same} / {n_examples}")
    print(f"2-shot prompts identical: {n_shot_same} / {n_shot}")
    if first_diff is not None:
        path, ex, ours, theirs = first_diff
        print(f"first difference: {path}\n  ours:   {json.dumps(ours)[:300]}\n  theirs: {json.dumps(theirs)[:300]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 10**9)
