"""Issue 16 items 6 and 7: an explicit thread count wins over the size-based default (torch_threads >
OMP_NUM_THREADS > 1 thread under 5M parameters, every core above), in `lifelong run` and `lifelong eval`;
and `lifelong validate` reports, from the data files alone, an eval label that a training set cut by
`max_examples` does not have (it failed only after the model loaded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import yaml

from lifelong.cli import main
from lifelong.models import threads
from lifelong.testing import tiny_run_config


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 6)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    big, small = 2 * threads.SMALL_MODEL, 1000
    assert threads.choose_threads(big) == 6 and threads.choose_threads(small) == 1  # the size default
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads(big) == 3 and threads.choose_threads(small) == 3  # the environment wins
    assert threads.choose_threads(big, configured=2) == 2  # the config wins over both
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # OpenMP's per-level list: the outer level
    assert threads.choose_threads(big) == 4
    for unusable in ("", "0", "-2", "many"):  # ignored, as OpenMP runtimes ignore them
        monkeypatch.setenv("OMP_NUM_THREADS", unusable)
        assert threads.choose_threads(big) == 6


def test_run_and_eval_take_the_explicit_thread_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_threads: None
) -> None:
    """A model above the size threshold (the threshold lowered so the tiny model counts as large) gets every
    core by default, OMP_NUM_THREADS when set, torch_threads over both: after building a run, and in eval."""
    from lifelong.evaluate import evaluate, plan
    from lifelong.runner import Run
    from lifelong.validation import validate_raw

    monkeypatch.setattr(threads, "SMALL_MODEL", 0)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    raw = tiny_run_config("naive", n_stages=1, steps=1, output_dir=str(tmp_path / "runs"))
    raw.pop("torch_threads")
    raw["stages"][0]["data"]["rows"] = raw["stages"][0]["data"]["rows"][:8]
    raw["stages"][0]["eval"]["rows"] = raw["stages"][0]["eval"]["rows"][:4]
    raw["eval"] = {"bootstrap": 0}

    def run_threads(name: str, **top: Any) -> int:
        torch.set_num_threads(1)
        Run(validate_raw({**raw, "name": name, **top}), quiet=True)
        return torch.get_num_threads()

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert run_threads("default") == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert run_threads("omp") == 3
    assert run_threads("configured", torch_threads=2) == 2

    model = tmp_path / "model"
    from lifelong.testing import tiny_llama, tiny_tokenizer

    tiny_llama().save_pretrained(str(model))
    tiny_tokenizer().save_pretrained(str(model))
    tasks = [{"name": "t", "rows": [{"text": "t0 abc?", "label": "yes"}], "labels": ["no", "yes"]}]
    for overrides, want in (([], 3), (["torch_threads=2"], 2)):
        torch.set_num_threads(1)
        evaluate(plan(str(model), tasks=tasks, overrides=overrides), tmp_path / f"eval{want}")
        assert torch.get_num_threads() == want


# ---- validate: a label set cut by max_examples -----------------------------------------------------------
def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _label_cut_config(tmp_path: Path, **data: Any) -> Path:
    train = [{"text": f"row {k}", "label": lab} for k, lab in enumerate(["pos", "neg", "pos", "neutral"])]
    evals = [{"text": "e0", "label": "pos"}, {"text": "e1", "label": "neg"}, {"text": "e2", "label": "neutral"}]
    raw = {
        "name": "cut",
        "output_dir": str(tmp_path / "runs"),
        "model": {"path": "nobody/no-such-model"},  # validate loads no model: a hub id that does not exist is fine
        "stages": [
            {
                "name": "sentiment",
                "data": {"path": str(_jsonl(tmp_path / "train.jsonl", train)), **data},
                "eval": {"path": str(_jsonl(tmp_path / "eval.jsonl", evals))},
            }
        ],
    }
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return cfg


def test_validate_names_an_eval_label_cut_from_the_training_labels(tmp_path: Path, capsys: Any) -> None:
    cfg = _label_cut_config(tmp_path, max_examples=2)  # the first two training rows: pos, neg
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    line = next(k for k, t in enumerate(cfg.read_text().splitlines(), 1) if "max_examples" in t)
    assert err.startswith(f"error: {cfg}:{line}: stages.0.data.max_examples: {tmp_path / 'eval.jsonl'} line 3: ")
    assert 'label "neutral"' in err and "['neg', 'pos']" in err and "first 2 training rows" in err
    assert "raise stages.0.data.max_examples" in err and "stages.0.data.labels" in err and "drop such rows" in err

    for fixed in ({"max_examples": 4}, {"max_examples": 2, "labels": ["neg", "neutral", "pos"]}):
        assert main(["validate", str(_label_cut_config(tmp_path, **fixed))]) == 0, capsys.readouterr().err


def test_the_unchecked_run_fails_with_the_same_row_after_loading(tmp_path: Path, capsys: Any) -> None:
    """What validate now reports is what the run met after loading the model (here a tiny one)."""
    cfg = _label_cut_config(tmp_path, max_examples=2)
    raw = yaml.safe_load(cfg.read_text())
    raw["model"] = {"tiny": "llama"}
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["run", str(cfg), "--quiet"]) == 2
    assert f'{tmp_path / "eval.jsonl"} line 3: label "neutral" is not in the label set' in capsys.readouterr().err


def test_validate_reads_eval_rows_and_locates_their_problems(tmp_path: Path, capsys: Any) -> None:
    cfg = _label_cut_config(tmp_path)
    _jsonl(tmp_path / "eval.jsonl", [{"text": "e0", "label": "pos"}, {"text": "e1"}])
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    line = next(k for k, t in enumerate(cfg.read_text().splitlines(), 1) if t.strip().startswith("eval:"))
    assert f"{cfg}:{line}: stages.0.eval: {tmp_path / 'eval.jsonl'} line 2: field 'label' is missing" in err


def test_validate_reads_the_example_configs(capsys: Any) -> None:
    examples = Path(__file__).resolve().parents[1] / "examples"
    for cfg in ("quickstart.yaml", "knowledge.yaml"):
        assert main(["validate", str(examples / cfg)]) == 0, capsys.readouterr().err


def test_validate_types_the_parameters_of_the_scorer_auto_picks(tmp_path: Path, capsys: Any) -> None:
    """`scorer: auto` with parameters its rows' scorer does not take failed after loading, as a pydantic dump;
    an edit-format probe without a scorer raised a KeyError. Now: one located line, and the edit scorer."""
    cfg = _label_cut_config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["stages"][0]["eval"]["params"] = {"max_new_tokens": 4}
    edit = {"prompt": "The home of {} is", "subject": "Ada", "target_new": "Oslo"}
    raw["eval"] = {"probes": [{"name": "edits", "rows": [edit]}]}
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    line = next(k for k, t in enumerate(cfg.read_text().splitlines(), 1) if "max_new_tokens" in t)
    assert err == [f"error: {cfg}:{line}: stages.0.eval.params.max_new_tokens: {UNKNOWN_KEY}"]
    del raw["stages"][0]["eval"]["params"]
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["validate", str(cfg)]) == 0, capsys.readouterr().err


UNKNOWN_KEY = "unknown key (check spelling; `lifelong ls config` lists the fields)"
