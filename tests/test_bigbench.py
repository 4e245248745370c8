"""The `bigbench` benchmark: BIG-bench JSON tasks (fixtures: real tasks of the `bigbench` 1.0.0 sdist, cut to a few
examples, in its layout) become stages whose prompts are BIG-bench's character for character (task prefix, input
and output prefixes, appended choices in BIG-bench's order, few-shot separator), split by seed, scored by `choice`
or by the task's preferred metric (`bigbench_match`: BIG-bench's post-processing and string metrics)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from lifelong.benchmarks.bigbench import Conventions
from lifelong.configio import ConfigError
from lifelong.data.formats import Formatter
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.bigbench_match import postprocess
from lifelong.testing import tiny_tokenizer
from lifelong.validation import load_config

ROOT = Path(__file__).parent / "data" / "benchmarks" / "bigbench"
TASKS = ROOT / "benchmark_tasks"


def _task(name: str) -> dict:
    return json.loads((TASKS / name / "task.json").read_text())


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))


def _load(tmp_path: Path, bench: dict, **top: Any):
    raw = {"name": "bb", "model": {"tiny": "llama"}, "output_dir": str(tmp_path / "runs"), "benchmark": bench, **top}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return load_config(path)


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


# ---- BIG-bench's prompt conventions ------------------------------------------------------------------------
def test_multiple_choice_prompt_with_appended_choices_in_bigbench_order():
    """Defaults "\\nQ: " / "\\nA: " / "\\n  choice: "; choices appended in RandomState(42)'s permutation of the sorted
    choices ([1, 4, 2, 0, 3] for five); the answer's leading space is the output prefix's."""
    task = _task("emoji_movie")
    ex = task["examples"][0]
    row = Conventions(task).eval_row(ex, [], mc=True)
    assert row["prompt"] == (
        "\nQ: What movie does this emoji describe? 👧🐟🐠🐡"
        "\n  choice: mr. smith goes to washington"
        "\n  choice: the wolf of wall street"
        "\n  choice: se7en"
        "\n  choice: finding nemo"
        "\n  choice: the shining"
        "\nA:"
    )
    assert row["options"] == [" " + c for c in ex["target_scores"]]  # the task's own choice order
    assert row["options"][row["answer"]] == " finding nemo"
    assert Conventions(task).row("\nQ: x\nA: ", "y") == {"prompt": "\nQ: x\nA:", "response": " y"}


def test_task_prefix_and_own_prefixes_without_appended_choices():
    task = _task("sports_understanding")
    ex = task["examples"][0]
    row = Conventions(task).eval_row(ex, [], mc=True)
    assert row["prompt"] == (
        "Determine whether the following statement or statements are plausible or implausible:"
        "\nStatement: Jamal Murray was perfect from the line\nPlausible/implausible?"
    )
    assert row["options"] == [" plausible", " implausible"] and row["answer"] == 0


def test_generative_targets_and_few_shot_separator():
    task = _task("object_counting")
    c = Conventions(task)
    ex, s1, s2 = task["examples"][:3]
    row = c.eval_row(ex, [(c.query(s1), "seven"), (c.query(s2), "three")], mc=False)
    assert row["question"] == (f"\nQ: {s1['input']}\nA: seven\n\nQ: {s2['input']}\nA: three\n\nQ: {ex['input']}\nA:")
    assert row["answers"] == [" three", " 3"]  # every target of the example
    # a prefix that does not end in whitespace keeps the prompt as it is (penguins: " Answer: " ends in one)
    assert (
        Conventions({"example_output_prefix": "\nAssistant:"}).row("x\nAssistant:", " y")["prompt"] == "x\nAssistant:"
    )


# ---- the stream ------------------------------------------------------------------------------------------
def test_stages_split_and_scorers(tmp_path):
    tasks = ["sports_understanding", "object_counting", "arithmetic/2_digit_addition", "penguins_in_a_table"]
    cfg = _load(tmp_path, {"name": "bigbench", "path": str(ROOT), "tasks": tasks, "eval_fraction": 0.25})
    assert [s.name for s in cfg.stages] == [
        "sports_understanding",
        "object_counting",
        "arithmetic.2_digit_addition",
        "penguins_in_a_table",
    ]
    sports, counting, addition, penguins = cfg.stages
    assert sports.eval.scorer == "choice" and sports.eval.format == "choice"
    assert counting.eval.scorer == "bigbench_match" and counting.eval.format == "qa"
    assert counting.eval.params == {"metric": "exact_str_match", "max_new_tokens": 32, "answer_prefix": " "}
    assert addition.eval.params["output_regex"] == "[-+]?\\d+"
    assert penguins.eval.params["stop_string"] == "\n" and penguins.eval.params["output_regex"] == "[\\w]+"
    for s, n in zip(cfg.stages, (12, 12, 12, 10)):
        train, test = _rows(s.data.path), _rows(s.eval.path)
        assert len(test) == round(0.25 * n) and len(train) == n - len(test)
        prompts = {r["prompt"] for r in train}
        assert not prompts & {r.get("prompt", r.get("question")) for r in test}  # held out
    # the same seed gives the same split; another seed another one
    again = _load(tmp_path, {"name": "bigbench", "path": str(ROOT), "tasks": tasks, "eval_fraction": 0.25})
    assert [s.eval.path for s in again.stages] == [s.eval.path for s in cfg.stages]
    other = _load(tmp_path, {"name": "bigbench", "path": str(ROOT), "tasks": tasks, "eval_fraction": 0.25, "seed": 5})
    assert [s.eval.path for s in other.stages] != [s.eval.path for s in cfg.stages]
    capped = _load(
        tmp_path,
        {
            "name": "bigbench",
            "path": str(ROOT / "benchmark_tasks"),
            "tasks": tasks[:1],
            "eval_per_task": 2,
            "train_per_task": 4,
        },
    )
    assert len(_rows(capped.stages[0].eval.path)) == 2 and len(_rows(capped.stages[0].data.path)) == 4


def test_few_shot_eval_prompts_use_training_rows(tmp_path):
    """Shots are training rows, in BIG-bench's shot format (query, answer, separator), after the task prefix."""
    cfg = _load(tmp_path, {"name": "bigbench", "path": str(ROOT), "tasks": ["sports_understanding"], "shots": 2})

    def statement(text: str) -> str:
        return text.split("\nPlausible/implausible?")[0]

    train = {statement(r["prompt"].split("\nStatement: ")[1]) for r in _rows(cfg.stages[0].data.path)}
    for r in _rows(cfg.stages[0].eval.path):
        assert r["prompt"].count("Determine whether") == 1
        parts = r["prompt"].split("\nStatement: ")[1:]
        assert len(parts) == 3
        for shot in parts[:2]:
            text, answer = shot.split("\nPlausible/implausible? ")
            assert text in train and answer in ("plausible\n", "implausible\n")
        assert statement(parts[2]) not in train


# ---- BIG-bench's generative scoring ------------------------------------------------------------------------
def test_postprocess_as_bigbench():
    assert postprocess("42. And then", None, r"[^\.\?\!\;\n]+") == "42"
    assert postprocess("\n7 apples", None, r"[^\.\?\!\;\n]+") == "7 apples"  # the first non-empty run
    assert postprocess("Gwen\nBernard", "\n", r"[\w]+") == "Gwen"
    assert postprocess("\nGwen", "\n", None) == "\nGwen"  # a stop string at position 0 does not cut
    assert postprocess("no digits", None, r"[-+]?\d+") == ""


class FixedLM:
    def __init__(self, texts: list[str]) -> None:
        self.fm = Formatter(tiny_tokenizer())
        self.texts = texts

    def generate(self, ctxs, max_new_tokens=32):
        assert len(ctxs) == len(self.texts)
        return list(self.texts)


def test_bigbench_match_metrics():
    items = [
        {"prompt": "q1", "targets": [" three", " 3"]},
        {"prompt": "q2", "targets": [" 10"]},
        {"prompt": "q3", "targets": [" Gwen"]},
        {"prompt": "q4", "targets": [" 100"]},
    ]
    cls = SCORERS.get("bigbench_match")
    scorer = cls(cls.Params(answer_prefix=" "))
    stats, recs = scorer.score_details(FixedLM([" 3. Yes", " ten", " gwen", " 105"]), items)
    assert scorer.also_reported() == ("case_insensitive_str_match", "numeric_match_with_0_1_relative_error")
    np.testing.assert_array_equal(stats[:, 0], [1, 0, 0, 0])  # exact: "3" is a target
    np.testing.assert_array_equal(stats[:, 1], [1, 0, 1, 0])  # case-insensitive: "gwen"
    np.testing.assert_array_equal(stats[:, 2], [0, 0, 0, 1])  # within 10% of the (first) target: 105
    assert [r["prediction"] for r in recs] == ["3", "ten", "gwen", "105"]
    numeric = cls(cls.Params(metric="numeric_match_with_0_1_relative_error", answer_prefix=" "))
    assert numeric.metric == "numeric_match_with_0_1_relative_error"
    assert numeric.score_details(FixedLM([" 3", " 9.5", " x", " 91"]), items)[0][:, 0].tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="not a Python regular expression"):
        cls.Params(output_regex="[")


def test_a_tiny_run(tmp_path):
    from lifelong.runner import run

    bench = {"name": "bigbench", "path": str(ROOT), "tasks": ["sports_understanding", "arithmetic/2_digit_addition"]}
    cfg = _load(
        tmp_path,
        bench,
        torch_threads=1,
        train={"max_steps": 3, "batch_size": 4, "max_length": 256},
        eval={"bootstrap": 20},
    )
    run(cfg, quiet=True)
    res = json.loads((tmp_path / "runs" / "bb" / "results.json").read_text())
    assert [(t["name"], t["scorer"], t["metric"]) for t in res["tasks"]] == [
        ("sports_understanding", "choice", "accuracy"),
        ("arithmetic.2_digit_addition", "bigbench_match", "exact_str_match"),
    ]
    assert len(res["matrix"]) == 3 and all(v is not None for row in res["matrix"] for v in row)
    assert res["metrics"]["score"]["tasks"] == [t["name"] for t in res["tasks"]]  # one group: both in percent
    rec = json.loads(
        (tmp_path / "runs" / "bb" / "examples" / "sports_understanding" / "baseline.jsonl").read_text().splitlines()[0]
    )
    assert rec["prompt"].startswith("Determine whether the following statement") and rec["options"][0] == " plausible"


# ---- errors ----------------------------------------------------------------------------------------------
def _error(tmp_path: Path, bench: dict) -> str:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, bench)
    return str(e.value)


def test_located_errors(tmp_path):
    msg = _error(tmp_path, {"name": "bigbench", "path": str(ROOT), "tasks": ["sport_understanding"]})
    assert "benchmark.tasks: no BIG-bench task 'sport_understanding'" in msg and "sports_understanding" in msg
    msg = _error(tmp_path, {"name": "bigbench", "path": str(ROOT), "tasks": ["arithmetic"]})
    assert "composite" in msg and "arithmetic/1_digit_subtraction, arithmetic/2_digit_addition" in msg
    msg = _error(tmp_path, {"name": "bigbench", "path": str(ROOT)})
    assert "benchmark.tasks: list the BIG-bench tasks" in msg
    msg = _error(tmp_path, {"name": "bigbench", "path": str(ROOT), "tasks": ["emoji_movie"], "order": 1})
    assert "benchmark.order: BIG-bench has no published task orders" in msg
    msg = _error(tmp_path, {"name": "bigbench", "path": str(tmp_path), "tasks": ["emoji_movie"]})
    assert "benchmark.path:" in msg and "holds no BIG-bench tasks" in msg
    msg = _error(tmp_path, {"name": "bigbench", "tasks": ["emoji_movie"]})
    assert "benchmark.path: give `path`" in msg
    msg = _error(tmp_path, {"name": "bigbench", "hub": "org/x", "tasks": ["emoji_movie"]})
    assert "benchmark.hub:" in msg
