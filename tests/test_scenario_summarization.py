"""Summarization and simplification (scenario 5 of issue 17): the `summarization` and `simplification` row formats
with located errors; `rouge` equals rouge-score's `RougeScorer.score_multi` on the same items, with and without
stemming; `sari` equals Hugging Face evaluate's SARI per sentence and EASSE's corpus SARI (values those two
implementations computed, tests/data/sari/reference.json); and on a tiny model a summarize-then-simplify stream
is learned, and replay keeps the first stage where naive fine-tuning forgets it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lifelong.config import DataConfig
from lifelong.data import check_rows, infer_format, to_eval_items, to_examples
from lifelong.data.formats import Formatter
from lifelong.data.scenarios.simplification import Simplification
from lifelong.data.sources import Rows
from lifelong.eval.scorers.rouge import VARIANTS, Rouge, RougeParams
from lifelong.eval.scorers.sari import Sari, SariParams, corpus_sari
from lifelong.models.tiny import tiny_tokenizer

REFERENCE = json.loads((Path(__file__).parent / "data" / "sari" / "reference.json").read_text(encoding="utf-8"))


def rows(*rs: dict) -> Rows:
    return Rows(list(rs), [f"d.jsonl line {k + 1}" for k in range(len(rs))], "d.jsonl")


# ---- formats -------------------------------------------------------------------------------------------------


def test_summarization_rows_become_prompts_responses_and_all_references():
    r = rows(
        {"document": "The council voted to close the bridge.", "summary": "Bridge to close."},
        {"document": "Rain fell all week.", "summary": ["A wet week.", "It rained for a week."]},
    )
    assert infer_format(r, "auto") == "summarization"
    check_rows(r, "summarization")
    items = to_eval_items(r, "summarization", DataConfig(rows=r.rows))
    assert items[1] == {
        "prompt": "Summarize: Rain fell all week.\nSummary:",
        "targets": ["A wet week.", "It rained for a week."],
    }
    fm = Formatter(tiny_tokenizer(), chat="off")
    ex = to_examples(r, "summarization", DataConfig(rows=r.rows), fm, 128)
    learned = [t for t, lab in zip(ex[1]["input_ids"], ex[1]["labels"]) if lab != -100]
    assert fm.tok.decode(learned, skip_special_tokens=True) == " A wet week."  # the first reference is learned


def test_simplification_items_carry_the_source_and_only_language_free_pairs_are_inferred():
    r = rows({"source": "The cat perched upon the mat.", "references": ["The cat sat on the mat.", "A cat sat."]})
    assert infer_format(r, "auto") == "simplification"
    items = to_eval_items(r, "simplification", DataConfig(rows=r.rows))
    assert items == [
        {
            "prompt": "Simplify: The cat perched upon the mat.\nSimplified:",
            "targets": ["The cat sat on the mat.", "A cat sat."],
            "source": "The cat perched upon the mat.",
        }
    ]
    one = rows({"source": "Owing to rain, we stayed in.", "target": "We stayed in because of rain."})
    assert infer_format(one, "auto") == "simplification"
    assert to_eval_items(one, "simplification", DataConfig(rows=one.rows))[0]["targets"] == [
        "We stayed in because of rain."
    ]
    simplification = Simplification()  # a translation row (it names its languages) is not taken for one
    assert not simplification.matches({"source", "target", "pair"})
    assert not simplification.matches({"source", "target", "src_lang", "tgt_lang"})


@pytest.mark.parametrize(
    "fmt,row,message",
    [
        ("summarization", {"document": "x"}, r"d.jsonl line 1: field 'summary' is missing .*data.columns"),
        ("summarization", {"document": "", "summary": "s"}, r"line 1: field 'document' must be a non-empty string"),
        ("summarization", {"document": "x", "summary": []}, r"line 1: field 'summary' must be a non-empty string or"),
        ("summarization", {"document": "x", "summary": ["ok", 3]}, r"line 1: field 'summary' has 3 at index 1"),
        ("summarization", {"document": ["x"], "summary": "s"}, r"field 'document' must be a non-empty string"),
        ("simplification", {"source": "x"}, r"line 1: field 'references' is missing \(format simplification"),
        ("simplification", {"source": "x", "references": [" "]}, r"field 'references' has \" \" at index 0"),
        ("simplification", {"source": 5, "references": ["a"]}, r"field 'source' must be a non-empty string, got 5"),
        ("simplification", {"source": "x", "target": None}, r"field 'references' is missing"),
    ],
)
def test_malformed_rows_give_one_located_error(fmt, row, message):
    with pytest.raises(ValueError, match=message):
        check_rows(rows(row), fmt)


# ---- ROUGE against rouge-score -------------------------------------------------------------------------------

PREDICTIONS = [
    "The council votes to shut the bridge for repairs in May.",
    "Scientists are running new tests on the river's water.",
    "",
    "Fishermen running boats caught fewer fish; the fishing season was cancelled.",
    "A new library opens downtown\nIt has a cafe.",
    "Prices rose by 3% in March, the highest since 2019.",
]
REFERENCES = [
    ["Bridge to close for repairs in May, council decides.", "The council voted to close the bridge."],
    ["New tests run on river water by scientists.", "Scientists test the river water again."],
    ["Empty output scores zero."],
    ["The fishing season was cancelled after poor catches.", "Fishermen caught fewer fish this year."],
    ["Downtown gets a new library.\nThe library has a cafe."],
    ["Inflation reached 3% in March, its highest level since 2019."],
]


@pytest.mark.parametrize("stem", [False, True])
@pytest.mark.parametrize("variant", VARIANTS)
def test_rouge_equals_rouge_score_on_the_same_items(variant, stem):
    from rouge_score import rouge_scorer

    ref = rouge_scorer.RougeScorer([variant], use_stemmer=stem)
    scorer = Rouge(RougeParams(variant=variant, use_stemmer=stem))
    stats = scorer.stats(PREDICTIONS, REFERENCES)
    want = [ref.score_multi(refs, pred)[variant] for pred, refs in zip(PREDICTIONS, REFERENCES)]
    assert stats[:, 0].tolist() == [s.fmeasure for s in want]  # exactly
    assert stats[:, 1].tolist() == [s.precision for s in want] and stats[:, 2].tolist() == [s.recall for s in want]
    assert float(Rouge.aggregate(stats)) == pytest.approx(100 * np.mean([s.fmeasure for s in want]), abs=1e-12)
    names = scorer.also_reported()
    assert names[:2] == (f"{variant}_precision", f"{variant}_recall") and set(names[2:]) == set(VARIANTS) - {variant}
    other = names[2]
    full = rouge_scorer.RougeScorer([other], use_stemmer=stem)
    assert Rouge.also_aggregate(stats, 2) == pytest.approx(
        100 * np.mean([full.score_multi(r, p)[other].fmeasure for p, r in zip(PREDICTIONS, REFERENCES)]), abs=1e-12
    )


def test_stemming_changes_rouge_where_word_forms_differ():
    plain = Rouge(RougeParams(variant="rouge1")).stats(PREDICTIONS[1:2], REFERENCES[1:2])[0, 0]
    stemmed = Rouge(RougeParams(variant="rouge1", use_stemmer=True)).stats(PREDICTIONS[1:2], REFERENCES[1:2])[0, 0]
    assert stemmed > plain  # running/run, tests/test match only when stemmed


class FakeLM:
    """Answers each prompt with a fixed generation (the scorers' only use of the model)."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.fm = SimpleNamespace(prompt_ids=lambda p: p)

    def generate(self, ctxs: list, max_new_tokens: int) -> list[str]:
        return [self.answers[c] for c in ctxs]


def test_rouge_scores_the_first_generated_line_and_records_it():
    items = [{"prompt": f"p{k}", "targets": refs} for k, refs in enumerate(REFERENCES)]
    lm = FakeLM({f"p{k}": " " + pred + "\nand then more text" for k, pred in enumerate(PREDICTIONS)})
    scorer = Rouge(RougeParams(variant="rouge2"))
    stats, records = scorer.score_details(lm, items)
    assert records is not None and [r["prediction"] for r in records][:2] == [p.split("\n")[0] for p in PREDICTIONS[:2]]
    assert np.array_equal(stats, scorer.stats([p.split("\n")[0] for p in PREDICTIONS], REFERENCES))
    assert records[0]["score"] == pytest.approx(100 * stats[0, 0]) and records[0]["rouge1"] == pytest.approx(
        100 * stats[0, 3]
    )
    assert scorer.metric == "rouge2" and "rouge-score" in (scorer.signature() or "")


# ---- SARI against evaluate and EASSE -------------------------------------------------------------------------


@pytest.mark.parametrize("corpus", ["three_references", "one_reference"])
def test_sari_equals_evaluate_per_sentence_and_easse_per_corpus(corpus):
    ref = REFERENCE[corpus]
    items = ref["items"]
    stats = Sari(SariParams()).stats(
        [i["source"] for i in items], [i["prediction"] for i in items], [i["references"] for i in items]
    )
    per = 100 * stats[:, 0]
    assert np.abs(per - [i["evaluate_sentence_sari"] for i in items]).max() < 1e-9
    assert float(Sari.aggregate(stats)) == pytest.approx(ref["evaluate_sari"], abs=1e-9)
    assert Sari.also_aggregate(stats, 3) == pytest.approx(ref["easse_corpus_sari"], abs=1e-9)
    assert abs(Sari.also_aggregate(stats, 3) - float(Sari.aggregate(stats))) > 0.1  # two conventions, two numbers
    # the components average back to the score
    assert np.allclose(stats[:, 1:4].mean(axis=1), stats[:, 0])


def test_sari_reproduces_evaluates_documented_example():
    ex = REFERENCE["evaluate_docstring_example"]
    stats = Sari(SariParams()).stats([ex["source"]], [ex["prediction"]], [ex["references"]])
    assert 100 * stats[0, 0] == pytest.approx(26.953601953601954, abs=1e-9) == ex["evaluate_sentence_sari"]


def test_corpus_sari_is_computed_from_summed_statistics_under_the_bootstrap():
    items = REFERENCE["three_references"]["items"]
    stats = Sari(SariParams()).stats(
        [i["source"] for i in items], [i["prediction"] for i in items], [i["references"] for i in items]
    )
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(items), size=(5, len(items)))
    boot = stats[idx]  # (n_boot, n, k), as the bootstrap resamples rows
    assert np.allclose(Sari.aggregate(boot), [float(Sari.aggregate(stats[i])) for i in idx])
    corpus = corpus_sari(boot[..., 4:].sum(axis=-2))
    assert np.allclose(corpus, [Sari.also_aggregate(stats[i], 3) for i in idx])


def test_sari_without_sources_says_which_rows_it_needs():
    lm = FakeLM({"p": "x"})
    with pytest.raises(ValueError, match=r"item 0 has no 'source'.*format: simplification"):
        Sari(SariParams()).score_details(lm, [{"prompt": "p", "targets": ["x"]}])


# ---- behaviour on a tiny model -------------------------------------------------------------------------------

WORDS = ("big red", "small blue")


def stream(seed: int = 0) -> list[dict]:
    """Stage 0 summarizes `<word> is here` as `big red` or `small blue` by the word's first letter; stage 1
    simplifies the same sentences with the opposite rule, so learning stage 1 overwrites stage 0."""
    import random

    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choice("abcdef") for _ in range(3))

    def summarize(n: int) -> list[dict]:
        return [{"document": f"{w} is here", "summary": WORDS[w[0] not in "abc"]} for w in (word() for _ in range(n))]

    def simplify(n: int) -> list[dict]:
        return [{"source": f"{w} is here", "references": [WORDS[w[0] in "abc"]]} for w in (word() for _ in range(n))]

    params = {"max_new_tokens": 14}
    return [
        {"name": "summarize", "kind": "instruct", "data": {"rows": summarize(96)},
         "eval": {"rows": summarize(32), "params": params}},
        {"name": "simplify", "kind": "instruct", "data": {"rows": simplify(96)},
         "eval": {"rows": simplify(32), "params": params}},
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


def test_the_stream_is_scored_with_rouge_then_sari_and_stage_one_is_learned(runs):
    res = runs["naive"]
    assert [(t["metric"], t["scorer"]) for t in res.tasks] == [("rougeL", "rouge"), ("sari", "sari")]
    baseline, after_summarize = res.matrix[0][0], res.matrix[1][0]
    assert after_summarize > baseline + 50, res.matrix  # ROUGE-L of the learned summaries far above the untrained
    assert res.matrix[2][1] > res.matrix[0][1] + 10, res.matrix  # SARI of stage 1 rises once it is learned


def test_replay_keeps_the_summaries_that_naive_fine_tuning_forgets(runs):
    naive, replay = runs["naive"], runs["replay"]
    forgot_naive = naive.matrix[1][0] - naive.matrix[2][0]
    forgot_replay = replay.matrix[1][0] - replay.matrix[2][0]
    assert forgot_naive > 30, naive.matrix
    assert forgot_replay < forgot_naive - 30, (naive.matrix, replay.matrix)
