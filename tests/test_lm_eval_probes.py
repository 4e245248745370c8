"""General-ability probes through lm-evaluation-harness: an lm-eval task over a local dataset file (task YAMLs from
`include_path`), scored on the in-memory model, checked against lm-eval's own `simple_evaluate` with its own
Hugging Face wrapper on the same model (same per-document scores, log-likelihoods, prompts and generations),
and inside a tiny run (the probe sees what the stage taught the model; versions recorded; located errors)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lm_eval")

from lifelong.configio import ConfigError  # noqa: E402
from lifelong.data.formats import Formatter  # noqa: E402
from lifelong.eval import harness  # noqa: E402
from lifelong.eval.lm import HFLM  # noqa: E402
from lifelong.testing import tiny_llama, tiny_run_config, tiny_tokenizer  # noqa: E402
from lifelong.validation import load_config, validate_raw  # noqa: E402

DATA = Path(__file__).parent / "data" / "lm_eval"

SOUNDS = """task: tiny_sounds
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/sounds_test.jsonl
    train: {data}/sounds_train.jsonl
test_split: test
fewshot_split: train
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: label
doc_to_choice: choices
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
  - {{metric: acc_norm, aggregation: mean, higher_is_better: true}}
metadata:
  version: 1.0
"""

SUMS = """task: tiny_sums
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/sums_test.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: answer
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
metadata:
  version: 2.0
"""


SUMS_FILTERED = SUMS.replace("task: tiny_sums", "task: tiny_sums_filtered").replace(
    "metric_list:",
    """filter_list:
  - name: strict
    filter: [{{function: regex, regex_pattern: "^ ?(\\\\d+)$"}}, {{function: take_first}}]
  - name: loose
    filter: [{{function: regex, regex_pattern: "(\\\\d)"}}, {{function: take_first}}]
metric_list:""",
)


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    """A folder of lm-eval task YAMLs over the local dataset files (lm-eval reads `data_files` from the working
    directory, so the YAMLs are written with absolute paths)."""
    d = tmp_path_factory.mktemp("lm_eval_tasks")
    (d / "sounds.yaml").write_text(SOUNDS.format(data=DATA))
    (d / "sums.yaml").write_text(SUMS.format(data=DATA))
    (d / "sums_filtered.yaml").write_text(SUMS_FILTERED.format(data=DATA))
    return d


def _probe(tasks_dir, name, shots, limit, metric=None):
    from lifelong.config import EvalTaskConfig
    from lifelong.eval.tasks import build_task

    params = {"metric": metric} if metric else {}
    cfg = EvalTaskConfig(lm_eval=name, include_path=str(tasks_dir), num_fewshot=shots, limit=limit, params=params)
    return build_task(cfg, name, None, None, None, "eval.probes.0")


def _reference(model, tok, tasks_dir, name, shots, limit):
    """lm-eval's own evaluation of the same model: its HFLM wrapper, simple_evaluate, per-sample logs."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM as RefLM
    from lm_eval.tasks import TaskManager

    ref = RefLM(pretrained=model, tokenizer=tok, batch_size=8, max_length=512)
    out = simple_evaluate(
        model=ref,
        tasks=[name],
        num_fewshot=shots,
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
        fewshot_random_seed=1234,
        task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
    )
    return sorted(out["samples"][name], key=lambda s: s["doc_id"]), out


@pytest.mark.parametrize("shots", [0, 3])
def test_multiple_choice_equals_lm_eval_simple_evaluate(tasks_dir, shots):
    model, tok = tiny_llama(seed=1).eval(), tiny_tokenizer()
    task = _probe(tasks_dir, "tiny_sounds", shots, 25)
    assert task.metric == "acc" and task.scorer.also_reported() == ("acc_norm",) and len(task.items) == 25
    stats, recs = task.scorer.score_details(HFLM(model, Formatter(tok), batch_size=8, max_length=512), task.items)
    ref, out = _reference(model, tok, tasks_dir, "tiny_sounds", shots, 25)
    assert [s["doc_id"] for s in ref] == [it["doc_id"] for it in task.items]
    np.testing.assert_array_equal(stats, [[float(s["acc"]), float(s["acc_norm"])] for s in ref])
    ours = np.array([r["loglikelihoods"] for r in recs])
    theirs = np.array([[float(v[0]) for v in s["filtered_resps"]] for s in ref])
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    assert [r["context"] for r in recs] == [s["arguments"][0][0] for s in ref]  # few-shot examples included
    assert 100 * stats[:, 0].mean() == pytest.approx(100 * out["results"]["tiny_sounds"]["acc,none"])
    if shots:
        assert recs[0]["context"].count("Question:") == shots + 1


def test_generation_equals_lm_eval_simple_evaluate(tasks_dir):
    model, tok = tiny_llama(seed=2).eval(), tiny_tokenizer()
    task = _probe(tasks_dir, "tiny_sums", None, None)
    assert task.metric == "exact_match" and len(task.items) == 24
    stats, recs = task.scorer.score_details(HFLM(model, Formatter(tok), batch_size=8, max_length=512), task.items)
    ref, _ = _reference(model, tok, tasks_dir, "tiny_sums", 0, None)
    assert [r["prediction"] for r in recs] == [s["filtered_resps"][0] for s in ref]
    assert any(r["prediction"] for r in recs)  # the random model does generate something
    np.testing.assert_array_equal(stats[:, 0], [float(s["exact_match"]) for s in ref])


def test_metrics_after_named_filters(tasks_dir):
    """A task with filters: each metric after each filter, named as lm-eval names them in its results, equal to
    lm-eval's per-document values; `params.metric` picks the column."""
    model, tok = tiny_llama(seed=2).eval(), tiny_tokenizer()
    task = _probe(tasks_dir, "tiny_sums_filtered", None, None, metric="exact_match,loose")
    assert task.metric == "exact_match,loose" and task.scorer.also_reported() == ("exact_match,strict",)
    stats, _ = task.scorer.score_details(HFLM(model, Formatter(tok), batch_size=8, max_length=512), task.items)
    ref, out = _reference(model, tok, tasks_dir, "tiny_sums_filtered", 0, None)
    by = {(s["doc_id"], s["filter"]): float(s["exact_match"]) for s in ref}
    np.testing.assert_array_equal(stats[:, 0], [by[(it["doc_id"], "loose")] for it in task.items])
    np.testing.assert_array_equal(stats[:, 1], [by[(it["doc_id"], "strict")] for it in task.items])
    assert 100 * stats[:, 0].mean() == pytest.approx(100 * out["results"]["tiny_sums_filtered"]["exact_match,loose"])


def test_a_document_scores_the_same_in_any_chunk(tasks_dir):
    """Few-shot contexts are fixed per document when the probe is built, so scoring documents in chunks (as runs
    do, longest first) or across matrix rows gives each document the same prompt and score."""
    model, tok = tiny_llama(seed=3).eval(), tiny_tokenizer()
    task = _probe(tasks_dir, "tiny_sounds", 2, 30, metric="acc_norm")
    assert task.metric == "acc_norm" and task.scorer.also_reported() == ("acc",)
    lm = HFLM(model, Formatter(tok), batch_size=4, max_length=512)
    whole, recs = task.scorer.score_details(lm, task.items)
    odd = task.items[1::2][::-1]
    part, part_recs = task.scorer.score_details(lm, odd)
    np.testing.assert_array_equal(part, whole[1::2][::-1])
    assert [r["context"] for r in part_recs] == [r["context"] for r in recs[1::2][::-1]]


def test_probe_in_a_run_measures_the_in_memory_model(tasks_dir, tmp_path):
    """A stage teaches the probe's facts; the probe, scored on the model the run holds, goes from chance to all
    right. results.json records lm-eval's version and the task's, acc_norm beside acc, CIs per cell."""
    from lifelong.runner import run

    rows = [json.loads(line) for line in (DATA / "sounds_test.jsonl").read_text().splitlines()]
    train = [{"prompt": f"Question: {r['question']}\nAnswer:", "response": r["choices"][r["label"]]} for r in rows]
    raw = tiny_run_config("naive", n_stages=1, steps=100, train={"max_length": 64}, output_dir=str(tmp_path))
    raw["stages"] = [{"name": "sounds", "data": {"rows": train * 3}, "eval": {"rows": train[:10]}}]
    raw["eval"]["probes"] = [
        {"name": "sounds_probe", "lm_eval": "tiny_sounds", "include_path": str(tasks_dir), "limit": 20}
    ]
    run(validate_raw(raw), quiet=True)
    res = json.loads((tmp_path / "tiny" / "results.json").read_text())
    probe = next(t for t in res["tasks"] if t["name"] == "sounds_probe")
    assert probe["scorer"] == "lm_eval" and probe["metric"] == "acc" and probe["n"] == 20
    assert f"lm_eval:{harness.version()}|task:tiny_sounds|versions:tiny_sounds=1.0|num_fewshot:0" in probe["signature"]
    col = [t["name"] for t in res["tasks"]].index("sounds_probe")
    before, after = res["matrix"][0][col], res["matrix"][1][col]
    assert before <= 40 and after == 100
    assert res["also"]["sounds_probe"]["metric"] == "acc_norm"
    per_doc = json.loads((tmp_path / "tiny" / "examples" / "sounds_probe" / "sounds.jsonl").read_text().splitlines()[0])
    assert per_doc["prediction"] == per_doc["gold"] == "meow" and per_doc["task"] == "tiny_sounds"


def _config(tmp_path, probe: dict) -> Path:
    raw = tiny_run_config("naive", n_stages=1, output_dir=str(tmp_path / "runs"))
    raw["eval"]["probes"] = [probe]
    path = tmp_path / "cfg.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, read_data=True)
    return str(e.value)


def test_located_errors_for_probe_settings(tasks_dir, tmp_path):
    msg = _error(_config(tmp_path, {"lm_eval": "tiny_sounds", "include_path": str(tasks_dir), "path": "x.jsonl"}))
    assert "eval.probes.0" in msg and "lm_eval names the task's data; drop path" in msg and "cfg.yaml:" in msg
    msg = _error(_config(tmp_path, {"path": str(DATA / "sums_test.jsonl"), "limit": 5}))
    assert "limit: only for an lm_eval task" in msg
    msg = _error(_config(tmp_path, {"lm_eval": "tiny_sounds", "include_path": "no_such_folder"}))
    assert "eval.probes.0.include_path: no such folder" in msg
    msg = _error(_config(tmp_path, {"lm_eval": "tiny_sounds", "include_path": str(tasks_dir), "params": {"x": 1}}))
    assert "eval.probes.0.params" in msg and "x" in msg
    # a metric the task does not have: said when the probe is built, with the task's metrics
    with pytest.raises(ValueError, match=r"params.metric: 'f1' is not a per-document metric.*acc, acc_norm"):
        _probe(tasks_dir, "tiny_sounds", 0, 5, metric="f1")


def test_unknown_task_names_the_closest(tmp_path, tasks_dir):
    """A typo in a task name: lm-eval's own task index is searched (with the include_path folder) and the closest
    names are given, located at the probe's line."""
    msg = _error(_config(tmp_path, {"lm_eval": "helaswag", "limit": 10}))
    assert "eval.probes.0: lm_eval: unknown lm-eval task 'helaswag'" in msg and "hellaswag" in msg
    assert "cfg.yaml:" in msg


def test_missing_lm_eval_says_how_to_install(tmp_path, monkeypatch, tasks_dir):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "lm_eval" else real(n, *a))
    msg = _error(_config(tmp_path, {"lm_eval": "tiny_sounds", "include_path": str(tasks_dir)}))
    assert "eval.probes.0.lm_eval: lm-eval is not installed" in msg and "pip install lm-eval" in msg
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(ValueError, match="pip install lm-eval"):
        harness.require("eval.probes.0")
