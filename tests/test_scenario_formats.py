"""The scenario-format machinery (lifelong/data/scenarios): a format registered from outside the package is
inferred from its fields, checked row by row with located errors, trained as prompt/response and scored with
the fields its scorer reads; scorers report several scores beside the matrix and a signature."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from lifelong.config import DataConfig
from lifelong.data import check_rows, infer_format, to_eval_items, to_examples
from lifelong.data.formats import Formatter
from lifelong.data.scenarios import SCENARIOS, ScenarioFormat, accepts
from lifelong.data.sources import Rows
from lifelong.eval.results import Results
from lifelong.eval.scorers import SCORERS, Scorer
from lifelong.models.tiny import tiny_tokenizer
from lifelong.report.table import print_run


class Reverse(ScenarioFormat):
    """Toy scenario: a word and its reversal."""

    fields = (("word", "reversed"),)
    scorer = "exact_match"
    example = '{"word": "abc", "reversed": "cba"}\nReverse: abc -> cba'

    def check(self, row: dict[str, Any], where: str) -> None:
        super().check(row, where)
        if row["reversed"] != row["word"][::-1]:
            raise ValueError(f"{where}: field 'reversed' is not 'word' reversed ({row['word']!r})")

    def prompt(self, row: dict[str, Any]) -> str:
        return f"Reverse: {row['word']}"

    def response(self, row: dict[str, Any]) -> str:
        return str(row["reversed"])

    def item(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"length": len(row["word"])}


@pytest.fixture
def reverse():
    SCENARIOS.register("reverse_toy")(Reverse)
    yield
    SCENARIOS.unregister("reverse_toy")


def rows(*words: str, bad: bool = False) -> Rows:
    rs = [{"word": w, "reversed": w[::-1] if not bad else w} for w in words]
    return Rows(rs, [f"toy.jsonl line {k + 1}" for k in range(len(rs))], "toy.jsonl")


def test_a_registered_format_is_inferred_checked_trained_and_itemised(reverse):
    r = rows("abc", "hello")
    assert infer_format(r, "auto") == "reverse_toy"
    check_rows(r, "reverse_toy")
    with pytest.raises(ValueError, match=r"toy.jsonl line 1: field 'reversed' is not 'word' reversed"):
        check_rows(rows("abc", bad=True), "reverse_toy")
    fm = Formatter(tiny_tokenizer(), chat="none")
    ex = to_examples(r, "reverse_toy", DataConfig(rows=r.rows), fm, 64)
    first = ex[0]
    learned = [t for t, lab in zip(first["input_ids"], first["labels"]) if lab != -100]
    assert fm.tok.decode(learned, skip_special_tokens=True).strip() == "cba"  # the response only carries loss
    assert first["prompt_text"] == "Reverse: abc"
    items = to_eval_items(r, "reverse_toy", DataConfig(rows=r.rows))
    assert items == [
        {"prompt": "Reverse: abc", "targets": ["cba"], "length": 3},
        {"prompt": "Reverse: hello", "targets": ["olleh"], "length": 5},
    ]
    templated = to_eval_items(r, "reverse_toy", DataConfig(rows=r.rows, template="Mirror {word}"))
    assert templated[0]["prompt"] == "Mirror abc" and templated[0]["targets"] == ["cba"]
    # stage kinds and scorers of the base format take the scenario format; others do not
    assert accepts(("prompt_response", "messages"), "reverse_toy")
    assert not accepts(("text",), "reverse_toy")
    assert accepts(SCORERS.get("exact_match").formats, "reverse_toy")
    assert not accepts(SCORERS.get("perplexity").formats, "reverse_toy")


def test_ls_formats_lists_base_and_scenario_formats(reverse, capsys):
    from lifelong.cli import main as cli

    assert cli(["ls", "formats"]) == 0
    out = capsys.readouterr().out
    assert "classification:" in out
    assert "reverse_toy (scenario; fields word + reversed; scorer exact_match):" in out
    assert '{"word": "abc", "reversed": "cba"}' in out and "Reverse: abc -> cba" in out


class PR(Scorer):
    """Toy micro P/R/F1 from per-example (tp, fp, fn)."""

    metric = "f1"

    def also_reported(self) -> tuple[str, ...]:
        return ("precision", "recall")

    @staticmethod
    def aggregate(stats: np.ndarray) -> np.ndarray:
        tp, fp, fn = (stats[..., k].sum(axis=-1) for k in range(3))
        return 100 * 2 * tp / np.maximum(2 * tp + fp + fn, 1)

    @classmethod
    def also_aggregate(cls, stats: np.ndarray, k: int) -> float:
        tp, wrong = stats[:, 0].sum(), stats[:, 1 + k].sum()
        return float(100 * tp / max(tp + wrong, 1))


@pytest.fixture
def pr_scorer():
    SCORERS.register("pr_toy")(PR)
    yield
    SCORERS.unregister("pr_toy")


def test_several_scores_beside_the_matrix_are_kept_and_shown(pr_scorer, tmp_path):
    task = {"name": "t", "metric": "f1", "higher_is_better": True, "stage": 0, "scorer": "pr_toy", "n": 2}
    res = Results("r", ["baseline", "t"], [{**task, "also": ["precision", "recall"]}])
    res.set_cell(0, 0, np.array([[1, 1, 0], [0, 0, 2]], dtype=float))  # P 50, R 33.3, F1 40
    res.set_cell(1, 0, np.array([[2, 0, 0], [1, 0, 1]], dtype=float))  # P 100, R 75, F1 85.7
    assert res.matrix[0][0] == pytest.approx(40.0) and res.matrix[1][0] == pytest.approx(600 / 7)
    res.save(tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())["also"]["t"]
    assert [e["metric"] for e in saved] == ["precision", "recall"]
    assert saved[0]["rows"] == {"baseline": 50.0, "t": 100.0}
    assert saved[1]["rows"]["baseline"] == pytest.approx(100 / 3) and saved[1]["rows"]["t"] == 75.0
    (tmp_path / "config.yaml").write_text("name: r\n")
    out = StringIO()
    print_run(tmp_path, Console(file=out, width=120))
    assert "t: precision (beside the matrix's score): baseline 50.00, t 100.00" in out.getvalue()
    assert "t: recall (beside the matrix's score): baseline 33.33, t 75.00" in out.getvalue()
