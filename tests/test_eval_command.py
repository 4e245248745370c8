"""`lifelong eval` (issue 16 item 1): a model scored without training gives exactly the cells a run computes for
the same model and tasks (tasks files, a run config's suite, a run's stage), with each score's bootstrap CI
over its items; no training state is built; bad input is one located message per problem and writes
nothing, before any model loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from lifelong.cli import main
from lifelong.eval.metrics import score_ci
from lifelong.eval.results import read_examples
from lifelong.eval.scorers import SCORERS
from lifelong.testing import tiny_llama, tiny_run_config, tiny_tokenizer

TASKS = [  # one task per scorer family: choice over a label set, generation, perplexity
    {
        "name": "yesno",
        "rows": [{"text": f"t0 {w}?", "label": lab} for w, lab in [("abc", "yes"), ("def", "no"), ("fad", "no")]],
        "labels": ["no", "yes"],
    },
    {"name": "arith", "rows": [{"prompt": "2+2?", "response": "4"}, {"prompt": "1+2?", "response": "3"}]},
    {"name": "ppl", "rows": [{"text": "the cat sat on the mat"}, {"text": "a dog ran home"}]},
]
TASKS[1]["params"] = {"max_new_tokens": 2}
BOOT, BATCH = 50, 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model saved to a folder, a tasks file, and a two-stage run from that model with the tasks as its
    probes (every stage exported, so the first stage's model is an export and the last one a checkpoint)."""
    from lifelong import api
    from lifelong.validation import validate_raw

    root = tmp_path_factory.mktemp("evalcmd")
    model = root / "model"
    tiny_llama(seed=3).save_pretrained(str(model))
    tiny_tokenizer().save_pretrained(str(model))
    tasks = root / "tasks.yaml"
    tasks.write_text(yaml.safe_dump(TASKS, sort_keys=False), encoding="utf-8")
    raw = tiny_run_config("naive", n_stages=2, steps=3, output_dir=str(root / "runs"), name="r")
    raw["model"] = {"path": str(model)}
    raw["eval"] = {"batch_size": BATCH, "bootstrap": BOOT, "max_examples": 6, "probes": TASKS}
    raw["export"] = {"stages": "all"}
    for s in raw["stages"]:
        s["data"]["rows"] = s["data"]["rows"][:16]
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    api.run(validate_raw(raw), report=False)
    return {"root": root, "model": model, "tasks": tasks, "config": config, "run": root / "runs" / "r"}


def _run_row(run: Path, row: str) -> dict[str, float]:
    res = json.loads((run / "results.json").read_text())
    return {t["name"]: v for t, v in zip(res["tasks"], res["matrix"][res["rows"].index(row)])}


def _eval(args: list[str], capsys: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["eval", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _scores(out: Path) -> dict[str, float]:
    return {t["name"]: t["score"] for t in json.loads((out / "results.json").read_text())["tasks"]}


def test_tasks_file_equals_the_runs_baseline_row(setup: dict[str, Path], capsys: Any, tmp_path: Path) -> None:
    out = tmp_path / "ev"
    rc, printed, err = _eval(
        [
            str(setup["model"]),
            "--tasks",
            str(setup["tasks"]),
            "--out",
            str(out),
            "--batch-size",
            str(BATCH),
            "eval.max_examples=6",
            f"eval.bootstrap={BOOT}",
        ],
        capsys,
    )
    assert rc == 0, err
    baseline = _run_row(setup["run"], "baseline")
    assert _scores(out) == {t["name"]: baseline[t["name"]] for t in TASKS}  # exactly the run's cells

    res = json.loads((out / "results.json").read_text())
    run_stats = json.loads((setup["run"] / "per_example.json").read_text())
    per_example = json.loads((out / "per_example.json").read_text())
    for t in res["tasks"]:  # the run's layout, the same statistics, and a CI over them
        assert set(t) >= {"name", "metric", "unit", "higher_is_better", "n", "score", "ci95"}
        stats = per_example[t["name"]]["model"]
        assert stats == run_stats[t["name"]]["baseline"] and len(stats) == t["n"]
        agg = SCORERS.get(t["scorer"]).aggregate
        assert t["ci95"] == score_ci(np.array(stats), agg, BOOT, 0)
        assert t["ci95"][0] <= t["score"] <= t["ci95"][1]
        items = read_examples(out, t["name"], "model")  # per-item records, as a run writes them
        assert items == read_examples(setup["run"], t["name"], "baseline")
        assert [r["stats"] for r in items] == stats
    ppl = next(t for t in res["tasks"] if t["name"] == "ppl")
    assert ppl["higher_is_better"] is False and ppl["ci95"][0] < ppl["ci95"][1]
    assert f"[{ppl['ci95'][0]:.2f}, {ppl['ci95'][1]:.2f}]" in printed  # the table shows the CIs

    from lifelong import api

    record = api.open_run(out)  # a run's readers apply
    assert (
        record.score("ppl", "model") == ppl["score"] and record.examples("ppl", "model") == per_example["ppl"]["model"]
    )


def test_config_scores_the_runs_suite(setup: dict[str, Path], capsys: Any, tmp_path: Path) -> None:
    out = tmp_path / "ev"
    rc, _, err = _eval([str(setup["model"]), "--config", str(setup["config"]), "--out", str(out)], capsys)
    assert rc == 0, err
    assert _scores(out) == _run_row(setup["run"], "baseline")  # stage tasks (shared label sets) and probes


@pytest.mark.parametrize("stage", ["task0", "task1", None])
def test_a_runs_stage_equals_its_matrix_row(
    setup: dict[str, Path], capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: Any
) -> None:
    """task0 loads from its export (its stage-end checkpoint was replaced), task1 from its checkpoint; RUN_DIR
    alone is the last stage. The run's own suite is the default; no accelerator is built."""
    import accelerate

    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("lifelong eval built an Accelerator")

    monkeypatch.setattr(accelerate.Accelerator, "__init__", refuse)
    run = setup["run"]
    assert not (run / "ckpt" / "stage0-end").exists() and (run / "models" / "task0" / "config.json").exists()
    out = tmp_path / "ev"
    model = f"{run}:{stage}" if stage else str(run)
    rc, _, err = _eval([model, "--out", str(out)], capsys)
    assert rc == 0, err
    row = stage or "task1"
    assert _scores(out) == _run_row(run, row) != _run_row(run, "baseline")  # that stage's model, not the base
    per_example = json.loads((out / "per_example.json").read_text())
    assert per_example["task0"][row] == json.loads((run / "per_example.json").read_text())["task0"][row]
    for task in ("task0", "yesno", "arith", "ppl"):  # the same audit records, item by item
        assert read_examples(out, task, row) == read_examples(run, task, row)
    assert sorted(p.name for p in out.iterdir() if p.suffix) == ["per_example.json", "results.json"]  # no ckpt


def test_the_model_is_scored_in_eval_mode_without_gradients(setup: dict[str, Path], tmp_path: Path) -> None:
    from lifelong.eval.scorers.base import Scorer
    from lifelong.evaluate import evaluate, plan

    seen: list[tuple[bool, bool, bool]] = []

    class Observe(Scorer):
        formats = ("text",)

        def score(self, lm: Any, items: list[dict]) -> np.ndarray:
            seen.append((torch.is_inference_mode_enabled(), lm.model.training, torch.is_grad_enabled()))
            return np.zeros((len(items), 1))

    SCORERS.register("observe_mode")(Observe)
    try:
        tasks = [{"name": "o", "rows": [{"text": "abc"}], "scorer": "observe_mode"}]
        evaluate(plan(str(setup["model"]), tasks=tasks), tmp_path / "ev")
    finally:
        SCORERS.unregister("observe_mode")
    assert seen == [(True, False, False)]


BAD: dict[str, tuple[str, list[str]]] = {  # case -> (tasks file, located messages it must print)
    "unknown_key": ("- name: a\n  rows: [{text: x}]\n  colour: red\n", [":3: tasks.0.colour: unknown key"]),
    "unknown_scorer": (
        "- name: a\n  rows: [{text: x}]\n  scorer: perplexty\n",
        [":3: tasks.0.scorer: ", "did you mean 'perplexity'"],
    ),
    "scorer_params": (
        "- name: a\n  rows: [{prompt: x, response: y}]\n  scorer: exact_match\n  params: {max_new_tokens: many}\n",
        [":4: tasks.0.params.max_new_tokens: "],
    ),
    "missing_file_and_duplicate": (
        "- name: a\n  rows: [{text: x}]\n- name: a\n  path: nowhere.jsonl\n",
        [":4: tasks.1.path: no such file or folder 'nowhere.jsonl'", ":3: tasks.1: task name 'a' is already used"],
    ),
    "auto_scorer_params": (  # `scorer: auto` picks choice for these rows, which takes no max_new_tokens
        "- name: a\n  rows: [{text: x, label: y}]\n  params: {max_new_tokens: 4}\n",
        [":3: tasks.0.params.max_new_tokens: unknown key"],
    ),
    "bad_row": ("- name: a\n  rows: [{text: x, label: y}, {text: z}]\n", [":1: tasks.0: inline row 1: "]),
    "retrieve": (
        "- name: a\n  rows: [{text: x}]\n  retrieve: {k: 2}\n",
        [":1: task 'a' retrieves passages from a run's memory"],
    ),
    "not_a_list": ("name: a\nrows: [{text: x}]\n", [":1: the tasks file is a YAML list of eval tasks"]),
    "bad_yaml": ("- name: a\n  rows: [{text: x}\n", [": not valid YAML"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_tasks_files_are_located_and_write_nothing(
    case: str, setup: dict[str, Path], capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lifelong.models

    def no_load(*a: Any, **k: Any) -> None:
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr(lifelong.models, "load_model_and_tokenizer", no_load)
    monkeypatch.chdir(tmp_path)
    text, wanted = BAD[case]
    tasks = tmp_path / "bad.yaml"
    tasks.write_text(text, encoding="utf-8")
    rc, _, err = _eval([str(setup["model"]), "--tasks", str(tasks)], capsys)
    assert rc == 2 and "Traceback" not in err
    for w in wanted:
        assert w in err, err
    assert err.startswith(f"error: {tasks}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no evals/ folder, nothing half-written


def test_bad_model_and_out_are_refused_before_loading(
    setup: dict[str, Path], capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lifelong.models

    def no_load(*a: Any, **k: Any) -> None:
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr(lifelong.models, "load_model_and_tokenizer", no_load)
    monkeypatch.chdir(tmp_path)
    tasks = str(setup["tasks"])
    cases = [
        (["no/such/model-dir", "--tasks", tasks], "MODEL no/such/model-dir: no such folder or file"),
        ([str(setup["tasks"]), "--tasks", tasks], "a file, but not a .gguf model"),
        ([f"{setup['run']}:task9", "--tasks", tasks], "run r has no stage 'task9'; its stages: task0, task1"),
        ([str(setup["model"])], "what to score: --tasks EVAL.yaml"),
        ([str(setup["model"]), "--tasks", tasks, "eval.bootstrap=-1"], "key=value overrides: eval.bootstrap"),
    ]
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep")
    cases.append(([str(setup["model"]), "--tasks", tasks, "--out", str(full)], "already exists and is not empty"))
    for args, message in cases:
        rc, _, err = _eval(args, capsys)
        assert rc == 2 and message in err, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"] and (full / "x").read_text() == "keep"
