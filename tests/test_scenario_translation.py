"""Continual machine translation: the `translation` format (located errors, prompts, eval items with the pair and
every reference), the `bleu` and `chrf` scorers against sacrebleu's own corpus scores (also on bootstrap
resamples of sentences), and a two-pair stream on the tiny model where naive fine-tuning forgets the first pair
and replay keeps it."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

sacrebleu = pytest.importorskip("sacrebleu")

from lifelong.config import DataConfig  # noqa: E402
from lifelong.data import check_rows, infer_format, load_rows, to_eval_items  # noqa: E402
from lifelong.eval.scorers import SCORERS  # noqa: E402
from lifelong.eval.scorers import bleu as B  # noqa: E402
from lifelong.eval.scorers import chrf as C  # noqa: E402

HYPS = [
    "The cat sat on the mat.",
    "",  # an empty generation
    "Hello world",
    "a b c d e f",
    "Das ist gut, oder nicht?",
    "the THE the the",
    "Il fait beau aujourd'hui.",
    "",
    "New York is big",
    "x",
]
REFS = [
    ["The cat is on the mat.", "There is a cat on the mat."],
    ["Nothing here."],
    ["Hello, world!", "Hi world", "hello world"],  # three references
    ["a b c d e g"],
    ["Das ist sehr gut, nicht wahr?"],
    ["The cat"],
    ["Il fait beau aujourd'hui !", "Le temps est beau aujourd'hui."],
    ["Empty hypothesis, long reference here."],
    ["New York is a big city"],
    ["x y"],
]


class StubLM:
    """Answers each prompt with a fixed generation (the `HFLM` surface the generation scorers use)."""

    class _FM:
        @staticmethod
        def prompt_ids(text: str) -> list[int]:
            return [ord(c) for c in text]

    def __init__(self, answers: dict[str, str]) -> None:
        self.fm, self.answers = self._FM(), answers
        self.calls: list[int] = []

    def generate(self, ctxs: list[list[int]], max_new_tokens: int = 32) -> list[str]:
        self.calls.append(max_new_tokens)
        return [self.answers["".join(map(chr, c))] for c in ctxs]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"smooth_method": "floor"},
        {"smooth_method": "floor", "smooth_value": 0.3},
        {"smooth_method": "add-k", "smooth_value": 2},
        {"smooth_method": "none"},
        {"tokenize": "intl", "lowercase": True},
        {"tokenize": "char"},
        {"tokenize": "zh", "max_ngram_order": 2},
        {"tokenize": "none", "max_ngram_order": 3},
    ],
)
def test_bleu_equals_sacrebleu_corpus_bleu_on_the_corpus_and_on_resamples(params):
    p = B.BleuParams(**params)
    stats = B.block(B.metric(p), HYPS, REFS)
    kw = {
        "tokenize": p.tokenize,
        "lowercase": p.lowercase,
        "smooth_method": p.smooth_method,
        "smooth_value": p.smooth_value,
    }

    def reference(idx):
        bleu = sacrebleu.BLEU(**kw, max_ngram_order=p.max_ngram_order)
        return bleu.corpus_score([HYPS[i] for i in idx], C.streams([REFS[i] for i in idx])).score

    assert float(SCORERS.get("bleu").aggregate(stats)) == pytest.approx(reference(range(len(HYPS))), abs=1e-6)
    draws = np.random.default_rng(0).integers(len(HYPS), size=(25, len(HYPS)))
    ours = SCORERS.get("bleu").aggregate(stats[draws])  # the bootstrap's shape: (n_boot, n, k)
    assert ours.shape == (25,)
    assert np.allclose(ours, [reference(d) for d in draws], atol=1e-6, rtol=0)
    assert len({round(float(x), 6) for x in ours}) > 5  # the resamples differ


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"word_order": 2},
        {"eps_smoothing": True},
        {"lowercase": True, "whitespace": True, "beta": 1},
        {"char_order": 4, "word_order": 1, "beta": 3},
    ],
)
def test_chrf_equals_sacrebleu_corpus_chrf_on_the_corpus_and_on_resamples(params):
    p = C.ChrFParams(**params)
    stats = C.block(C.metric(p), HYPS, REFS)
    kw = {k: getattr(p, k) for k in ("char_order", "word_order", "beta", "lowercase", "whitespace", "eps_smoothing")}

    def reference(idx):
        return sacrebleu.CHRF(**kw).corpus_score([HYPS[i] for i in idx], C.streams([REFS[i] for i in idx])).score

    assert float(SCORERS.get("chrf").aggregate(stats)) == pytest.approx(reference(range(len(HYPS))), abs=1e-6)
    draws = np.random.default_rng(1).integers(len(HYPS), size=(25, len(HYPS)))
    assert np.allclose(SCORERS.get("chrf").aggregate(stats[draws]), [reference(d) for d in draws], atol=1e-6, rtol=0)


def test_bleu_scores_generations_first_lines_reports_chrf_beside_it_and_signs():
    items = [{"prompt": f"Translate: {k}", "targets": r, "pair": "en-de", "source": str(k)} for k, r in enumerate(REFS)]
    answers = {f"Translate: {k}": h + ("\nand a second line" if h else "") for k, h in enumerate(HYPS)}
    lm = StubLM(answers)
    scorer = SCORERS.get("bleu")(B.BleuParams(max_new_tokens=40))
    stats, records = scorer.score_details(lm, items)
    assert lm.calls == [40]
    assert float(scorer.aggregate(stats)) == pytest.approx(sacrebleu.corpus_bleu(HYPS, C.streams(REFS)).score, abs=1e-6)
    assert scorer.also_reported() == ("chrf",)
    chrf = type(scorer).also_aggregate(stats, 0)
    assert chrf == pytest.approx(sacrebleu.corpus_chrf(HYPS, C.streams(REFS)).score, abs=1e-6)
    assert [r["prediction"] for r in records] == HYPS  # the first line only
    assert records[0]["generation"] == HYPS[0] + "\nand a second line" and records[1]["prediction"] == ""
    assert records[0]["gold"] == REFS[0] and records[0]["pair"] == "en-de"
    assert records[3]["chrf"] == pytest.approx(sacrebleu.sentence_chrf(HYPS[3], REFS[3]).score, abs=1e-6)
    sig = scorer.signature()
    assert sig.startswith("BLEU|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert "chrF2|case:mixed" in sig
    lc = SCORERS.get("chrf")(C.ChrFParams(word_order=2, lowercase=True)).signature()
    assert lc.startswith("chrF2++|case:lc|") and "nw:2" in lc


def test_scorer_parameters_are_checked():
    with pytest.raises(ValueError, match="tokenize"):
        B.BleuParams(tokenize="ja-mecab")
    with pytest.raises(ValueError, match="smooth_method"):
        B.BleuParams(smooth_method="laplace")


def write(tmp_path, rows):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = {"source": "Enter a valid date.", "target": "Geben Sie ein gültiges Datum ein.", "pair": "en-de"}


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"source": "", "target": "x", "pair": "en-de"}, "line 2: field 'source' must be a non-empty string"),
        ({"source": "a", "target": [], "pair": "en-de"}, "line 2: field 'target' is empty; give one reference"),
        ({"source": "a", "target": ["b", 3], "pair": "en-de"}, "line 2: field 'target' has 3 at index 1"),
        ({"source": "a", "target": "b", "pair": "ende"}, "line 2: field 'pair' must be two language codes"),
        (
            {"source": "a", "target": "b", "pair": "en-de", "src_lang": "en", "tgt_lang": "fr"},
            "line 2: field 'pair' \"en-de\" disagrees with src_lang/tgt_lang",
        ),
        ({"source": "a", "target": "b", "src_lang": "en"}, "line 2: a translation row needs the fields"),
        ({"source": "a", "target": "b", "src_lang": "en", "tgt_lang": "pt BR"}, "line 2: field 'tgt_lang' must be"),
    ],
)
def test_malformed_rows_are_located(tmp_path, bad, message):
    path = write(tmp_path, [GOOD, bad])
    rows = load_rows(DataConfig(path=str(path)))
    with pytest.raises(ValueError, match=f"pairs.jsonl {message}"):
        check_rows(rows, "translation")


def test_rows_become_prompts_and_items_with_the_pair_and_every_reference(tmp_path):
    rows = [
        GOOD,
        {"source": "Yes", "target": ["Oui", "Si"], "src_lang": "en", "tgt_lang": "fr"},
        {"source": "Olá", "target": "Hello", "src_lang": "pt-BR", "tgt_lang": "en"},
        {"source": "Hej", "target": "Hi", "pair": "sv-xq"},
    ]
    loaded = load_rows(DataConfig(path=str(write(tmp_path, rows))))
    assert infer_format(loaded, "auto") == "translation"
    check_rows(loaded, "translation")
    items = to_eval_items(loaded, "translation", DataConfig(rows=rows))
    assert items[0] == {
        "prompt": "Translate from English to German: Enter a valid date.",
        "targets": ["Geben Sie ein gültiges Datum ein."],
        "pair": "en-de",
        "source": "Enter a valid date.",
    }
    assert items[1]["prompt"] == "Translate from English to French: Yes" and items[1]["targets"] == ["Oui", "Si"]
    assert items[1]["pair"] == "en-fr"
    assert items[2]["prompt"].startswith("Translate from pt-BR to English:")  # unknown codes stay codes
    assert items[3]["prompt"] == "Translate from Swedish to xq: Hej"
    templated = to_eval_items(loaded, "translation", DataConfig(rows=rows, template="{source} =>"))
    assert templated[1]["prompt"] == "Yes =>" and templated[1]["targets"] == ["Oui", "Si"]


# ---- behaviour: a new language pair per stage on the tiny model --------------------------------------------

WORDS = ["red", "big", "cat", "dog", "sun", "sky"]
MAPS = {  # two synthetic "languages": each word reversed, or each letter shifted by one
    "en-xa": lambda w: w[::-1],
    "en-xb": lambda w: "".join(chr((ord(c) - 96) % 26 + 97) for c in w),
}


def pair_rows(pair: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ws = [rng.choice(WORDS) for _ in range(4)]
        out.append({"source": " ".join(ws), "target": " ".join(MAPS[pair](w) for w in ws), "pair": pair})
    return out


def stream(strategy, out: str) -> dict:
    stages = []
    for k, pair in enumerate(MAPS):
        rows = pair_rows(pair, 200, k)
        stages.append(
            {
                "name": pair,
                "kind": "instruct",
                "data": {"rows": rows},
                "eval": {"rows": rows[:32], "params": {"max_new_tokens": 20}},  # scorer auto: bleu
            }
        )
    return {
        "name": strategy if isinstance(strategy, str) else strategy["name"],
        "seed": 0,
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "strategy": strategy,
        "output_dir": out,
        "train": {"lr": 3e-3, "batch_size": 16, "max_steps": 80, "max_length": 64},
        "eval": {"batch_size": 32, "bootstrap": 50},
        "stages": stages,
    }


def test_a_new_pair_per_stage_naive_forgets_the_old_pair_replay_keeps_it(tmp_path):
    from lifelong.runner import Run
    from lifelong.validation import validate_raw

    out = {}
    for strategy in ("naive", {"name": "replay", "fraction": 0.5}):
        res = Run(validate_raw(stream(strategy, str(tmp_path))), quiet=True).execute()
        out["naive" if strategy == "naive" else "replay"] = res.matrix
    for m in out.values():
        base, after1, after2 = m
        assert base[0] < 10 and base[1] < 10  # the untrained model translates neither pair
        assert after1[0] > base[0] + 50  # pair 1 learned (BLEU)
        assert after2[1] > base[1] + 40  # then pair 2
    naive_drop = out["naive"][1][0] - out["naive"][2][0]
    replay_drop = out["replay"][1][0] - out["replay"][2][0]
    assert naive_drop > 50 and replay_drop < naive_drop - 30, out
    saved = json.loads((tmp_path / "naive" / "results.json").read_text())
    task = next(t for t in saved["tasks"] if t["name"] == "en-xa")
    assert task["scorer"] == "bleu" and task["signature"].startswith("BLEU|") and "tok:13a" in task["signature"]
    assert set(saved["also"]["en-xa"]["rows"]) == {"baseline", "en-xa", "en-xb"}  # chrF beside BLEU, every row
    assert saved["also"]["en-xa"]["metric"] == "chrf" and saved["also"]["en-xa"]["rows"]["en-xa"] > 50
    records = [
        json.loads(x) for x in (tmp_path / "naive" / "examples" / "en-xa" / "en-xa.jsonl").read_text().splitlines()
    ]
    assert records[0]["pair"] == "en-xa" and records[0]["gold"] == [pair_rows("en-xa", 1, 0)[0]["target"]]
