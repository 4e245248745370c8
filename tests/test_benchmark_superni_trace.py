"""`superni` (SuperNI task files: SAPT's split layout and natural-instructions' one-file layout) and `trace` (TRACE's
released folder) over fixtures in those layouts (tests/data/benchmarks/superni, .../trace): orders, prompts,
scorers and their params per task, sampling, located errors, and a tiny-model run of each."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from lifelong.cli import main as cli
from lifelong.configio import ConfigError
from lifelong.validation import validate_raw

DATA = Path(__file__).parent / "data" / "benchmarks"
SAPT_1 = (
    "task1572_samsum_summary task363_sst2_polarity_classification task1290_xsum_summarization "
    "task181_outcome_extraction task002_quoref_answer_generation task1510_evalution_relation_extraction "
    "task639_multi_woz_user_utterance_generation task1729_personachat_generate_next "
    "task073_commonsenseqa_answer_generation task1590_diplomacy_text_generation "
    "task748_glucose_reverse_cause_event_detection task511_reddit_tifu_long_text_summarization "
    "task591_sciq_answer_generation task1687_sentiment140_classification task875_emotion_classification"
).split()  # SAPT gen_script_superni_*.py, order 1
TRACE_ORDER = "C-STANCE FOMC MeetingBank Py150 ScienceQA NumGLUE-cm NumGLUE-ds 20Minuten".split()  # train_seq_naive.sh


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cfg(bench: dict) -> Any:
    return validate_raw({"name": "b", "model": {"tiny": "llama"}, "benchmark": bench}, "<test>", base_dir=Path.cwd())


def _rows(path: Any) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines()]


def _items(task_cfg: Any) -> list[dict]:
    from lifelong.data import load_rows
    from lifelong.data.formats import to_eval_items

    return to_eval_items(load_rows(task_cfg), task_cfg.format, task_cfg)


# ---- superni ------------------------------------------------------------------------------------------------------
def test_superni_orders_and_sapt_prompts() -> None:
    cfg = _cfg({"name": "superni", "path": str(DATA / "superni")})
    assert [s.name for s in cfg.stages] == SAPT_1
    two = _cfg({"name": "superni", "path": str(DATA / "superni"), "order": 2})
    assert sorted(s.name for s in two.stages) == sorted(SAPT_1) and two.stages[0].name.startswith("task748_")
    sst2 = cfg.stages[1]
    folder = DATA / "superni" / "CL_Benchmark" / "SuperNI" / sst2.name
    test = json.loads((folder / "test.json").read_text(encoding="utf-8"))
    definition = test["Definition"][0].strip()
    items = _items(sst2.eval)
    assert [it["prompt"] for it in items] == [
        f"Definition: {definition}\n\nNow complete the following example -\nInput: {inst['input']}\nOutput: "
        for inst in test["Instances"]
    ]
    as_list = [o if isinstance(o, list) else [o] for o in (inst["output"] for inst in test["Instances"])]
    assert [it["targets"] for it in items] == as_list  # SAPT's files hold one output string per instance
    assert sst2.eval.scorer == "rouge"  # type: ignore[union-attr]
    assert sst2.eval.params == {"variant": "rougeL", "use_stemmer": True, "max_new_tokens": 64}  # type: ignore[union-attr]
    train = json.loads((folder / "train.json").read_text(encoding="utf-8"))
    rows = _rows(sst2.data.path)  # type: ignore[union-attr]
    assert [r["response"] for r in rows] == [inst["output"] for inst in train["Instances"]]
    assert rows[0]["prompt"].startswith("Definition: In this task, you are given sentences from movie reviews.")


def test_superni_positive_examples_and_one_file_layout() -> None:
    one = DATA / "superni" / "tasks" / "task363_sst2_polarity_classification.json"
    cfg = _cfg({"name": "superni", "files": [str(one)], "eval_per_task": 3, "positive_examples": 1})
    (stage,) = cfg.stages
    assert stage.name == "task363_sst2_polarity_classification"
    train, test = _rows(stage.data.path), _rows(stage.eval.path)  # type: ignore[union-attr]
    assert len(test) == 3 and len(train) == 5  # 8 instances: 3 held out, 5 to train on
    assert not {r["document"] for r in test} & {r["prompt"] for r in train}  # held-out instances are not trained on
    assert all(isinstance(r["summary"], list) for r in test)  # natural-instructions' output lists: every reference
    assert (
        "\n\nPositive Example 1 -\nInput: It 's a lovely film with lovely performances by Buy and Accorsi .\n"
        "Output: POS\nNow complete the following example -\nInput: " in train[0]["prompt"]
    )
    again = _cfg({"name": "superni", "files": [str(one)], "eval_per_task": 3, "positive_examples": 1})
    assert _rows(again.stages[0].eval.path) == test  # type: ignore[union-attr]
    other = _cfg({"name": "superni", "files": [str(one)], "eval_per_task": 3, "seed": 5})
    assert [r["summary"] for r in _rows(other.stages[0].eval.path)] != [r["summary"] for r in test]  # type: ignore[union-attr]
    tasks = _cfg({"name": "superni", "path": str(DATA / "superni"), "tasks": ["task363_sst2_polarity_classification"]})
    assert len(_rows(tasks.stages[0].eval.path)) == 2  # type: ignore[union-attr]  # the split layout wins: test.json


@pytest.mark.parametrize(
    "bench, match",
    [
        ({"path": "tests/data/benchmarks/superni", "tasks": ["task999_nothing"]}, r"benchmark\.path: no task task999"),
        ({"files": ["tests/data/benchmarks/trace/FOMC/test.json"]}, r"benchmark\.files: .*not a SuperNI task file"),
        ({"files": ["x.json"], "path": "tests/data/benchmarks/superni"}, r"benchmark\.files: give `files`, or"),
        ({}, r"benchmark\.path: give `path` .* or `files`"),
        ({"files": ["tests/data/benchmarks/superni/tasks/task363_sst2_polarity_classification.json"],
          "eval_per_task": 8}, r"benchmark\.eval_per_task: .*8 instances leave none for training"),
    ],
)  # fmt: skip
def test_superni_errors_are_located(bench: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _cfg({"name": "superni", **bench})


# ---- trace --------------------------------------------------------------------------------------------------------
def test_trace_order_prompts_and_official_metrics() -> None:
    from lifelong.benchmarks.trace import INSTRUCTIONS

    cfg = _cfg({"name": "trace", "path": str(DATA / "trace")})
    assert [s.name for s in cfg.stages] == TRACE_ORDER
    metric = {s.name: (s.eval.scorer, s.eval.params.get("normalize"), s.eval.format) for s in cfg.stages}  # type: ignore[union-attr]
    assert metric == {
        "C-STANCE": ("exact_match", False, "prompt_response"),
        "FOMC": ("exact_match", False, "prompt_response"),
        "MeetingBank": ("rouge", None, "prompt_response"),
        "Py150": ("edit_similarity", None, "prompt_response"),
        "ScienceQA": ("answer_accuracy", None, "prompt_response"),
        "NumGLUE-cm": ("exact_match", False, "prompt_response"),
        "NumGLUE-ds": ("exact_match", False, "prompt_response"),
        "20Minuten": ("sari", None, "simplification"),
    }
    for stage in cfg.stages:
        released = json.loads((DATA / "trace" / stage.name / "test.json").read_text(encoding="utf-8"))
        items = _items(stage.eval)
        assert [it["prompt"] for it in items] == [r["prompt"] for r in released]  # TRACE's prompts, as released
        assert all(it["prompt"].startswith(INSTRUCTIONS[stage.name]) for it in items)
        assert [it["targets"] for it in items] == [[r["answer"]] for r in released]
    minuten = _items(cfg.stages[-1].eval)
    assert [it["source"] for it in minuten] == [it["prompt"] for it in minuten]  # SARI's source is the prompt
    epochs = _cfg({"name": "trace", "path": str(DATA / "trace"), "paper_epochs": True})
    assert [s.train.epochs for s in epochs.stages] == [5, 3, 7, 5, 3, 5, 5, 7]  # type: ignore[attr-defined]


def test_trace_scienceqa_scores_the_answer_letter() -> None:
    """TRACE's ScienceQA accuracy compares the first character of generation and reference."""
    from lifelong.eval.scorers import SCORERS

    stage = _cfg({"name": "trace", "path": str(DATA / "trace"), "tasks": ["ScienceQA"]}).stages[0]
    scorer_cls = SCORERS.get(stage.eval.scorer)  # type: ignore[union-attr]
    scorer = scorer_cls(scorer_cls.Params(**stage.eval.params))  # type: ignore[union-attr]
    items = _items(stage.eval)  # references "B\nBecause ..." and "A\nBecause ..."
    lm = SimpleNamespace(
        fm=SimpleNamespace(prompt_ids=lambda p: [0]),
        generate=lambda ctxs, max_new_tokens: ["B. Because copper is a metal.", "B\nBecause winter is cold."],
    )
    assert scorer.score(lm, items)[:, 0].tolist() == [1.0, 0.0]


def test_trace_errors_are_located(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"benchmark\.path: no folder .*C-STANCE \(task C-STANCE\)"):
        _cfg({"name": "trace", "path": str(tmp_path)})
    (tmp_path / "FOMC").mkdir()
    (tmp_path / "FOMC" / "train.json").write_text('[{"prompt": "p", "response": "r"}]', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"benchmark\.path: .*train\.json: row 0 is not a \{prompt, answer\}"):
        _cfg({"name": "trace", "path": str(tmp_path), "tasks": ["FOMC"]})
    with pytest.raises(ConfigError, match=r"benchmark\.hub: TRACE is released as a folder"):
        _cfg({"name": "trace", "hub": "org/trace"})


@pytest.mark.parametrize("name", ["trace", "superni"])
def test_a_tiny_model_runs_it(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench: dict = {"name": name, "path": str(DATA / name), "max_new_tokens": 4}
    if name == "superni":
        bench["tasks"] = SAPT_1[:3]
    raw = {
        "name": f"{name}-tiny",
        "output_dir": str(tmp_path / "runs"),
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "train": {"lr": 1e-3, "batch_size": 4, "max_steps": 1, "max_length": 512},
        "eval": {"batch_size": 8, "bootstrap": 0, "max_examples": 2},
        "benchmark": bench,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    assert cli(["run", str(path), "--quiet"]) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "runs" / f"{name}-tiny" / "results.json").read_text(encoding="utf-8"))
    want = TRACE_ORDER if name == "trace" else SAPT_1[:3]
    assert [t["name"] for t in res["tasks"]] == want and len(res["matrix"]) == len(want) + 1
    metrics = {t["metric"] for t in res["tasks"]}
    assert metrics == (
        {"exact_match", "rougeL", "edit_similarity", "accuracy", "sari"} if name == "trace" else {"rougeL"}
    )
