"""Question answering: the `qa` format (SQuAD's answer forms, located errors, prompts), the `squad` scorer against
torchmetrics' SQuAD on the same items, `answer_accuracy`'s extraction and numeric comparison, and a stream on the
tiny model (two reading-comprehension stages, then questions with a numeric answer) where naive forgets the first
stage and replay keeps it."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from lifelong.config import DataConfig
from lifelong.data import check_rows, infer_format, load_rows, to_eval_items
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.answer_accuracy import AnswerAccuracyParams, as_number, extract
from lifelong.eval.scorers.squad import SquadParams

PREDS = [
    "Denver Broncos",
    "the Denver Broncos!",
    "Carolina",
    "",  # an empty generation
    "in 1976, I think",
    "A B C",
    "Santa Clara, California",
    "the",  # normalises to nothing
    "Levi's Stadium in the San Francisco Bay Area",
    "gold",
]
REFS = [
    ["Denver Broncos", "Denver Broncos", "Denver Broncos"],
    ["Denver Broncos"],
    ["Carolina Panthers", "the Carolina Panthers"],
    ["Santa Clara"],
    ["1976"],
    ["a b c d", "c b a"],
    ["Santa Clara, California", "Levi's Stadium"],
    ["an"],  # normalises to nothing: both empty
    ["Levi's Stadium in the San Francisco Bay Area at Santa Clara, California"],
    ["golden anniversary", "gold"],
]


class StubLM:
    class _FM:
        @staticmethod
        def prompt_ids(text: str) -> list[int]:
            return [ord(c) for c in text]

    def __init__(self, answers: dict[str, str]) -> None:
        self.fm, self.answers = self._FM(), answers

    def generate(self, ctxs: list[list[int]], max_new_tokens: int = 32) -> list[str]:
        return [self.answers["".join(map(chr, c))] for c in ctxs]


def test_squad_f1_and_exact_match_equal_torchmetrics_squad_on_the_same_items():
    tm = pytest.importorskip("torchmetrics.functional.text")
    items = [{"prompt": f"q{k}", "targets": r} for k, r in enumerate(REFS)]
    scorer = SCORERS.get("squad")(SquadParams())
    stats, records = scorer.score_details(StubLM({f"q{k}": p + "\nmore" for k, p in enumerate(PREDS)}), items)
    preds = [{"prediction_text": p, "id": str(k)} for k, p in enumerate(PREDS)]
    target = [{"answers": {"text": r, "answer_start": [0] * len(r)}, "id": str(k)} for k, r in enumerate(REFS)]
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torchmetrics sums in the default dtype: float64 for a 1e-6 check
    try:
        ref = tm.squad(preds, target)
        per_item = [tm.squad([p], [t]) for p, t in zip(preds, target)]
    finally:
        torch.set_default_dtype(old)
    assert float(scorer.aggregate(stats)) == pytest.approx(float(ref["f1"]), abs=1e-6)
    assert type(scorer).also_aggregate(stats, 0) == pytest.approx(float(ref["exact_match"]), abs=1e-6)
    assert scorer.also_reported() == ("exact_match",)
    assert np.allclose(100 * stats[:, 0], [float(x["f1"]) for x in per_item], atol=1e-6, rtol=0)
    assert np.array_equal(100 * stats[:, 1], [float(x["exact_match"]) for x in per_item])
    assert 0 < float(ref["f1"]) < 100 and len(set(stats[:, 0])) > 3  # partial credit happens
    assert records[1]["prediction"] == "the Denver Broncos!" and records[1]["compared"] == "denver broncos"
    assert records[1]["exact_match"] == 1.0 and records[4]["f1"] == pytest.approx(0.4)  # P 1/4, R 1
    draws = np.random.default_rng(0).integers(len(PREDS), size=(20, len(PREDS)))
    assert np.allclose(scorer.aggregate(stats[draws]), 100 * stats[draws, 0].mean(axis=-1))


@pytest.mark.parametrize(
    "text,number",
    [("1,234", 1234.0), ("3.50", 3.5), ("-7", -7.0), ("$12", 12.0), (" 42. ", 42.0), ("1,23", None), ("abc", None)],
)
def test_numbers_are_read_as_numbers(text, number):
    assert as_number(text) == number


@pytest.mark.parametrize(
    "generation,found",
    [
        ("Janet sells 16 - 3 - 4 = 9 eggs, so she makes 9 * 2 = $18.", "$18"),
        ("The total is 1,234 apples.", "1,234"),
        ("x = -3", "-3"),
        ("5-3", "3"),
        ("no number here", None),
    ],
)
def test_last_number_extraction(generation, found):
    assert extract(generation, AnswerAccuracyParams()) == found


def test_answer_accuracy_compares_extracted_numbers_numerically_and_records_what_it_extracted():
    items = [
        {"prompt": "a", "targets": ["1234"]},
        {"prompt": "b", "targets": ["3.5"]},
        {"prompt": "c", "targets": ["She has 3 + 4 = 7 eggs.\n#### 7"]},  # a worked solution as reference
        {"prompt": "d", "targets": ["12"]},
        {"prompt": "e", "targets": ["Paris"]},
        {"prompt": "f", "targets": ["8"]},
    ]
    gens = {
        "a": "so the answer is 1,234",
        "b": "It costs $3.50.",
        "c": "3 + 4 = 7",
        "d": "about 12.5 maybe",
        "e": "I think Paris",  # no number in it
        "f": "",
    }
    scorer = SCORERS.get("answer_accuracy")(AnswerAccuracyParams(max_new_tokens=8))
    stats, records = scorer.score_details(StubLM(gens), items)
    assert stats[:, 0].tolist() == [1, 1, 1, 0, 0, 0]
    assert float(scorer.aggregate(stats)) == pytest.approx(50.0)
    assert records[0]["extracted"] == "1,234" and records[0]["compared"] == 1234.0
    assert records[2]["compared_targets"] == [7.0]
    assert records[3]["extracted"] == "12.5" and records[4]["extracted"] is None and records[4]["prediction"] == ""
    regex = SCORERS.get("answer_accuracy")(AnswerAccuracyParams(extract="regex", pattern=r"answer is (\w+)"))
    stats, records = regex.score_details(
        StubLM({"a": "The answer is Paris. No, the answer is paris", "b": "answer is 007"}),
        [{"prompt": "a", "targets": ["Paris"]}, {"prompt": "b", "targets": ["7"]}],
    )
    assert stats[:, 0].tolist() == [1, 1]  # text after the SQuAD normalisation; numbers as numbers
    assert records[0]["extracted"] == "paris" and records[1]["compared"] == 7.0


@pytest.mark.parametrize(
    "params,message",
    [
        ({"extract": "regex"}, "extract: regex needs a pattern"),
        ({"extract": "regex", "pattern": "(a)(b)"}, "has 2 groups"),
        ({"extract": "regex", "pattern": "(a"}, "is not a regular expression"),
        ({"pattern": "(a)"}, "pattern is only read with extract: regex"),
    ],
)
def test_answer_accuracy_parameters_are_checked(params, message):
    with pytest.raises(ValueError, match=message):
        AnswerAccuracyParams(**params)


def test_a_bad_regex_is_a_located_config_error(tmp_path):
    from lifelong.validation import validate_raw

    raw = stream("naive", str(tmp_path), steps=1)
    raw["stages"][2]["eval"]["params"] = {"extract": "regex", "pattern": "(a)(b)"}
    with pytest.raises(ValueError, match=r"stages\.2\.eval\.params.*has 2 groups"):
        validate_raw(raw)


def write(tmp_path, rows):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


CTX = "Super Bowl 50 was played at Levi's Stadium."
GOOD = {"context": CTX, "question": "Where?", "answers": {"text": ["Levi's Stadium"], "answer_start": [28]}}


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"question": "", "answers": "x"}, "line 2: field 'question' must be a non-empty string"),
        ({"question": "q", "answers": []}, "line 2: field 'answers' has no answer"),
        ({"question": "q", "answers": {"answer_start": [0]}}, "line 2: field 'answers' has no 'text' list"),
        ({"question": "q", "answers": ["a", ""]}, "line 2: field 'answers' text 1 is \"\""),
        (
            {"question": "q", "answers": {"text": ["a", "b"], "answer_start": [0]}},
            "line 2: field 'answers' has 2 texts but 1 answer_start values",
        ),
        (
            {"context": CTX, "question": "q", "answers": {"text": ["Levi's Stadium"], "answer_start": [27]}},
            "line 2: field 'answers': answer_start 0 \\(27\\) does not point at \"Levi's Stadium\" in 'context'",
        ),
        ({"context": "", "question": "q", "answers": "a"}, "line 2: field 'context' must be a non-empty string"),
        ({"question": "q", "answer": None}, "line 2: field 'answer' must be a non-empty string"),
        ({"question": "q"}, "line 2: a qa row needs the fields question\\+answers or question\\+answer"),
    ],
)
def test_malformed_rows_are_located(tmp_path, bad, message):
    rows = load_rows(DataConfig(path=str(write(tmp_path, [GOOD, bad]))))
    with pytest.raises(ValueError, match=f"qa.jsonl {message}"):
        check_rows(rows, "qa")


def test_answer_forms_become_references_and_prompts(tmp_path):
    rows = [
        GOOD,
        {"question": "Q2", "answers": ["a", "b"]},
        {"question": "Q3", "answers": [{"text": "x", "answer_start": 0}, {"text": "y", "answer_start": 3}]},
        {"question": "What is 2 plus 2?", "answer": 4},
        {"question": "Q5", "answers": "single"},
    ]
    loaded = load_rows(DataConfig(path=str(write(tmp_path, rows))))
    assert infer_format(loaded, "auto") == "qa"
    check_rows(loaded, "qa")
    items = to_eval_items(loaded, "qa", DataConfig(rows=rows))
    assert items[0] == {"prompt": f"Context: {CTX}\nQuestion: Where?\nAnswer:", "targets": ["Levi's Stadium"]}
    assert [it["targets"] for it in items[1:]] == [["a", "b"], ["x", "y"], ["4"], ["single"]]
    assert items[3]["prompt"] == "Question: What is 2 plus 2?\nAnswer:"


# ---- behaviour: two reading-comprehension stages, then numeric answers, on the tiny model ------------------

WORDS = ["red", "big", "cat", "dog", "sun", "sky", "hat", "box"]


def reading(which: str, n: int, seed: int) -> list[dict]:
    """A passage of three words; the question asks for the first (stage 1) or the last (stage 2) of them."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ws = rng.sample(WORDS, 3)
        ctx = " ".join(ws) + "."
        ans = ws[0] if which == "first" else ws[-1]
        out.append(
            {
                "context": ctx,
                "question": f"Which word is {which}?",
                "answers": {"text": [ans], "answer_start": [ctx.index(ans)]},
            }
        )
    return out


PRICES = {"red": "1,250", "big": "3.50", "cat": "12", "dog": "7", "sun": "40", "sky": "2.25", "hat": "100", "box": "64"}


def prices(n: int, seed: int, numbers: bool) -> list[dict]:
    """Questions whose answer is a number: trained as a sentence ("The cat costs 1,250 coins."), scored against
    the number itself (1250) after extracting the generation's last number."""
    rng = random.Random(seed)
    ws = [rng.choice(WORDS) for _ in range(n)]
    if numbers:
        values = {w: float(as_number(v) or 0) for w, v in PRICES.items()}  # 1250.0, 3.5, ...
        num = {w: int(v) if v.is_integer() else v for w, v in values.items()}  # 1250, 3.5, ...
        return [{"question": f"How much is the {w}?", "answer": num[w]} for w in ws]
    return [{"question": f"How much is the {w}?", "answer": f"The {w} costs {PRICES[w]} coins."} for w in ws]


def stream(strategy, out: str, steps: int = 80) -> dict:
    stages = [
        {
            "name": which,
            "kind": "instruct",
            "data": {"rows": reading(which, 200, k)},
            "eval": {"rows": reading(which, 32, 10 + k), "params": {"max_new_tokens": 6}},  # scorer auto: squad
        }
        for k, which in enumerate(["first", "last"])
    ]
    stages.append(
        {
            "name": "prices",
            "kind": "instruct",
            "data": {"rows": prices(200, 5, numbers=False)},
            "train": {"max_steps": 2 * steps},
            "eval": {
                "rows": prices(32, 6, numbers=True),
                "scorer": "answer_accuracy",
                "params": {"max_new_tokens": 32},
            },
        }
    )
    return {
        "name": strategy if isinstance(strategy, str) else strategy["name"],
        "seed": 0,
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "strategy": strategy,
        "output_dir": out,
        "train": {"lr": 3e-3, "batch_size": 16, "max_steps": steps, "max_length": 96},
        "eval": {"batch_size": 32, "bootstrap": 50},
        "stages": stages,
    }


def test_reading_then_numbers_naive_forgets_the_first_stage_replay_keeps_it(tmp_path):
    from lifelong.runner import Run
    from lifelong.validation import validate_raw

    out = {}
    for strategy in ("naive", {"name": "replay", "fraction": 0.5}):
        res = Run(validate_raw(stream(strategy, str(tmp_path))), quiet=True).execute()
        out["naive" if strategy == "naive" else "replay"] = res.matrix
    for m in out.values():
        assert max(m[0]) < 10  # the untrained model answers nothing
        assert m[1][0] > 60 and m[2][1] > 60  # each reading stage learned (F1)
        assert m[3][2] > m[0][2] + 40  # the prices: accuracy on the extracted final number rises
    naive_drop, replay_drop = out["naive"][1][0] - out["naive"][3][0], out["replay"][1][0] - out["replay"][3][0]
    assert naive_drop > 50 and replay_drop < naive_drop - 25, out
    saved = json.loads((tmp_path / "naive" / "results.json").read_text())
    assert {t["name"]: t["scorer"] for t in saved["tasks"]} == {
        "first": "squad",
        "last": "squad",
        "prices": "answer_accuracy",
    }
    assert saved["also"]["first"]["metric"] == "exact_match"
    path = tmp_path / "naive" / "examples" / "prices" / "prices.jsonl"
    records = [json.loads(x) for x in path.read_text().splitlines()]
    red = next(r for r in records if r["score"] == 1 and r["gold"] == ["1250"])
    assert red["extracted"] == "1,250" and red["compared"] == 1250.0  # written 1,250, compared as 1250
