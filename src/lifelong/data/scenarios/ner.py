"""Continual named-entity recognition: rows of a text and its typed entity spans, or CoNLL-style tokens and BIO
tags; new entity types arrive with later stages and the earlier types must still be found (the class-incremental
NER protocol of Monaikul et al. 2021, "Continual Learning for Named Entity Recognition", AAAI, and Zheng et al.
2022, "Distilling Causal Effect from Miscellaneous Other-Class for Continual Named Entity Recognition": each
stage annotates only its own types, and a stage's test set is scored on its types after every later stage).
Scored with entity-level micro precision, recall and F1 (scorer `entity_f1`, seqeval's convention).

A row is one of
- `{"text": "...", "entities": [{"start": 0, "end": 5, "type": "PER"}, ...]}`: character spans, `end` exclusive;
  an entity may give `{"text": "Paris", "type": "LOC"}` instead of a span (located at its first occurrence in
  the text not taken by an earlier entity of the row; an error when it is not in the text);
- `{"tokens": ["John", "lives", ...], "tags": ["B-PER", "O", ...]}`: tags `O`, `B-TYPE`, `I-TYPE` (IOB2, and
  IOB1 files too: an `I-TYPE` that does not continue a TYPE entity starts one, as conlleval and seqeval read
  it); the text is the tokens joined by single spaces.

The model answers one entity per line as `type: mention` in text order, or `none` for a text without entities
(`NONE`), e.g. `PER: John Smith\\nLOC: Paris`. `data.labels` lists the entity types a data section keeps: the
training response names only those types (entities of other types are not annotated, as in class-incremental
NER) and an eval task scores only those types (gold entities of other types, and predictions of other types,
are left out). A stage's eval task without `labels` takes the types of the stage's training rows
(`lifelong.eval.tasks.stage_labels`), as a classification task shares its stage's label set."""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Optional

from lifelong.data.scenarios import SCENARIOS
from lifelong.data.scenarios.base import ScenarioFormat

NONE = "none"
"""The answer for a text without entities (of the kept types)."""
TAG = re.compile(r"^(B|I)-(\S.*)$")


def _shown(v: Any) -> str:
    s = json.dumps(v, default=str, ensure_ascii=False)
    return s if len(s) <= 60 else s[:57] + "..."


def mention_key(mention: str) -> str:
    """A mention as it is compared: internal whitespace runs as one space, no leading or trailing space; case
    and punctuation are kept (an exact span match)."""
    return " ".join(mention.split())


def bio_spans(tags: list[str], where: str = "row") -> list[tuple[str, int, int]]:
    """(type, first token, last token) of each entity of a BIO tag sequence, read as conlleval and seqeval read
    it: `B-X` starts an X entity; `I-X` continues an X entity just before it, else starts one; `O` ends one."""
    out: list[tuple[str, int, int]] = []
    cur: Optional[list] = None  # [type, start, end]
    for k, tag in enumerate(tags):
        if not isinstance(tag, str):
            raise ValueError(f"{where}: tags[{k}] must be a string (O, B-TYPE or I-TYPE), got {_shown(tag)}")
        if tag == "O":
            cur = None
            continue
        m = TAG.match(tag)
        if m is None:
            raise ValueError(
                f"{where}: tags[{k}] {_shown(tag)} is not O, B-TYPE or I-TYPE (BIO/IOB2 tags); convert other "
                "schemes (BIOES, bare types) to BIO"
            )
        kind, typ = m.group(1), m.group(2).strip()
        _check_type(typ, where, f"tags[{k}]")
        if kind == "I" and cur is not None and cur[0] == typ:
            cur[2] = k
            continue
        cur = [typ, k, k]
        out.append(cur)  # type: ignore[arg-type]
    return [(t, s, e) for t, s, e in out]


def _check_type(typ: Any, where: str, at: str) -> None:
    if not isinstance(typ, str) or not typ.strip():
        raise ValueError(f"{where}: {at}: the entity type must be a non-empty string, got {_shown(typ)}")
    if ":" in typ or "\n" in typ or typ.strip().lower() == NONE:
        raise ValueError(
            f"{where}: {at}: entity type {_shown(typ)} cannot contain ':' or a line break, nor be {NONE!r} (the "
            "answer format is `type: mention` per line); rename the type"
        )


def text_and_entities(row: dict[str, Any], where: str = "row") -> tuple[str, list[dict[str, Any]]]:
    """The row's text and its entities `{type, start, end, mention}` (character spans, `end` exclusive) in text
    order, from either field set; ValueError naming the field for anything malformed."""
    if "tokens" in row and "tags" in row and "entities" not in row:
        tokens, tags = row["tokens"], row["tags"]
        if not isinstance(tokens, list) or not tokens:
            raise ValueError(f"{where}: field 'tokens' must be a non-empty list of strings, got {_shown(tokens)}")
        for k, t in enumerate(tokens):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"{where}: tokens[{k}] must be a non-empty string, got {_shown(t)}")
        if not isinstance(tags, list) or len(tags) != len(tokens):
            n = len(tags) if isinstance(tags, list) else "no list of"
            raise ValueError(
                f"{where}: field 'tags' has {n} tags for {len(tokens)} tokens; give one tag (O, B-TYPE, I-TYPE) "
                "per token"
            )
        starts, pos = [], 0
        for t in tokens:
            starts.append(pos)
            pos += len(t) + 1
        text = " ".join(tokens)
        ents = []
        for typ, s, e in bio_spans(tags, where):
            a, b = starts[s], starts[e] + len(tokens[e])
            ents.append({"type": typ, "start": a, "end": b, "mention": text[a:b]})
        return text, ents
    raw, given = row.get("text"), row.get("entities")
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{where}: field 'text' must be a non-empty string, got {_shown(raw)}")
    text = raw
    if not isinstance(given, list):
        raise ValueError(
            f"{where}: field 'entities' must be a list of {{start, end, type}} or {{text, type}}, got {_shown(given)}"
        )
    ents = []
    taken: list[tuple[int, int]] = []
    for k, e in enumerate(given):
        at = f"entities[{k}]"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: {at} must be an object {{start, end, type}} or {{text, type}}, got {_shown(e)}")
        _check_type(e.get("type"), where, at)
        if "start" in e or "end" in e:
            sa, sb = e.get("start"), e.get("end")
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in (sa, sb)):
                raise ValueError(f"{where}: {at}: 'start' and 'end' must be integers, got {_shown(sa)}, {_shown(sb)}")
            a, b = int(sa), int(sb)  # type: ignore[arg-type]
            if not 0 <= a < b <= len(text):
                raise ValueError(
                    f"{where}: {at}: span {a}-{b} is outside the text ({len(text)} characters) or empty; spans are "
                    "character offsets, 0 <= start < end <= len(text), end exclusive"
                )
            if "text" in e and e["text"] != text[a:b]:
                raise ValueError(
                    f"{where}: {at}: 'text' {_shown(e['text'])} is not the text at {a}-{b} "
                    f"({_shown(text[a:b])}); fix the span or the mention"
                )
        elif "text" in e:
            m = e["text"]
            if not isinstance(m, str) or not m.strip():
                raise ValueError(f"{where}: {at}: 'text' must be a non-empty string, got {_shown(m)}")
            found = _free_occurrence(text, m, taken)
            if found is None:
                why = "is not in the text" if m not in text else "occurs fewer times in the text than it is listed"
                raise ValueError(
                    f"{where}: {at}: mention {_shown(m)} {why}; fix the mention (it must be written as in the "
                    "text, case included) or give 'start' and 'end'"
                )
            a, b = found, found + len(m)
        else:
            raise ValueError(f"{where}: {at} needs 'start' and 'end' (character offsets) or 'text' (the mention)")
        if not text[a:b].strip():
            raise ValueError(f"{where}: {at}: span {a}-{b} covers only whitespace")
        taken.append((a, b))
        ents.append({"type": str(e["type"]).strip(), "start": a, "end": b, "mention": text[a:b]})
    ents.sort(key=lambda x: (x["start"], x["end"]))
    return text, ents


def _free_occurrence(text: str, mention: str, taken: list[tuple[int, int]]) -> Optional[int]:
    """The first start of `mention` in `text` whose span overlaps no span in `taken`."""
    a = text.find(mention)
    while a >= 0:
        if all(a + len(mention) <= s or a >= e for s, e in taken):
            return a
        a = text.find(mention, a + 1)
    return None


def answer(entities: list[dict[str, Any]]) -> str:
    """The answer the model learns: `type: mention` per line in text order, or `none`."""
    return "\n".join(f"{e['type']}: {mention_key(e['mention'])}" for e in entities) if entities else NONE


def parse_answer(generation: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The (type, mention) pairs of a generated answer and the lines that are not `type: mention` (each a wrong
    answer, counted as a false positive by `entity_f1`). Blank lines and `none` lines name nothing."""
    found, unparsed = [], []
    for line in generation.strip().splitlines():
        s = line.strip()
        if not s or s.lower() == NONE:
            continue
        typ, sep, mention = s.partition(":")
        if sep and typ.strip() and mention_key(mention):
            found.append((typ.strip(), mention_key(mention)))
        else:
            unparsed.append(s)
    return found, unparsed


def locate(text: str, gold: list[dict[str, Any]], predicted: list[tuple[str, str]]) -> list[Optional[tuple[int, int]]]:
    """The span each predicted (type, mention) stands for, by the rule `entity_f1` scores with: a mention stands
    for a gold entity of its type with the same mention string while one is left (so a mention listed k times
    matches up to k such entities, in text order), else for the first occurrence of the string in the text that
    starts and ends at word boundaries and overlaps no span taken so far, else for none (None: not in the text).
    Under this rule, exact span-and-type matching counts exactly the (type, mention) pairs the prediction and
    the gold share as multisets."""
    spans: list[Optional[tuple[int, int]]] = [None] * len(predicted)
    free = {k: (g["type"], mention_key(g["mention"])) for k, g in enumerate(gold)}
    taken: list[tuple[int, int]] = []
    rest = []
    for n, key in enumerate(predicted):
        hit = next((k for k, g in free.items() if g == key), None)
        if hit is None:
            rest.append(n)
            continue
        del free[hit]
        spans[n] = (gold[hit]["start"], gold[hit]["end"])
        taken.append(spans[n])  # type: ignore[arg-type]
    for n in rest:
        mention = predicted[n][1]
        pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in mention.split()) + r"(?!\w)"
        for m in re.finditer(pattern, text):
            a, b = m.span()
            if all(b <= s or a >= e for s, e in taken):
                spans[n] = (a, b)
                taken.append((a, b))
                break
    return spans


@SCENARIOS.register("ner")
class NER(ScenarioFormat):
    fields: ClassVar[tuple[tuple[str, ...], ...]] = (("text", "entities"), ("tokens", "tags"))
    scorer = "entity_f1"
    example = (
        '{"text": "Ada Lovelace was born in London.", "entities": [{"start": 0, "end": 12, "type": "PER"}, '
        '{"text": "London", "type": "LOC"}]}\n'
        "List the named entities ... Text: Ada Lovelace was born in London. -> PER: Ada Lovelace\\nLOC: London"
    )
    protocol = (
        "Monaikul et al. 2021 (class-incremental NER: each stage annotates new entity types, old types still "
        "scored); entity-level micro F1 in seqeval's convention"
    )

    def check(self, row: dict[str, Any], where: str) -> None:
        super().check(row, where)
        text_and_entities(row, where)

    def kept(self, row: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """The text and the entities of the kept types (`labels`; all when unset)."""
        text, ents = text_and_entities(row)
        if self.labels:
            keep = set(self.labels)
            ents = [e for e in ents if e["type"] in keep]
        return text, ents

    def prompt(self, row: dict[str, Any]) -> str:
        text, _ = text_and_entities(row)
        return (
            f"List the named entities in the text, one per line as `type: mention`, or `none`.\nText: {text}\nEntities:"
        )

    def response(self, row: dict[str, Any]) -> str:
        return answer(self.kept(row)[1])

    def item(self, row: dict[str, Any]) -> dict[str, Any]:
        text, ents = self.kept(row)
        return {"text": text, "entities": ents, "types": list(self.labels) if self.labels else None}

    def row_labels(self, row: dict[str, Any]) -> list[str]:
        return sorted({e["type"] for e in text_and_entities(row)[1]})
