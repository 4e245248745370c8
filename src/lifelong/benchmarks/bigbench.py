"""BIG-bench JSON tasks as a stream (Srivastava et al. 2022, "Beyond the Imitation Game: Quantifying and
extrapolating the capabilities of language models"): any list of tasks of a BIG-bench copy in its layout,
`<root>/benchmark_tasks/<task>/task.json` (a subtask: `<task>/<subtask>/task.json`), one stage per task, in the
order listed. BIG-bench has no training split: each task's examples (duplicates dropped, as BIG-bench drops them)
are shuffled with the seed, the first `eval_fraction` (at most `eval_per_task`) are its eval task and the rest
(at most `train_per_task`) its training rows.

Prompts follow BIG-bench's JSON-task conventions (`bigbench/api/json_task.py`), read from each task.json:
`task_prefix` + `example_input_prefix` (default "\\nQ: ") + input [+ `choice_prefix` (default "\\n  choice: ")
before each choice, in the order `numpy.random.RandomState(42).permutation(sorted(choices))`, when
`append_choices_to_input` (default true)] + `example_output_prefix` (default "\\nA: "); with `shots`, that many
training examples (input and first target) come first, joined by `few_shot_example_separator` (default "\\n").
Whitespace that ends the prompt is moved to the start of the answer (" 42" after "...\\nA:"), so the text is
BIG-bench's character for character and the answer is tokenized as a word.

Scoring: a task whose `preferred_score` is `multiple_choice_grade` (or `macro_f1`) is scored by `choice` (the
choice of highest log-likelihood, BIG-bench's absolute scoring; its grade is the choice's target score, so tasks
that give several choices credit are scored on the first top choice, said with a warning); generative tasks by
`bigbench_match` (exact_str_match, case_insensitive_str_match, numeric_match_with_0_1_relative_error after
BIG-bench's stop_string / output_regex post-processing), `bleu`, or `rouge` (rouge1, rouge2, rougeLsum), as the
task prefers; a preferred score lifelong does not compute (bleurt, sequence_f1, log_likelihood) falls back to
exact_str_match with a warning.
"""

from __future__ import annotations

import difflib
import json
import random
import warnings
from pathlib import Path
from typing import Any

from pydantic import Field

from lifelong.benchmarks import BENCHMARKS
from lifelong.benchmarks.base import Benchmark, BenchmarkError, BenchmarkParams, read_json, write_rows

MC_SCORES = ("multiple_choice_grade", "macro_f1")
STRING_SCORES = ("exact_str_match", "case_insensitive_str_match", "numeric_match_with_0_1_relative_error")
ROUGE_SCORES = ("rouge1", "rouge2", "rougeLsum")


class BigBenchParams(BenchmarkParams):
    eval_fraction: float = Field(default=0.3, gt=0, lt=1)
    """Share of each task's examples held out as its eval task (at most `eval_per_task`)."""
    shots: int = Field(default=0, ge=0, le=64)
    """Few-shot examples in front of every eval prompt, drawn from the task's training rows with `seed`."""
    max_new_tokens: int = Field(default=32, ge=1, le=4096)
    """Generation budget of generative tasks."""


@BENCHMARKS.register("bigbench")
class BigBench(Benchmark):
    """BIG-bench JSON tasks (`tasks:` any list; `path:` a BIG-bench copy): choice for multiple choice, the task's
    preferred string metric, BLEU or ROUGE for generative tasks."""

    Params = BigBenchParams

    def expand(self, params: Any, base_dir: Path) -> list[dict]:
        if params.order is not None:
            raise BenchmarkError("order", "BIG-bench has no published task orders; list the tasks in `tasks`")
        if params.hub is not None:
            raise BenchmarkError("hub", "bigbench reads BIG-bench's JSON tasks from a local copy; give `path`")
        if not params.tasks:
            raise BenchmarkError("tasks", "list the BIG-bench tasks of the stream, e.g. [date_understanding, navigate]")
        root = self.root(params, base_dir)
        stages = []
        for name in params.tasks:
            task = self.read_task(root, name)
            stages.append(self.stage(name, task, params))
        return stages

    # ---- locating tasks ------------------------------------------------------------------------------
    def root(self, params: Any, base_dir: Path) -> Path:
        """The `benchmark_tasks` folder: `path` is it, or holds it (a BIG-bench checkout: `bigbench/
        benchmark_tasks`); without `path`, the installed `bigbench` package's."""
        if params.path is not None:
            top = self.local_root(params, base_dir)
            for cand in (top, top / "benchmark_tasks", top / "bigbench" / "benchmark_tasks"):
                if cand.is_dir() and any(cand.glob("*/task.json")):
                    return cand
            raise BenchmarkError(
                "path",
                f"{top} holds no BIG-bench tasks (<task>/task.json); give a BIG-bench checkout, its "
                "bigbench/benchmark_tasks folder, or the unpacked bigbench sdist",
            )
        import importlib.util

        spec = importlib.util.find_spec("bigbench")
        if spec is not None and spec.submodule_search_locations:
            cand = Path(list(spec.submodule_search_locations)[0]) / "benchmark_tasks"
            if cand.is_dir():
                return cand
        raise BenchmarkError(
            "path",
            "give `path`: a BIG-bench checkout or the bigbench sdist unpacked (its tasks are "
            "bigbench/benchmark_tasks/<task>/task.json); the bigbench package is not installed here",
        )

    def read_task(self, root: Path, name: str) -> dict:
        """The task.json of `name` (`task` or `task/subtask`, also `task:subtask`), checked."""
        rel = name.replace(":", "/")
        path = root / rel / "task.json"
        if not path.is_file():
            known = sorted(p.parent.name for p in root.glob("*/task.json"))
            near = difflib.get_close_matches(rel, known, n=3)
            hint = f"did you mean {', '.join(near)}? " if near else ""
            raise BenchmarkError("tasks", f"no BIG-bench task {name!r} in {root}; {hint}({len(known)} tasks there)")
        data = read_json(path, "tasks")
        if not isinstance(data, dict):
            raise BenchmarkError("tasks", f"{path}: expected a JSON object (a BIG-bench task)")
        if "examples" not in data:
            subs = sorted(p.parent.name for p in (root / rel).glob("*/task.json"))
            raise BenchmarkError(
                "tasks",
                f"{name} is a composite BIG-bench task; list its subtasks instead: "
                + ", ".join(f"{rel}/{s}" for s in subs),
            )
        for key in ("examples", "preferred_score", "metrics"):
            if key not in data:
                raise BenchmarkError("tasks", f"{path}: no field {key!r} (a BIG-bench JSON task has it)")
        data["_path"] = str(path)
        return data

    # ---- one task -------------------------------------------------------------------------------------
    def stage(self, name: str, task: dict, params: Any) -> dict:
        path = task["_path"]
        examples = distinct(task["examples"], path)
        mc = task["preferred_score"] in MC_SCORES
        for k, ex in enumerate(examples):
            if not isinstance(ex, dict) or not isinstance(ex.get("input"), str):
                raise BenchmarkError("tasks", f"{path}: example {k} has no input string")
            if mc and not isinstance(ex.get("target_scores"), dict):
                raise BenchmarkError("tasks", f"{path}: example {k} has no target_scores (multiple choice)")
            if not mc and not isinstance(ex.get("target"), (str, list)):
                raise BenchmarkError("tasks", f"{path}: example {k} has no target (a generative task)")
        order = list(range(len(examples)))
        random.Random(f"{params.seed}:{name}").shuffle(order)
        n_eval = max(1, round(params.eval_fraction * len(examples)))
        if params.eval_per_task is not None:
            n_eval = min(n_eval, params.eval_per_task)
        if n_eval >= len(examples):
            raise BenchmarkError("tasks", f"{name} has {len(examples)} examples, too few to hold some out")
        ev_idx, tr_idx = sorted(order[:n_eval]), sorted(order[n_eval:])
        if params.train_per_task is not None:
            tr_idx = sorted(order[n_eval : n_eval + params.train_per_task])
        fmt = Conventions(task)
        shown = [(fmt.query(examples[i]), fmt.targets(examples[i])[0]) for i in tr_idx]  # BIG-bench's shot text
        rng = random.Random(f"{params.seed}:{name}:shots")
        if params.shots and len(shown) < params.shots:
            raise BenchmarkError("shots", f"{name} has {len(shown)} training rows, fewer than {params.shots} shots")
        evals = []
        for i in ev_idx:
            shots = [shown[j] for j in rng.sample(range(len(shown)), params.shots)] if params.shots else []
            evals.append(fmt.eval_row(examples[i], shots, mc))
        # training answers: the target, or for multiple choice the graded choice (strategyqa's target explains it)
        train = [fmt.row(fmt.task_prefix + fmt.query(examples[i]), fmt.answer(examples[i], mc)) for i in tr_idx]
        stem = name.replace("/", ".").replace(":", ".")
        scorer, sparams = self.scorer(task, fmt, params, name)
        eval_cfg: dict[str, Any] = {
            "path": write_rows("bigbench", f"{stem}.test", evals),
            "name": stem,
            "format": "choice" if mc else "qa",  # qa: several acceptable answers (the prompt is the question)
            "scorer": scorer,
        }
        if not mc:
            eval_cfg["template"] = "{question}"
        if sparams:
            eval_cfg["params"] = sparams
        if mc and any(not one_hot(examples[i]["target_scores"]) for i in ev_idx):
            warnings.warn(
                f"bigbench: {name} credits several choices (target_scores); choice scores the first top choice",
                stacklevel=2,
            )
        train_path = write_rows("bigbench", f"{stem}.train", train)
        return {
            "name": stem,
            "kind": "instruct",
            "data": {"path": train_path, "format": "prompt_response"},
            "eval": eval_cfg,
        }

    @staticmethod
    def scorer(task: dict, fmt: "Conventions", params: Any, name: str) -> tuple[str, dict]:
        pref = task["preferred_score"]
        if pref in MC_SCORES:
            return "choice", {}
        if pref == "bleu":
            return "bleu", {"max_new_tokens": params.max_new_tokens}
        if pref in ROUGE_SCORES:
            return "rouge", {"variant": pref, "max_new_tokens": params.max_new_tokens}
        if pref not in STRING_SCORES:
            warnings.warn(
                f"bigbench: {name} prefers {pref}, which lifelong does not compute; scored by exact_str_match",
                stacklevel=2,
            )
            pref = "exact_str_match"
        out: dict[str, Any] = {"metric": pref, "max_new_tokens": params.max_new_tokens}
        if fmt.answer_prefix:
            out["answer_prefix"] = fmt.answer_prefix
        for key in ("stop_string", "output_regex"):
            if task.get(key) is not None:
                out[key] = task[key]
        return "bigbench_match", out


class Conventions:
    """A task's prompt conventions (`json_task.default_format_fn`, `make_nshot_dataset`)."""

    def __init__(self, task: dict) -> None:
        self.task_prefix = str(task.get("task_prefix", ""))
        self.input_prefix = task.get("example_input_prefix", "\nQ: ")
        self.output_prefix = task.get("example_output_prefix", "\nA: ")
        self.choice_prefix = task.get("choice_prefix", "\n  choice: ")
        self.append_choices = task.get("append_choices_to_input", True)
        self.separator = task.get("few_shot_example_separator", "\n")
        trimmed = self.output_prefix.rstrip()
        self.answer_prefix = self.output_prefix[len(trimmed) :]
        """The output prefix's trailing whitespace: the start of every answer instead of the end of the prompt."""

    def query(self, ex: dict) -> str:
        """`input_prefix + input [+ choices] + output_prefix`, as BIG-bench formats one example."""
        text = ex["input"]
        if "target_scores" in ex and self.append_choices:
            text += self.choice_prefix + self.choice_prefix.join(permuted(list(ex["target_scores"])))
        return self.input_prefix + text + self.output_prefix

    @staticmethod
    def targets(ex: dict) -> list[str]:
        """BIG-bench's `target` list: `target` (a string or list), else the first choice of top score."""
        t = ex.get("target")
        if t is None:
            scores = ex["target_scores"]
            best = max(scores.values())
            return [next(k for k, v in scores.items() if v == best)]
        return [str(x) for x in t] if isinstance(t, list) else [str(t)]

    def answer(self, ex: dict, mc: bool) -> str:
        """What a training row answers: the first target; for multiple choice the top-scored choice (the target
        when it is one)."""
        first = self.targets(ex)[0]
        if not mc or first in ex["target_scores"]:
            return first
        scores = ex["target_scores"]
        return next(c for c in scores if scores[c] == max(scores.values()))

    def row(self, text: str, target: str) -> dict:
        """A prompt/response row of BIG-bench's text `text + target`: the whitespace ending `text` (the output
        prefix's) moved to the start of the response."""
        cut = (
            len(text) - len(self.answer_prefix)
            if self.answer_prefix and text.endswith(self.answer_prefix)
            else len(text)
        )
        return {"prompt": text[:cut], "response": text[cut:] + target}

    def eval_row(self, ex: dict, shots: list[tuple[str, str]], mc: bool) -> dict:
        """An eval item: BIG-bench's few-shot context (each shot's query and first target, then the separator),
        the query; the options (multiple choice) or the targets, after the moved whitespace."""
        context = "".join(q + t + self.separator for q, t in shots)
        base = self.row(self.task_prefix + context + self.query(ex), "")
        moved = base["response"]
        if mc:
            choices = list(ex["target_scores"])
            best = choices.index(self.answer(ex, mc))
            return {"prompt": base["prompt"], "options": [moved + c for c in choices], "answer": best}
        return {"question": base["prompt"], "answers": [moved + t for t in self.targets(ex)]}


def permuted(choices: list[str]) -> list[str]:
    """BIG-bench's order of appended choices: a fresh `RandomState(42)` permutation of the sorted choices."""
    import numpy as np

    return [str(c) for c in np.random.RandomState(seed=42).permutation(sorted(choices))]


def one_hot(scores: dict) -> bool:
    """One choice scores 1 and the others 0."""
    vals = list(scores.values())
    return sorted(vals) == [0] * (len(vals) - 1) + [1]


def distinct(examples: Any, path: str) -> list:
    """The examples without repeats, first occurrences in order (BIG-bench drops duplicates so)."""
    if not isinstance(examples, list) or not examples:
        raise BenchmarkError("tasks", f"{path}: `examples` must be a non-empty list")
    seen, out = set(), []
    for ex in examples:
        key = json.dumps(ex)
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out
