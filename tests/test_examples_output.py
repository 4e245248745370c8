"""Per-item records you can audit (issue 16 item 3): every cell of a run's matrix has its items in
`examples/<task>/<row>.jsonl`, their scores give the cell, `lifelong show --examples` prints them (and diffs
two runs item by item), and the report links each cell to its items."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lifelong.cli import main
from lifelong.eval.results import examples_path, item_id, read_examples
from lifelong.eval.scorers import SCORERS, Scorer
from lifelong.runner import Run
from lifelong.testing import tiny_run_config
from lifelong.validation import validate_raw


class NoDetails(Scorer):
    """A plugin-style scorer that implements only `score`: its items are kept with their statistics."""

    metric = "no_details"
    formats = ("classification",)

    def score(self, lm: Any, items: list) -> np.ndarray:
        return np.array([[float(len(it["prompt"]) % 2)] for it in items])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    SCORERS.register("no_details_toy")(NoDetails)
    try:
        out = tmp_path_factory.mktemp("runs")
        raw = tiny_run_config(n_stages=2, steps=2, name="ex", output_dir=str(out))
        raw["eval"] = {"batch_size": 8, "bootstrap": 0, "max_examples": 10}
        words = ["t0 abc?", "t1 fed?", "t0 bad?", "t1 cab?", "t0 dee?"]
        raw["eval"]["probes"] = [
            {"name": "gen", "rows": [{"prompt": w, "response": "yes"} for w in words], "params": {"max_new_tokens": 3}},
            {"name": "ppl", "rows": [{"text": w + " yes"} for w in words]},
            {"name": "bits", "rows": [{"text": w * 2} for w in words], "scorer": "bits_per_byte"},
            {
                "name": "toy",
                "rows": [{"text": w, "label": "yes"} for w in words],
                "scorer": "no_details_toy",
                "labels": ["no", "yes"],
            },
        ]
        Run(validate_raw(raw), quiet=True).execute()
        yield out / "ex"
    finally:
        SCORERS.unregister("no_details_toy")


def test_every_cell_has_its_items_and_their_scores_give_the_cell(run_dir: Path) -> None:
    res = json.loads((run_dir / "results.json").read_text())
    assert len(res["rows"]) == 3 and len(res["tasks"]) == 6
    for j, t in enumerate(res["tasks"]):
        cls = SCORERS.get(t["scorer"])
        for r, row in enumerate(res["rows"]):
            recs = read_examples(run_dir, t["name"], row)
            assert len(recs) == t["n"], (t["name"], row)
            assert float(cls.aggregate(np.array([x["stats"] for x in recs]))) == pytest.approx(res["matrix"][r][j])
            if t["metric"] in ("accuracy", "exact_match", "no_details"):  # percent: the mean of the item scores
                assert 100 * np.mean([x["score"] for x in recs]) == pytest.approx(res["matrix"][r][j])
            ids = [x["id"] for x in recs]
            assert len(set(ids)) == len(ids) and [int(i.split("-")[0]) for i in ids] == list(range(len(ids)))


def test_records_say_what_the_scorer_saw(run_dir: Path) -> None:
    choice = read_examples(run_dir, "task0", "baseline")
    for rec in choice:
        assert len(rec["loglikelihoods"]) == len(rec["options"]) == 2
        assert rec["prediction"] == rec["options"][int(np.argmax(rec["scores"]))]
        assert rec["score"] == float(rec["prediction"] == rec["gold"])
    assert choice[0]["id"] == item_id(0, {"prompt": choice[0]["prompt"]})
    gen = read_examples(run_dir, "gen", "task1")
    assert all(isinstance(x["generation"], str) and x["compared_targets"] == ["yes"] for x in gen)
    assert all(x["score"] == float(x["compared"] == "yes") for x in gen)
    ppl = read_examples(run_dir, "ppl", "task0")
    assert all(x["tokens"] > 0 and x["score"] == pytest.approx(x["nll"] / x["tokens"]) for x in ppl)
    toy = read_examples(run_dir, "toy", "baseline")  # a scorer without details: ids and statistics
    assert [x["score"] for x in toy] == [x["stats"][0] for x in toy] and "prediction" not in toy[0]
    assert examples_path(run_dir, "a/../b", "x").parent.parent == run_dir / "examples"  # names stay inside


def test_show_examples_prints_the_items_and_diffs_two_runs(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recs = read_examples(run_dir, "task1", "task0")
    assert main(["show", str(run_dir), "--examples", "task1", "--stage", "0"]) == 0
    out = capsys.readouterr().out
    assert "task1 after task0" in out and f"{len(recs)} items" in out
    assert all(r["id"] in out for r in recs)
    assert main(["show", str(run_dir), "--examples", "task1", "--stage", "-1"]) == 0
    assert "task1 after baseline" in capsys.readouterr().out
    assert main(["show", str(run_dir), "--examples", "tsk1"]) == 2
    assert "did you mean 'task1'" in capsys.readouterr().err
    # a copy of the run with one item's prediction changed: --diff lists exactly that item
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    path = examples_path(other, "task1", "task0")
    changed = dict(recs[3], prediction="maybe", score=1.0 - recs[3]["score"])
    path.write_text("".join(json.dumps(changed if k == 3 else r) + "\n" for k, r in enumerate(recs)))
    assert main(["show", str(run_dir), "--examples", "task1", "--stage", "task0", "--diff", str(other)]) == 0
    out = capsys.readouterr().out
    assert f"1 of {len(recs)} items differ" in out and recs[3]["id"] in out and "maybe" in out
    assert recs[2]["id"] not in out


def test_report_links_every_cell_to_its_items(run_dir: Path) -> None:
    assert main(["report", str(run_dir)]) == 0
    html = (run_dir / "report.html").read_text()
    res = json.loads((run_dir / "results.json").read_text())
    for r in range(len(res["rows"])):
        for j in range(len(res["tasks"])):
            assert f'href="#cell-{r}-{j}"' in html and f'id="cell-{r}-{j}"' in html
    section = html[html.index('id="cell-0-0"') :]
    section = section[: section.index("</div>")]
    assert all(x["id"] in section for x in read_examples(run_dir, "task0", "baseline"))
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html)  # still self-contained
