"""Streams of Super-NaturalInstructions tasks (Wang et al. 2022, "Super-NaturalInstructions: Generalization via
Declarative Instructions on 1600+ NLP Tasks"), as the continual-instruction-tuning papers build them: SAPT (Zhao et
al. 2024) and its successors train on 15 SuperNI tasks one after another and score each by ROUGE-L.

Task files are SuperNI's JSON task format: `Definition` (a list of one string), `Positive Examples` (`input`,
`output`, `explanation`), `Instances` (`id`, `input`, `output`: a list of acceptable outputs). Two layouts:
- SAPT's split release (`CL_Benchmark/SuperNI/<task>/{train,dev,test}.json`, each a task file whose `Instances`
  are that split: 1000 / 100 / 100 in SAPT): train from train.json, eval from test.json;
- one file per task, as in allenai/natural-instructions (`tasks/<task>.json`, or any list of files given as
  `files:`): the instances are shuffled with `seed`, the first `eval_per_task` (default 100) are the eval rows and
  the rest the training pool.

The prompt is SAPT's zero-shot one (`src/cl_dataset.py`, `load_SuperNI_dataset`, without task or dataset prefix as
its scripts run it): `Definition: <definition>\\n\\nNow complete the following example -\\nInput: <input>\\nOutput: `;
with `positive_examples: k`, the first k positive examples are put between the definition and the instance as
`Positive Example <i> -\\nInput: <input>\\nOutput: <output>\\n` (SAPT's few-shot branch). Training targets one of
the instance's outputs (drawn with the seed, as SAPT draws one at random); the eval scores ROUGE-L F of the
generation against the best of all its outputs (scorer `rouge`, rouge-score with Porter stemming, as SuperNI's and
SAPT's `compute_metrics.py`)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

from pydantic import Field

from lifelong.benchmarks import BENCHMARKS
from lifelong.benchmarks.base import Benchmark, BenchmarkError, BenchmarkParams, read_json, sample, write_rows

SAPT_TASKS = [
    "task1572_samsum_summary",
    "task363_sst2_polarity_classification",
    "task1290_xsum_summarization",
    "task181_outcome_extraction",
    "task002_quoref_answer_generation",
    "task1510_evalution_relation_extraction",
    "task639_multi_woz_user_utterance_generation",
    "task1729_personachat_generate_next",
    "task073_commonsenseqa_answer_generation",
    "task1590_diplomacy_text_generation",
    "task748_glucose_reverse_cause_event_detection",
    "task511_reddit_tifu_long_text_summarization",
    "task591_sciq_answer_generation",
    "task1687_sentiment140_classification",
    "task875_emotion_classification",
]


class SuperNIParams(BenchmarkParams):
    files: Optional[list[str]] = Field(default=None, min_length=1)
    """SuperNI task files (natural-instructions' `tasks/<task>.json`), in stream order, instead of `path` + an
    order; relative paths are read from the config's folder. The stage of a file is named by its file name."""
    positive_examples: int = Field(default=0, ge=0, le=10)
    """Positive examples of the task put in every prompt (SAPT trains zero-shot: 0)."""
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    """Generation budget of the ROUGE-L eval (SAPT generates up to 50 tokens)."""
    use_stemmer: bool = True
    """Porter stemming in ROUGE (SuperNI's and SAPT's metric use it)."""


@BENCHMARKS.register("superni")
class SuperNI(Benchmark):
    """Super-NaturalInstructions task files, one stage per task (SAPT's 15-task orders 1-2, or any list of task
    files); SAPT's definition + input prompt; ROUGE-L."""

    Params = SuperNIParams
    tasks = list(SAPT_TASKS)
    orders = {
        1: list(SAPT_TASKS),
        2: [
            "task748_glucose_reverse_cause_event_detection",
            "task073_commonsenseqa_answer_generation",
            "task1590_diplomacy_text_generation",
            "task639_multi_woz_user_utterance_generation",
            "task1572_samsum_summary",
            "task1687_sentiment140_classification",
            "task591_sciq_answer_generation",
            "task363_sst2_polarity_classification",
            "task1510_evalution_relation_extraction",
            "task1729_personachat_generate_next",
            "task181_outcome_extraction",
            "task511_reddit_tifu_long_text_summarization",
            "task002_quoref_answer_generation",
            "task1290_xsum_summarization",
            "task875_emotion_classification",
        ],
    }

    def task_list(self, params: Any) -> list[str]:
        if params.tasks is not None:  # any SuperNI task name, not only SAPT's 15
            if len(set(params.tasks)) != len(params.tasks):
                raise BenchmarkError("tasks", "a task is listed twice; list each task once")
            if params.order is not None:
                raise BenchmarkError("order", "give `order` or `tasks`, not both")
            return list(params.tasks)
        return super().task_list(params)

    def expand(self, params: Any, base_dir: Path) -> list[dict]:
        if params.hub is not None:
            raise BenchmarkError("hub", "superni reads local task files; give `path` or `files`")
        if params.files is not None:
            if params.path is not None or params.order is not None or params.tasks is not None:
                raise BenchmarkError("files", "give `files`, or `path` with `order`/`tasks`, not both")
            sources = []
            for f in params.files:
                p = Path(f).expanduser()
                p = p if p.is_absolute() else (base_dir / p).resolve()
                sources.append((p.stem, ("file", p)))
            field = "files"
        else:
            if params.path is None:
                raise BenchmarkError("path", "give `path` (a folder of SuperNI task files) or `files` (a list of them)")
            root = self.local_root(params, base_dir)
            sources = [(t, self._locate(root, t)) for t in self.task_list(params)]
            field = "path"
        names = [n for n, _ in sources]
        if len(set(names)) != len(names):
            raise BenchmarkError(
                field, f"two task files share the name {_first_duplicate(names)!r}; stage names must differ"
            )
        return [self._stage(name, where, params, field) for name, where in sources]

    @staticmethod
    def _locate(root: Path, task: str) -> tuple[str, Path]:
        for base in (root, root / "SuperNI", root / "CL_Benchmark" / "SuperNI"):
            if (base / task / "train.json").is_file():
                return ("split", base / task)
        for cand in (root / f"{task}.json", root / "tasks" / f"{task}.json"):
            if cand.is_file():
                return ("file", cand)
        raise BenchmarkError(
            "path",
            f"no task {task} under {root}: expected {task}/train.json and test.json (SAPT's layout) or {task}.json / "
            f"tasks/{task}.json (natural-instructions' layout)",
        )

    def _stage(self, name: str, where: tuple[str, Path], params: Any, field: str) -> dict:
        kind, p = where
        if kind == "split":
            train_task = _task_file(p / "train.json", field)
            test_task = _task_file(p / "test.json", field)
            train_pool, test_pool = train_task["Instances"], test_task["Instances"]
            n_eval = params.eval_per_task
        else:
            train_task = test_task = _task_file(p, field)
            pool = list(train_task["Instances"])
            random.Random(f"{params.seed}:{name}/split").shuffle(pool)
            n_test = params.eval_per_task or 100
            if len(pool) <= n_test:
                raise BenchmarkError(
                    "eval_per_task",
                    f"{p}: {len(pool)} instances leave none for training after {n_test} eval rows; lower eval_per_task",
                )
            test_pool, train_pool, n_eval = pool[:n_test], pool[n_test:], None
        rng = random.Random(f"{params.seed}:{name}/targets")
        train = [
            {
                "prompt": _prompt(train_task, inst["input"], params.positive_examples),
                "response": rng.choice(inst["output"]),
            }
            for inst in sample(train_pool, params.train_per_task, params.seed, f"{name}/train")
        ]
        test = [  # several references: summarization rows, prompted with the SuperNI prompt itself
            {"document": _prompt(test_task, inst["input"], params.positive_examples), "summary": list(inst["output"])}
            for inst in sample(test_pool, n_eval, params.seed, f"{name}/test")
        ]
        eval_params = {"variant": "rougeL", "use_stemmer": params.use_stemmer, "max_new_tokens": params.max_new_tokens}
        return {
            "name": name,
            "kind": "instruct",
            "data": {"path": write_rows("superni", f"{name}.train", train), "format": "prompt_response"},
            "eval": {
                "path": write_rows("superni", f"{name}.test", test),
                "format": "summarization",
                "template": "{document}",
                "scorer": "rouge",
                "params": eval_params,
            },
        }


def _first_duplicate(names: list[str]) -> str:
    return next(n for k, n in enumerate(names) if n in names[:k])


def _task_file(path: Path, field: str) -> dict:
    """A SuperNI task file, checked: Definition, Instances with input and outputs (a string output becomes a list)."""
    data = read_json(path, field)
    if not isinstance(data, dict):
        raise BenchmarkError(field, f"{path}: not a SuperNI task file (a JSON object with Definition and Instances)")
    definition = data.get("Definition")
    if isinstance(definition, list):
        definition = definition[0] if definition and isinstance(definition[0], str) else None
    if not isinstance(definition, str):
        raise BenchmarkError(field, f"{path}: 'Definition' must be a string or a list of one string")
    instances = data.get("Instances")
    if not isinstance(instances, list) or not instances:
        raise BenchmarkError(field, f"{path}: 'Instances' must be a non-empty list")
    clean = []
    for k, inst in enumerate(instances):
        out = inst.get("output") if isinstance(inst, dict) else None
        out = [out] if isinstance(out, str) else out
        if not (
            isinstance(inst, dict)
            and isinstance(inst.get("input"), str)
            and isinstance(out, list)
            and out
            and all(isinstance(o, str) for o in out)
        ):
            raise BenchmarkError(field, f"{path}: instance {k} needs an 'input' string and an 'output' list of strings")
        clean.append({"input": inst["input"], "output": out})
    examples = data.get("Positive Examples") or []
    return {"Definition": definition, "Instances": clean, "Positive Examples": examples}


def _prompt(task: dict, text: str, k: int) -> str:
    """SAPT's SuperNI prompt: definition, `k` positive examples, then the instance."""
    out = "Definition: " + task["Definition"].strip() + "\n\n"
    for i, ex in enumerate(task["Positive Examples"][:k]):
        out += f"Positive Example {i + 1} -\nInput: {str(ex['input']).strip()}\nOutput: {str(ex['output']).strip()}\n"
    return out + "Now complete the following example -\nInput: " + text + "\nOutput: "
