"""Continual NER (format `ner`, scorer `entity_f1`): rows as text + spans or CoNLL tokens + BIO tags, located
errors, the `type: mention` answer, entity-level micro P/R/F1 equal to seqeval's on the tag sequences our spans
give (edge cases and a seeded fuzz, to 1e-6), types kept per stage (class-incremental), and a two-stage stream on
a tiny model where stage 2 brings new types: stage 1 is learned, naive forgets the old types and replay keeps
them."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from seqeval.metrics import f1_score, precision_score, recall_score

from lifelong.config import DataConfig
from lifelong.data import check_rows, infer_format, to_eval_items, to_examples
from lifelong.data.formats import Formatter
from lifelong.data.scenarios.ner import bio_spans, locate, parse_answer
from lifelong.data.sources import Rows
from lifelong.eval.scorers.entity_f1 import EntityF1
from lifelong.models.tiny import tiny_tokenizer


class CannedLM:
    """An LM stand-in whose greedy answers are given, in the order the prompts are asked (the scorer's own
    path, no model; prompts may repeat)."""

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


def rows_of(rs: list[dict], source: str = "ner.jsonl") -> Rows:
    return Rows(rs, [f"{source} line {k + 1}" for k in range(len(rs))], source)


def items_of(rs: list[dict], labels: list[str] | None = None) -> list[dict]:
    r = rows_of(rs)
    assert infer_format(r, "auto") == "ner"
    check_rows(r, "ner")
    return to_eval_items(r, "ner", DataConfig(rows=rs, labels=labels))


def score(items: list[dict], answers: list[str]) -> tuple[np.ndarray, list[dict]]:
    lm = CannedLM(answers)
    stats, records = EntityF1().score_details(lm, items)
    assert records is not None
    return stats, records


def predicted_tags(item: dict, n_tokens: int, tokens: list[str], found: list[tuple[str, str]]) -> list[str]:
    """BIO tags of the spans `entity_f1` matched the parsed entities to (`ner.locate`), on the row's tokens."""
    starts, pos = [], 0
    for t in tokens:
        starts.append(pos)
        pos += len(t) + 1
    tags = ["O"] * n_tokens
    for (typ, _), span in zip(found, locate(item["text"], item["entities"], found)):
        assert span is not None, (item["text"], found)  # every prediction of these cases is in the text
        a, b = span
        first, last = starts.index(a), max(k for k, s in enumerate(starts) if s < b)
        assert starts[last] + len(tokens[last]) == b  # token aligned
        assert all(x == "O" for x in tags[first : last + 1])  # no overlap
        tags[first : last + 1] = [f"B-{typ}"] + [f"I-{typ}"] * (last - first)
    return tags


EDGE_CASES: list[tuple[list[str], list[str], str]] = [
    # tokens, gold tags, generated answer
    ("John lives in New York".split(), ["B-PER", "O", "O", "B-LOC", "I-LOC"], "PER: John\nLOC: New York"),
    # partial span and wrong type: no credit
    ("John lives in New York".split(), ["B-PER", "O", "O", "B-LOC", "I-LOC"], "LOC: John\nLOC: New"),
    # B/I mismatch in the gold: I- after O starts an entity, I- of another type starts a new one (IOB1 reading)
    ("Paris Hilton met Ann Lee".split(), ["I-PER", "I-PER", "O", "B-PER", "I-LOC"], "PER: Paris Hilton\nPER: Ann"),
    ("Paris Hilton met Ann Lee".split(), ["I-PER", "I-PER", "O", "B-PER", "I-LOC"], "PER: Ann\nLOC: Lee"),
    ("Paris Hilton met Ann Lee".split(), ["I-PER", "I-PER", "O", "B-PER", "I-LOC"], "PER: Ann Lee"),
    # B- right after an entity of the same type: two entities
    ("Bob Ann went home".split(), ["B-PER", "B-PER", "O", "O"], "PER: Bob Ann"),
    ("Bob Ann went home".split(), ["B-PER", "B-PER", "O", "O"], "PER: Bob\nPER: Ann"),
    # repeated mentions: listed once for two gold copies, twice for one, the same string as two types
    ("Paris and Paris again".split(), ["B-LOC", "O", "B-LOC", "O"], "LOC: Paris"),
    ("Paris and Paris again".split(), ["B-LOC", "O", "O", "O"], "LOC: Paris\nLOC: Paris"),
    ("Paris Hilton visited Paris".split(), ["B-PER", "I-PER", "O", "B-LOC"], "LOC: Paris"),
    ("Paris Hilton visited Paris".split(), ["B-PER", "I-PER", "O", "B-LOC"], "PER: Paris Hilton\nLOC: Paris"),
    ("Paris Hilton visited Paris".split(), ["B-PER", "I-PER", "O", "O"], "PER: Paris\nLOC: Paris"),
    # nothing to find, nothing found; nothing found; something invented
    ("nothing here".split(), ["O", "O"], "none"),
    ("Oslo is cold".split(), ["B-LOC", "O", "O"], "none"),
    ("nothing here".split(), ["O", "O"], "MISC: nothing"),
]


def fuzz_cases(n: int, seed: int = 0) -> list[tuple[list[str], list[str], str]]:
    """Random tag sequences (valid and IOB1-style) over a small vocabulary, so strings repeat, with answers that
    keep, drop, retype, shorten and invent entities, in text order."""
    rng = random.Random(seed)
    vocab, types = ["ab", "cd", "ef", "gh", "ij"], ["PER", "LOC", "ORG"]
    out = []
    for _ in range(n):
        k = rng.randint(1, 9)
        tokens = [rng.choice(vocab) for _ in range(k)]
        tags = [rng.choice(["O", "O", "O"] + [f"{p}-{t}" for p in "BI" for t in types]) for _ in range(k)]
        found: list[tuple[int, str, str]] = []
        spans = bio_spans(tags)
        for typ, s, e in spans:
            r = rng.random()
            if r < 0.5:
                found.append((s, typ, " ".join(tokens[s : e + 1])))
            elif r < 0.65:
                found.append((s, rng.choice(types), " ".join(tokens[s : e + 1])))
            elif r < 0.8 and e > s:
                found.append((s, typ, " ".join(tokens[s:e])))
        if rng.random() < 0.4:
            j = rng.randrange(k)
            found.append((j, rng.choice(types), tokens[j]))
        found.sort()
        answer = "\n".join(f"{t}: {m}" for _, t, m in found) or "none"
        out.append((tokens, tags, answer))
    return out


def representable(tokens: list[str], tags: list[str], answer: str) -> bool:
    """Whether every parsed entity is matched to a token-aligned span overlapping no other (seqeval needs tags)."""
    item = items_of([{"tokens": tokens, "tags": tags}])[0]
    found, _ = parse_answer(answer)
    try:
        predicted_tags(item, len(tokens), tokens, found)
    except AssertionError:
        return False
    return True


def test_entity_f1_equals_seqeval_on_the_same_items(capsys):
    fuzz = [c for c in fuzz_cases(400) if representable(*c)]
    assert len(fuzz) > 300  # most random answers can be written as tags
    for cases in (EDGE_CASES, fuzz, EDGE_CASES + fuzz):
        items = items_of([{"tokens": t, "tags": g} for t, g, _ in cases])
        stats, records = score(items, [a for _, _, a in cases])
        y_true = [g for _, g, _ in cases]
        y_pred = [predicted_tags(it, len(t), t, parse_answer(a)[0]) for it, (t, _, a) in zip(items, cases)]
        ours = (float(EntityF1.aggregate(stats)), EntityF1.also_aggregate(stats, 0), EntityF1.also_aggregate(stats, 1))
        ref = tuple(100 * float(f(y_true, y_pred, zero_division=0)) for f in (f1_score, precision_score, recall_score))
        assert ours == pytest.approx(ref, abs=1e-6)
    with capsys.disabled():  # the measured agreement on all items (docs/scenarios.md)
        print(
            f"\nentity_f1 vs seqeval on {len(cases)} items: F1/P/R {ours} vs {ref}, "
            f"max |diff| {max(abs(a - b) for a, b in zip(ours, ref)):.2e}"
        )
    # per-item records say what was matched where
    row = {"tokens": "Paris Hilton visited Paris".split(), "tags": ["B-PER", "I-PER", "O", "B-LOC"]}
    stats, records = score(items_of([row]), ["PER: Paris Hilton\nLOC: Paris"])
    assert stats.tolist() == [[2.0, 0.0, 0.0]]
    assert [p["span"] for p in records[0]["predicted"]] == [[0, 12], [21, 26]]


def test_counts_and_answer_parsing():
    items = items_of(
        [
            {
                "text": "Ada Lovelace met Charles Babbage in London.",
                "entities": [
                    {"start": 0, "end": 12, "type": "PER"},
                    {"text": "Charles Babbage", "type": "PER"},
                    {"text": "London", "type": "LOC"},
                ],
            }
        ]
    )
    assert items[0]["targets"] == ["PER: Ada Lovelace\nPER: Charles Babbage\nLOC: London"]
    # a line that is not `type: mention` is a false positive; blank lines and `none` name nothing
    stats, rec = score(items, ["PER: Ada  Lovelace\n\nsomething else\nLOC: london\nnone"])
    assert stats.tolist() == [[1.0, 2.0, 2.0]]  # case matters; whitespace runs do not
    assert rec[0]["unparsed"] == ["something else"]
    assert parse_answer("none") == ([], [])
    assert parse_answer(" PER : Ada\nLOC:") == ([("PER", "Ada")], ["LOC:"])
    # F1 is corpus-level: from the summed counts, not the mean of per-item F1
    s = np.array([[1, 0, 0], [0, 1, 3]], dtype=float)
    assert float(EntityF1.aggregate(s)) == pytest.approx(100 * 2 / (2 + 1 + 3))
    assert float(EntityF1.aggregate(np.zeros((2, 3)))) == 0.0
    boot = EntityF1.aggregate(np.stack([s, s[::-1], np.zeros((2, 3))]))  # the bootstrap's (n_boot, n, k)
    assert boot.shape == (3,) and boot[0] == boot[1] and boot[2] == 0.0


@pytest.mark.parametrize(
    "row,message",
    [
        ({"tokens": ["John", "lives"], "tags": ["B-PER"]}, r"ner.jsonl line 1: field 'tags' has 1 tags for 2 tokens"),
        (
            {"tokens": ["John", "lives"], "tags": ["S-PER", "O"]},
            r"ner.jsonl line 1: tags\[0\] \"S-PER\" is not O, B-TYPE",
        ),
        ({"tokens": ["John", "lives"], "tags": ["B-", "O"]}, r"ner.jsonl line 1: tags\[0\] \"B-\" is not O, B-TYPE"),
        ({"tokens": ["John", ""], "tags": ["B-PER", "O"]}, r"ner.jsonl line 1: tokens\[1\] must be a non-empty string"),
        (
            {"text": "John", "entities": [{"start": 2, "end": 9, "type": "PER"}]},
            r"ner.jsonl line 1: entities\[0\]: span 2-9 is outside the text \(4 characters\)",
        ),
        ({"text": "John", "entities": [{"start": 3, "end": 3, "type": "PER"}]}, r"entities\[0\]: span 3-3 is outside"),
        (
            {"text": "John", "entities": [{"text": "Jane", "type": "PER"}]},
            r"ner.jsonl line 1: entities\[0\]: mention \"Jane\" is not in the text; fix the mention",
        ),
        (
            {"text": "John", "entities": [{"text": "John", "type": "PER"}, {"text": "John", "type": "PER"}]},
            r"entities\[1\]: mention \"John\" occurs fewer times in the text than it is listed",
        ),
        (
            {"text": "John", "entities": [{"start": 0, "end": 4, "text": "Jon", "type": "PER"}]},
            r"entities\[0\]: 'text' \"Jon\" is not the text at 0-4",
        ),
        (
            {"text": "John", "entities": [{"text": "John", "type": "a: b"}]},
            r"entities\[0\]: entity type \"a: b\" cannot",
        ),
        ({"text": "John", "entities": [{"text": "John"}]}, r"entities\[0\]: the entity type must be a non-empty"),
        ({"text": "John", "entities": "John"}, r"field 'entities' must be a list"),
    ],
)
def test_malformed_rows_give_one_located_error(row, message):
    good = {"text": "fine", "entities": []}
    with pytest.raises(ValueError, match=message):
        check_rows(rows_of([row, good]), "ner")
    with pytest.raises(ValueError, match=message.replace("line 1", "line 2")):
        check_rows(rows_of([good, row]), "ner")


def test_kept_types_restrict_training_answers_and_scoring():
    rs = [{"tokens": "Ann works at Acme in Oslo".split(), "tags": ["B-PER", "O", "O", "B-ORG", "O", "B-LOC"]}]
    fm = Formatter(tiny_tokenizer(), chat="none")
    ex = to_examples(rows_of(rs), "ner", DataConfig(rows=rs, labels=["ORG"]), fm, 512)
    assert ex[0]["response_text"] == "ORG: Acme"  # other types are not annotated in this stage
    assert to_examples(rows_of(rs), "ner", DataConfig(rows=rs), fm, 512)[0]["response_text"] == (
        "PER: Ann\nORG: Acme\nLOC: Oslo"
    )
    old = items_of(rs, labels=["PER", "LOC"])
    assert old[0]["types"] == ["PER", "LOC"] and old[0]["targets"] == ["PER: Ann\nLOC: Oslo"]
    # a prediction of a type the task does not score is left out, neither right nor wrong
    stats, rec = score(old, ["PER: Ann\nORG: Acme"])
    assert stats.tolist() == [[1.0, 0.0, 1.0]]
    assert [p["type"] for p in rec[0]["predicted"]] == ["PER"]
    stats, _ = score(items_of(rs), ["PER: Ann\nORG: Acme"])
    assert stats.tolist() == [[2.0, 0.0, 1.0]]


def test_a_stage_eval_task_scores_the_types_of_its_training_rows(tmp_path):
    from lifelong.eval.tasks import build_suite
    from lifelong.stages import STAGE_KINDS
    from lifelong.validation import validate_raw

    full = [{"tokens": "Ann works at Acme in Oslo".split(), "tags": ["B-PER", "O", "O", "B-ORG", "O", "B-LOC"]}]
    stage2 = [{"text": "Acme hired Bob", "entities": [{"text": "Acme", "type": "ORG"}]}]
    raw = stream(0, [("people", ["PER", "LOC"]), ("orgs", ["ORG"])], 2, str(tmp_path))
    raw["stages"][0]["data"]["rows"] = full
    raw["stages"][0]["eval"] = {"rows": full}
    raw["stages"][1]["data"]["rows"] = stage2
    raw["stages"][1]["eval"] = {"rows": full, "labels": ["PER", "ORG"]}  # its own labels win
    cfg = validate_raw(raw)
    tasks = build_suite(cfg, [STAGE_KINDS.get(s.kind)() for s in cfg.stages])
    assert [t.scorer.metric for t in tasks] == ["f1", "f1"]
    assert tasks[0].items[0]["types"] == ["LOC", "ORG", "PER"]  # stage 1's training rows have all three
    assert tasks[1].items[0]["types"] == ["PER", "ORG"]


# ---------------------------------------------------------------- behaviour on a tiny model

NAMES = {
    "PER": ["bob", "ann", "tom", "eve", "sam", "liz"],
    "LOC": ["rome", "oslo", "lima", "kiev", "bern", "doha"],
    "ORG": ["acme", "ikea", "fifa", "nasa", "opec", "nato"],
    "DAY": ["monday", "friday", "sunday", "tuesday"],
}
FILLER = ["we", "saw", "it", "at", "so", "go", "and", "the"]


def ner_rows(types: list[str], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """Short texts of filler words with one or two entities of `types` (mentions may repeat)."""
    out = []
    for _ in range(n):
        words = [rng.choice(FILLER) for _ in range(3)]
        ents = []
        for _ in range(rng.randint(1, 2)):
            t = rng.choice(types)
            w = rng.choice(NAMES[t])
            ents.append((t, w))
            words.insert(rng.randint(0, len(words)), w)
        out.append({"text": " ".join(words), "entities": [{"text": w, "type": t} for t, w in ents]})
    return out


def stream(seed: int, stages: list[tuple[str, list[str]]], n_train: int, out: str, strategy: Any = "naive") -> dict:
    rng = random.Random(seed)
    name = strategy if isinstance(strategy, str) else strategy["name"]
    return {
        "name": name,
        "seed": seed,
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "strategy": strategy,
        "output_dir": out,
        "train": {"lr": 3e-3, "batch_size": 16, "max_steps": 150, "max_length": 64},
        "eval": {"batch_size": 32, "bootstrap": 0},
        "stages": [
            {
                "name": n,
                "kind": "instruct",
                "data": {"rows": ner_rows(t, n_train, rng), "template": "{text} =>"},
                "eval": {"rows": ner_rows(t, 24, rng), "template": "{text} =>", "params": {"max_new_tokens": 24}},
            }
            for n, t in stages
        ],
    }


def test_new_types_in_stage_two_naive_forgets_the_old_types_replay_keeps_them(tmp_path):
    from lifelong.runner import Run
    from lifelong.validation import validate_raw

    stages = [("people_places", ["PER", "LOC"]), ("orgs_days", ["ORG", "DAY"])]
    m = {}
    for strategy in ("naive", {"name": "replay", "fraction": 0.5}):
        raw = stream(0, stages, 200, str(tmp_path), strategy)
        res = Run(validate_raw(raw), quiet=True).execute()
        m[raw["name"]] = res.matrix
    naive, replay = m["naive"], m["replay"]
    assert naive[1][0] > naive[0][0] + 40, naive  # stage 1's types are learned (F1 above the baseline row)
    assert naive[2][1] > naive[0][1] + 40, naive  # and stage 2's
    assert naive[2][0] < naive[1][0] - 40, naive  # naive: the old types are no longer found
    assert replay[2][0] > naive[2][0] + 30, (naive, replay)  # replay still finds them
