"""Code completion (scenario 6 of issue 17): the `code` row format (prefix + completion, located errors, the
prefix's trailing whitespace moved into the response so no space is inserted before a line); `edit_similarity`
equals rapidfuzz's `fuzz.ratio` and an independent Indel computation of its definition, with CodeXGLUE's exact
match beside it; and on a tiny model two code styles are learned one after the other, replay keeping the first
where naive fine-tuning forgets it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lifelong.config import DataConfig
from lifelong.data import check_rows, infer_format, to_eval_items, to_examples
from lifelong.data.formats import Formatter
from lifelong.data.sources import Rows
from lifelong.eval.scorers.edit_similarity import EditSimilarity, EditSimilarityParams
from lifelong.models.tiny import tiny_tokenizer


def rows(*rs: dict) -> Rows:
    return Rows(list(rs), [f"c.jsonl line {k + 1}" for k in range(len(rs))], "c.jsonl")


# ---- format --------------------------------------------------------------------------------------------------


def test_the_completion_follows_the_code_without_an_inserted_space():
    r = rows(
        {"prefix": "def area(r):\n", "completion": "    return 3.14159 * r * r"},
        {"prompt": "import os\ndef f(x):\n    ", "completion": "return x"},  # indentation already typed
    )
    assert infer_format(r, "auto") == "code"
    check_rows(r, "code")
    items = to_eval_items(r, "code", DataConfig(rows=r.rows))
    assert items == [
        {"prompt": "def area(r):", "targets": ["    return 3.14159 * r * r"]},
        {"prompt": "import os\ndef f(x):", "targets": ["return x"]},
    ]
    fm = Formatter(tiny_tokenizer(), chat="off")  # a plain completion prompt
    ex = to_examples(r, "code", DataConfig(rows=r.rows), fm, 128)
    for e, code in zip(ex, ("def area(r):\n    return 3.14159 * r * r", "import os\ndef f(x):\n    return x")):
        assert fm.tok.decode(e["input_ids"], skip_special_tokens=True) == code  # the source text, byte for byte
        learned = fm.tok.decode(
            [t for t, lab in zip(e["input_ids"], e["labels"]) if lab != -100], skip_special_tokens=True
        )
        assert code.endswith(learned) and learned.startswith("\n")


def test_prompt_completion_rows_are_code_only_when_declared():
    """`prompt + completion` is also the shape of general instruction data: inference does not make it code."""
    r = rows({"prompt": "Name a colour.", "completion": "Blue"})
    with pytest.raises(ValueError, match="cannot infer the format"):
        infer_format(r, "auto")
    assert infer_format(r, "code") == "code"
    check_rows(r, "code")


@pytest.mark.parametrize(
    "row,message",
    [
        ({"prefix": "x = 1\n"}, r"c.jsonl line 1: field 'completion' is missing \(format code needs prefix"),
        ({"completion": "y = 2"}, r"line 1: field 'prompt' is missing"),
        ({"prefix": "   \n", "completion": "y"}, r"line 1: field 'prefix' must be non-empty code"),
        ({"prefix": "x = 1\n", "completion": "  \n "}, r"field 'completion' must be the next line\(s\) of code"),
        ({"prefix": "x = 1\n", "completion": ["y = 2"]}, r"field 'completion' must be .*got \[\"y = 2\"\]"),
    ],
)
def test_malformed_rows_give_one_located_error(row, message):
    with pytest.raises(ValueError, match=message):
        check_rows(rows(row), "code")


# ---- edit similarity -----------------------------------------------------------------------------------------


def indel_similarity(a: str, b: str) -> float:
    """100 * (1 - Indel distance / (len a + len b)), the Indel distance (insertions and deletions only) from the
    longest common subsequence by dynamic programming; two empty strings are identical."""
    if not a and not b:
        return 100.0
    lcs = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            lcs[i + 1][j + 1] = lcs[i][j] + 1 if x == y else max(lcs[i][j + 1], lcs[i + 1][j])
    distance = len(a) + len(b) - 2 * lcs[-1][-1]
    return 100.0 * (1 - distance / (len(a) + len(b)))


GENERATIONS = [
    "\n    return 3.14159 * r * r\n\ndef other():",  # exact, with more code after it
    "    return 3.14 * r ** 2",
    "",
    "x=foo( a,b )",
    "    for line in lines:\n        pass",
    "result = compute(value)   ",
]
REFERENCES = [
    ["    return 3.14159 * r * r"],
    ["    return 3.14159 * r * r"],
    ["if x is None:"],
    ["x = foo(a, b)", "x=foo( a,b )"],
    ["    for line in text.splitlines():"],
    ["result = compute(value)"],
]


def test_edit_similarity_equals_rapidfuzz_and_the_indel_definition():
    from rapidfuzz import fuzz

    stats = EditSimilarity.stats(GENERATIONS, REFERENCES)
    firsts = [
        "return 3.14159 * r * r",
        "return 3.14 * r ** 2",
        "",
        "x=foo( a,b )",
        "for line in lines:",
        "result = compute(value)",
    ]
    golds = [[g.strip() for g in refs] for refs in REFERENCES]
    want = [max(fuzz.ratio(p, g) for g in gs) for p, gs in zip(firsts, golds)]
    assert stats[:, 0].tolist() == want
    assert np.allclose(
        stats[:, 0], [max(indel_similarity(p, g) for g in gs) for p, gs in zip(firsts, golds)], atol=1e-9
    )
    assert stats[:, 0].tolist()[0] == 100.0 and stats[2, 0] == 0.0
    # CodeXGLUE's exact match: the same whitespace-separated tokens
    assert stats[:, 1].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    assert float(EditSimilarity.aggregate(stats)) == pytest.approx(np.mean(want), abs=1e-12)
    assert EditSimilarity.also_aggregate(stats, 0) == pytest.approx(50.0)


def test_edit_similarity_is_not_difflib_ratio():
    """fuzzywuzzy without python-Levenshtein falls back on difflib's Ratcliff-Obershelp ratio; ours is the Indel
    measure, which differs on some pairs (the docs say which one TRACE's and CodeXGLUE's numbers are)."""
    import difflib

    a, b = "self.value = value", "value = self.value"
    ours = EditSimilarity.stats([a], [[b]])[0, 0]
    assert ours == pytest.approx(indel_similarity(a, b))
    assert ours != pytest.approx(100 * difflib.SequenceMatcher(None, a, b).ratio())


def test_the_scorer_generates_once_and_records_first_lines():
    calls = []

    class LM:
        fm = SimpleNamespace(prompt_ids=lambda p: p)

        def generate(self, ctxs, max_new_tokens):
            calls.append(max_new_tokens)
            return GENERATIONS[: len(ctxs)]

    items = [{"prompt": f"p{k}", "targets": refs} for k, refs in enumerate(REFERENCES)]
    scorer = EditSimilarity(EditSimilarityParams(max_new_tokens=20))
    stats, records = scorer.score_details(LM(), items)
    assert calls == [20] and records is not None
    assert records[0]["prediction"] == "return 3.14159 * r * r" and records[0]["exact_match"] is True
    assert records[3]["gold"] == ["x = foo(a, b)", "x=foo( a,b )"] and records[3]["score"] == 100.0
    assert scorer.also_reported() == ("exact_match",) and "rapidfuzz" in (scorer.signature() or "")


# ---- behaviour on a tiny model -------------------------------------------------------------------------------

LINES = ("    return x + 1", "    print(x)")


def stream(seed: int = 0) -> list[dict]:
    """Two code styles over the same kind of function: in style 0 a function tagged with a word whose first
    letter is a-c returns `x + 1` and the others print; style 1 does the opposite."""
    import random

    rng = random.Random(seed)

    def code(n: int, tag: str, flip: bool) -> list[dict]:
        out = []
        for _ in range(n):
            w = "".join(rng.choice("abcdef") for _ in range(3))
            out.append({"prefix": f"# {tag} {w}\ndef f(x):\n", "completion": LINES[(w[0] in "abc") == flip]})
        return out

    params = {"max_new_tokens": 20}
    return [
        {"name": "style0", "kind": "instruct", "data": {"rows": code(96, "t0", False)},
         "eval": {"rows": code(32, "t0", False), "params": params}},
        {"name": "style1", "kind": "instruct", "data": {"rows": code(96, "t1", True)},
         "eval": {"rows": code(32, "t1", True), "params": params}},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from lifelong.runner import Run
    from lifelong.validation import validate_raw

    out = {}
    for strategy in ("naive", {"name": "replay", "fraction": 0.5}):
        name = strategy if isinstance(strategy, str) else strategy["name"]
        raw = {
            "name": name,
            "seed": 0,
            "torch_threads": 1,
            "model": {"tiny": "llama"},
            "strategy": strategy,
            "train": {"lr": 3e-3, "batch_size": 16, "max_steps": 60, "max_length": 48},
            "eval": {"batch_size": 32, "bootstrap": 0},
            "output_dir": str(tmp_path_factory.mktemp("runs")),
            "stages": stream(),
        }
        out[name] = Run(validate_raw(raw), quiet=True).execute()
    return out


def test_a_code_style_is_learned_with_exact_lines_beside_the_edit_similarity(runs):
    res = runs["naive"]
    assert [(t["metric"], t["scorer"]) for t in res.tasks] == [("edit_similarity",) * 2] * 2
    assert res.matrix[1][0] > res.matrix[0][0] + 50, res.matrix
    exact = res.extra["also"]["style0"]
    assert exact["metric"] == "exact_match" and exact["rows"]["style0"] > 80, exact


def test_replay_keeps_the_first_style_that_naive_fine_tuning_forgets(runs):
    naive, replay = runs["naive"], runs["replay"]
    forgot_naive = naive.matrix[1][0] - naive.matrix[2][0]
    forgot_replay = replay.matrix[1][0] - replay.matrix[2][0]
    assert forgot_naive > 40, naive.matrix
    assert forgot_replay < forgot_naive - 20, (naive.matrix, replay.matrix)


def test_codexglue_literals_are_written_back_as_trace_does():
    """TRACE's Py150 evaluator writes CodeXGLUE's literal placeholders back before fuzz.ratio; `literals:
    codexglue` does the same on both sides, `keep` compares the lines as written."""
    from lifelong.eval.scorers.edit_similarity import EditSimilarity, codexglue_literals

    assert codexglue_literals('x = <NUM_LIT> + f(<STR_LIT>, <STR_LIT:"a b">, <NUM_LIT:3>)') == 'x = 0 + f(, "a b", 3)'
    pred, gold = 'print(<STR_LIT:"hi">)', 'print("hi")'
    kept = EditSimilarity.stats([pred], [[gold]])
    fixed = EditSimilarity.stats([pred], [[gold]], "codexglue")
    assert kept[0, 0] < 100 and kept[0, 1] == 0
    assert fixed.tolist() == [[100.0, 1.0]]
