"""TRACE (Wang et al. 2023, "TRACE: A Comprehensive Benchmark for Continual Learning in Large Language Models",
github.com/BeyonderXX/TRACE): eight tasks learned in the paper's order, each scored by its official metric.

Layout (the released `LLM-CL-Benchmark` folder, read by TRACE's `training/main.py` as
`os.path.join(data_path, dataset)` and `LocalJsonFileDataset`): `<root>/<task>/{train,eval,test}.json`, each a JSON
list of `{"prompt", "answer"}`. The prompts already hold TRACE's instructions (`inference/ICL.py` strips them by
length), so they are used as they are; the model learns `answer` after `prompt`. Eval rows come from test.json.

Metrics (TRACE's `evaluations/eval_<task>.py` and `metrics.py`, the numbers of the paper's tables):
- C-STANCE, FOMC, NumGLUE-cm, NumGLUE-ds: accuracy, the generated answer equal to the reference (scorer
  `exact_match` without normalisation; its first line is compared, where TRACE compares the whole decoded text);
- ScienceQA: accuracy of the answer letter, the first character of generation and reference (scorer
  `answer_accuracy`, regex `\\A\\s*(\\S)`; letters compared case-insensitively);
- MeetingBank: ROUGE-L F (scorer `rouge`; TRACE computes it with the `rouge` package, we with `rouge-score`);
- Py150: edit similarity, fuzz.ratio (scorer `edit_similarity` with `literals: codexglue`: the literal
  placeholders `<STR_LIT>`, `<NUM_LIT>`, `<CHAR_LIT>` written back in both strings first, as TRACE does);
- 20Minuten: SARI (scorer `sari`) with the prompt as the source sentence, as TRACE passes its prompts as `sources`
  to `evaluate`'s sari."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from lifelong.benchmarks import BENCHMARKS
from lifelong.benchmarks.base import Benchmark, BenchmarkError, BenchmarkParams, read_json, sample, write_rows

TASKS = ["C-STANCE", "FOMC", "MeetingBank", "Py150", "ScienceQA", "NumGLUE-cm", "NumGLUE-ds", "20Minuten"]

INSTRUCTIONS = {
    "FOMC": "What is the monetary policy stance for the following text? A. dovish, B. hawkish, C. neutral. "
    "Choose one from A, B and C.\n",
    "C-STANCE": "判断以下文本对指定对象的态度，选择一项：A.支持，B.反对，C.中立。输出A，B或者C。\n",
    "ScienceQA": "Choose an answer for the following question and give your reasons.\n\n",
    "NumGLUE-cm": "Solve the following math problem.\n",
    "NumGLUE-ds": "Solve the following math problem.\n",
    "MeetingBank": "Write a summary of the following meeting transcripts.\n",
    "Py150": "Continue writing the code.\n",
    "20Minuten": "Provide a simplified version of the following paragraph in German.\n\n",
}
"""The instruction each released prompt starts with (TRACE's `inference/ICL.py`, `TASK_PROMT`), for reference and
checks; the loader takes prompts from the files."""

EPOCHS = {"C-STANCE": 5, "FOMC": 3, "MeetingBank": 7, "Py150": 5, "ScienceQA": 3, "NumGLUE-cm": 5, "NumGLUE-ds": 5,
          "20Minuten": 7}  # fmt: skip
"""Epochs per task of TRACE's `scripts/train_seq_naive.sh` (`--num_train_epochs 5,3,7,5,3,5,5,7`)."""


class TraceParams(BenchmarkParams):
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    """Generation budget of every task's eval (TRACE allows 512 answer tokens; long summaries need more than 64)."""
    paper_epochs: bool = False
    """Give each stage TRACE's epochs (`stages[].train.epochs`: 5, 3, 7, 5, 3, 5, 5, 7); off: the run's `train`."""


def _eval(task: str, max_new: int) -> tuple[str, dict, str]:
    """(scorer, params, format) of a task's official metric."""
    if task in ("C-STANCE", "FOMC", "NumGLUE-cm", "NumGLUE-ds"):
        return "exact_match", {"normalize": False, "max_new_tokens": max_new}, "prompt_response"
    if task == "ScienceQA":
        return (
            "answer_accuracy",
            {"extract": "regex", "pattern": r"\A\s*(\S)", "max_new_tokens": max_new},
            "prompt_response",
        )
    if task == "MeetingBank":
        return "rouge", {"variant": "rougeL", "max_new_tokens": max_new}, "prompt_response"
    if task == "Py150":
        return "edit_similarity", {"max_new_tokens": max_new, "literals": "codexglue"}, "prompt_response"
    return "sari", {"max_new_tokens": max_new}, "simplification"


@BENCHMARKS.register("trace")
class Trace(Benchmark):
    """TRACE's eight tasks (C-STANCE, FOMC, MeetingBank, Py150, ScienceQA, NumGLUE-cm, NumGLUE-ds, 20Minuten) from
    its released folder, in the paper's order; each task scored by its official metric."""

    Params = TraceParams
    tasks = list(TASKS)
    orders = {1: list(TASKS)}

    def expand(self, params: Any, base_dir: Path) -> list[dict]:
        if params.hub is not None:
            raise BenchmarkError("hub", "TRACE is released as a folder (Google Drive), not on the hub; give `path`")
        if params.path is None:
            raise BenchmarkError("path", "give `path`, the released TRACE folder (<task>/{train,eval,test}.json)")
        root = self.local_root(params, base_dir)
        stages = []
        for task in self.task_list(params):
            rows = {s: self._rows(root / task / f"{s}.json", task) for s in ("train", "test")}
            train = sample(rows["train"], params.train_per_task, params.seed, f"{task}/train")
            test = sample(rows["test"], params.eval_per_task, params.seed, f"{task}/test")
            scorer, scorer_params, fmt = _eval(task, params.max_new_tokens)
            if fmt == "simplification":  # SARI's source is the prompt, as TRACE's; the prompt is used as it is
                test_rows = [{"source": r["prompt"], "target": r["response"]} for r in test]
                eval_data = {"format": fmt, "template": "{source}"}
            else:
                test_rows, eval_data = test, {"format": fmt}
            stage: dict[str, Any] = {
                "name": task,
                "kind": "instruct",
                "data": {"path": write_rows("trace", f"{task}.train", train), "format": "prompt_response"},
                "eval": {
                    "path": write_rows("trace", f"{task}.test", test_rows),
                    **eval_data,
                    "scorer": scorer,
                    "params": scorer_params,
                },
            }
            if params.paper_epochs:
                stage["train"] = {"epochs": EPOCHS[task]}
            stages.append(stage)
        return stages

    @staticmethod
    def _rows(path: Path, task: str) -> list[dict]:
        if not path.parent.is_dir():
            raise BenchmarkError(
                "path",
                f"no folder {path.parent} (task {task}); the folder must hold TRACE's "
                "released layout <task>/{train,eval,test}.json",
            )
        data = read_json(path)
        if not isinstance(data, list) or not data:
            raise BenchmarkError("path", f"{path}: expected a non-empty JSON list of {{prompt, answer}} rows")
        out = []
        for k, r in enumerate(data):
            if not (isinstance(r, dict) and isinstance(r.get("prompt"), str) and isinstance(r.get("answer"), str)):
                raise BenchmarkError("path", f"{path}: row {k} is not a {{prompt, answer}} object of strings")
            out.append({"prompt": r["prompt"], "response": r["answer"]})
        return out
