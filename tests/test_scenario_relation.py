"""Continual relation extraction: format `relation` (text, head, tail, relation) scored by `relation_accuracy`
among the relations seen so far at each matrix row (class-incremental RE), and format `triples` scored by
`triple_f1` (micro P/R/F1 over normalised exact triples); located errors; a two-stage stream on a tiny model where
stage 2 brings new relations: stage 1 is learned, naive forgets the old relations and replay keeps them; and
`lifelong eval` of a run's stage scores the options of that stage's row."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lifelong.config import DataConfig
from lifelong.data import check_rows, infer_format, to_eval_items, to_examples
from lifelong.data.formats import Formatter
from lifelong.data.scenarios.triples import parse_answer
from lifelong.data.sources import Rows
from lifelong.eval.scorers.triple_f1 import TripleF1
from lifelong.models.tiny import tiny_tokenizer

PEOPLE = ["bob", "ann", "tom", "eve", "sam", "liz", "max", "zoe"]
CUES = {
    "born in": ("was born in", ["rome", "oslo", "lima", "kiev"]),
    "lives in": ("lives in", ["bern", "doha", "pisa", "riga"]),
    "works for": ("works for", ["acme", "ikea", "fifa", "nasa"]),
    "owns": ("owns", ["a cat", "a boat", "a farm", "a car"]),
}
STAGES = [("places", ["born in", "lives in"]), ("jobs", ["works for", "owns"])]
TEMPLATE = {"relation": "{text} | {head} ? {tail} =>", "triples": "{text} =>"}


def rel_rows(rels: list[str], n: int, rng: random.Random, fmt: str) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        r = rng.choice(rels)
        cue, tails = CUES[r]
        h, t = rng.choice(PEOPLE), rng.choice(tails)
        text = f"{h} {cue} {t}"
        out.append(
            {"text": text, "head": h, "tail": t, "relation": r}
            if fmt == "relation"
            else {"text": text, "triples": [[h, r, t]]}
        )
    return out


def stream(fmt: str, out: str, strategy: Any = "naive", seed: int = 0, steps: int = 100) -> dict:
    rng = random.Random(seed)
    name = strategy if isinstance(strategy, str) else strategy["name"]
    params = {"params": {"max_new_tokens": 24}} if fmt == "triples" else {}
    return {
        "name": f"{fmt}-{name}",
        "seed": seed,
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "strategy": strategy,
        "output_dir": out,
        "train": {"lr": 3e-3, "batch_size": 16, "max_steps": steps, "max_length": 64},
        "eval": {"batch_size": 32, "bootstrap": 0},
        "stages": [
            {
                "name": n,
                "kind": "instruct",
                "data": {"rows": rel_rows(rels, 200, rng, fmt), "template": TEMPLATE[fmt]},
                "eval": {"rows": rel_rows(rels, 24, rng, fmt), "template": TEMPLATE[fmt], **params},
            }
            for n, rels in STAGES
        ],
    }


class CannedLM:
    """An LM stand-in whose greedy answers are given, in the order the prompts are asked."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        asked: list[str] = []

        class FM:
            def prompt_ids(self, text: str) -> list[int]:
                asked.append(text)
                return [len(asked) - 1]

        self.fm = FM()

    def generate(self, ctxs: list[list[int]], max_new_tokens: int = 32) -> list[str]:
        return [self.answers[c[0]] for c in ctxs]


def rows_of(rs: list[dict], source: str = "re.jsonl") -> Rows:
    return Rows(rs, [f"{source} line {k + 1}" for k in range(len(rs))], source)


def test_relation_options_are_the_relations_seen_so_far_at_each_row(tmp_path):
    from lifelong.configio import Locator
    from lifelong.eval.tasks import build_suite
    from lifelong.stages import STAGE_KINDS
    from lifelong.validation import check_data, validate_raw

    raw = stream("relation", str(tmp_path))
    extra = {"text": "bob studies math", "head": "bob", "tail": "math", "relation": "studies"}
    raw["stages"].insert(
        1, {"name": "chat", "kind": "instruct", "data": {"rows": [{"prompt": "hi", "response": "yo"}]}}
    )
    raw["eval"]["probes"] = [
        {"name": "fixed", "rows": raw["stages"][0]["eval"]["rows"][:4], "labels": ["born in", "lives in", "x"]},
        {"name": "probe", "rows": [extra]},
    ]
    cfg = validate_raw(raw)
    tasks = build_suite(cfg, [STAGE_KINDS.get(s.kind)() for s in cfg.stages])
    places, jobs, fixed, probe = tasks
    assert [t.scorer.metric for t in tasks] == ["accuracy"] * 4
    first, second = ["born in", "lives in"], ["owns", "works for"]
    # rows: baseline, after places, after chat, after jobs
    assert places.row_options == [first, first, first, sorted(first + second)]
    assert jobs.row_options == [second, sorted(first + second), sorted(first + second), sorted(first + second)]
    with_probe = sorted(first + ["studies"])
    assert probe.row_options == [["studies"], with_probe, with_probe, sorted(first + second + ["studies"])]
    assert fixed.row_options is None and fixed.items[0]["options"] == ["born in", "lives in", "x"]
    for t in (places, jobs):
        for row in range(4):
            for it in t.items_at(row):
                assert it["options"] == t.row_options[row] and it["options"][it["answer"]] == it["label"]
    assert places.items[0]["options"] == sorted(first + second)  # fitted with the widest set
    # an eval relation that the stage's training rows lack is named with its row (as a classification label)
    raw["stages"][2]["eval"]["rows"].append(extra)
    msgs = check_data(validate_raw(raw), Locator("run.yaml"))
    assert len(msgs) == 1 and "stages.2.eval" in msgs[0]
    assert 'inline row 24: relation "studies" is not in the label set' in msgs[0]


def test_relation_rows_errors_and_training_text():
    good = {"text": "Paris is the capital of France.", "head": "Paris", "tail": "France", "relation": "capital of"}
    r = rows_of([good])
    assert infer_format(r, "auto") == "relation"
    check_rows(r, "relation")
    fm = Formatter(tiny_tokenizer(), chat="none")
    ex = to_examples(r, "relation", DataConfig(rows=[good]), fm, 512)
    assert ex[0]["response_text"] == "capital of"
    assert "How is Paris related to France?" in ex[0]["prompt_text"]
    for bad, message in [
        ({**good, "head": "Lyon"}, r"re.jsonl line 2: field 'head' \"Lyon\" is not mentioned in the text"),
        ({**good, "tail": ""}, r"re.jsonl line 2: field 'tail' must be a non-empty string"),
        ({**good, "relation": "capital\nof"}, r"re.jsonl line 2: field 'relation' must be one line"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_rows(rows_of([good, bad]), "relation")
    with pytest.raises(ValueError, match=r"re.jsonl line 1: relation \"capital of\" is not in the label set"):
        to_eval_items(r, "relation", DataConfig(rows=[good], labels=["born in"]))


def test_triples_format_and_triple_f1():
    rs = [
        {
            "text": "Ann was born in Rome and lives in Oslo.",
            "triples": [["Ann", "born in", "Rome"], ["Ann", "lives in", "Oslo"]],
        },
        {"text": "Nothing is said.", "triples": []},
        {"text": "Bob owns a cat.", "triples": [{"head": "Bob", "relation": "owns", "tail": "a cat"}]},
    ]
    r = rows_of(rs)
    assert infer_format(r, "auto") == "triples"
    check_rows(r, "triples")
    items = to_eval_items(r, "triples", DataConfig(rows=rs))
    assert [it["targets"] for it in items] == [
        ["Ann | born in | Rome\nAnn | lives in | Oslo"],
        ["none"],
        ["Bob | owns | a cat"],
    ]
    answers = [
        "ann | Born In | rome.\nAnn | born in | Rome\nAnn | lives in",  # normalised match, a repeat, a broken line
        "none",
        "Bob | owns | a dog",
    ]
    stats, records = TripleF1().score_details(CannedLM(answers), items)
    assert stats.tolist() == [[1, 2, 1], [0, 0, 0], [0, 1, 1]]
    assert records is not None and records[0]["unparsed"] == ["Ann | lives in"]
    tp, fp, fn = stats.sum(axis=0)
    assert float(TripleF1.aggregate(stats)) == pytest.approx(100 * 2 * tp / (2 * tp + fp + fn))
    assert TripleF1.also_aggregate(stats, 0) == pytest.approx(100 * tp / (tp + fp))
    assert TripleF1.also_aggregate(stats, 1) == pytest.approx(100 * tp / (tp + fn))
    # kept relations (class-incremental): triples of other relations are neither gold nor wrong
    kept = to_eval_items(r, "triples", DataConfig(rows=rs, labels=["lives in"]))
    assert kept[0]["targets"] == ["Ann | lives in | Oslo"] and kept[0]["relations"] == ["lives in"]
    stats, _ = TripleF1().score_details(CannedLM(["Ann | born in | Rome\nAnn | lives in | Oslo"]), kept[:1])
    assert stats.tolist() == [[1, 0, 0]]
    assert parse_answer("a | b | c\n\nnone\nx | y") == ([("a", "b", "c")], ["x | y"])
    for bad, message in [
        ({"text": "t", "triples": [["a", "b"]]}, r"re.jsonl line 1: triples\[0\] must be \[head, relation, tail\]"),
        ({"text": "t", "triples": [["a", "", "c"]]}, r"triples\[0\]: the relation must be a non-empty string"),
        ({"text": "t", "triples": [["a|b", "r", "c"]]}, r"triples\[0\]: the head \"a\|b\" cannot contain '\|'"),
        ({"text": "t", "triples": "a|b|c"}, r"field 'triples' must be a list"),
        ({"text": "t", "triples": [{"head": "a", "tail": "c"}]}, r"triples\[0\] must have exactly the keys"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_rows(rows_of([bad]), "triples")


def test_new_relations_in_stage_two_naive_forgets_replay_keeps(tmp_path, capsys):
    from lifelong.cli import main
    from lifelong.runner import Run
    from lifelong.validation import validate_raw

    m = {}
    for strategy in ("naive", {"name": "replay", "fraction": 0.5}):
        raw = stream("relation", str(tmp_path), strategy)
        raw["export"] = {"stages": "all"}  # every stage's model, for `lifelong eval` below
        m[raw["name"]] = Run(validate_raw(raw), quiet=True).execute().matrix
    naive, replay = m["relation-naive"], m["relation-replay"]
    assert naive[1][0] > naive[0][0] + 30, naive  # stage 1's relations are learned (chance is 50 at rows 0-1)
    assert naive[2][1] > 90, naive
    assert naive[2][0] < naive[1][0] - 40, naive  # among all four relations, naive picks the new ones
    assert replay[2][0] > naive[2][0] + 40, (naive, replay)
    # `lifelong eval` of the run's first stage scores that row's options (the two relations seen by then)
    run = tmp_path / "relation-naive"
    capsys.readouterr()
    assert main(["eval", f"{run}:places", "--out", str(tmp_path / "ev")]) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert [t["score"] for t in res["tasks"]] == pytest.approx(naive[1])
    for task, options in (("places", ["born in", "lives in"]), ("jobs", ["born in", "lives in", "owns", "works for"])):
        ex = (tmp_path / "ev" / "examples" / task / "places.jsonl").read_text().splitlines()
        assert json.loads(ex[0])["options"] == options


def test_generated_triples_are_learned_and_replay_keeps_old_relations(tmp_path):
    from lifelong.runner import Run
    from lifelong.validation import validate_raw

    m = {}
    for strategy in ("naive", {"name": "replay", "fraction": 0.5}):
        raw = stream("triples", str(tmp_path), strategy)
        res = Run(validate_raw(raw), quiet=True).execute()
        m[raw["name"]] = res.matrix
        assert [
            t["metric"]
            for t in json.loads((Path(raw["output_dir"]) / raw["name"] / "results.json").read_text())["also"]["places"]
        ] == ["precision", "recall"]
    naive, replay = m["triples-naive"], m["triples-replay"]
    assert naive[1][0] > naive[0][0] + 50, naive
    assert replay[2][0] > naive[2][0] + 40, (naive, replay)
    assert np.isfinite(np.array(naive)).all()
