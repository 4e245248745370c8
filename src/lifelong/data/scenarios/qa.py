"""Question answering and reading comprehension: a question, its answer(s) and optionally the passage that holds
them (SQuAD, Rajpurkar et al. 2016, "SQuAD: 100,000+ Questions for Machine Comprehension of Text"); stages bring
new domains or new kinds of questions (the continual QA protocol of de Masson d'Autume et al. 2019, "Episodic
Memory in Lifelong Language Learning": SQuAD and other QA sets in sequence, all scored after each). Scored by
token-level F1 with exact match beside it (`squad`) or, for math-style questions, by accuracy on the final
answer extracted from the generation (`answer_accuracy`, GSM8K's protocol: Cobbe et al. 2021).

A row: `{"question": "...", "answers": "..." | ["...", ...] | {"text": [...], "answer_start": [...]},
"context": "..."}` (`context` optional), or `{"question": "...", "answer": "..."}` with one answer, which may be a
worked solution ending in the result (`"... so 3 + 4 = 7. #### 7"`: `answer_accuracy` extracts the result from
it as from the generation)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from lifelong.data.scenarios import SCENARIOS
from lifelong.data.scenarios.base import ScenarioFormat


def _shown(v: Any) -> str:
    """A value as the user wrote it (JSON), shortened."""
    s = json.dumps(v, default=str, ensure_ascii=False)
    return s if len(s) <= 60 else s[:57] + "..."


def _is_answer(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip()) or isinstance(v, (int, float)) and not isinstance(v, bool)


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)  # 109 -> "109", 3.5 -> "3.5"


@SCENARIOS.register("qa")
class QA(ScenarioFormat):
    fields: ClassVar[tuple[tuple[str, ...], ...]] = (("question", "answers"), ("question", "answer"))
    scorer = "squad"
    example = (
        '{"context": "Denver defeated Carolina 24-10.", "question": "Who won?", "answers": ["Denver"]}\n'
        "Context: Denver defeated Carolina 24-10.\\nQuestion: Who won?\\nAnswer: -> Denver"
    )
    protocol = (
        "SQuAD v1.1 (Rajpurkar et al. 2016: token F1 / exact match); d'Autume et al. 2019 (QA sets in sequence); "
        "GSM8K (Cobbe et al. 2021: final-answer accuracy)"
    )

    def check(self, row: dict[str, Any], where: str) -> None:
        super().check(row, where)
        q = row["question"]
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"{where}: field 'question' must be a non-empty string, got {_shown(q)}")
        ctx = row.get("context")
        if ctx is not None and (not isinstance(ctx, str) or not ctx.strip()):
            raise ValueError(f"{where}: field 'context' must be a non-empty string when given, got {_shown(ctx)}")
        if "answers" in row:
            self._answers(row, where)
        elif not _is_answer(row["answer"]):
            raise ValueError(
                f"{where}: field 'answer' must be a non-empty string (or a number), got {_shown(row['answer'])}"
            )

    def _answers(self, row: dict[str, Any], where: str) -> list[str]:
        """The reference answers of an `answers` field, checked."""
        a = row["answers"]
        fix = 'give a string, a list of strings, or SQuAD\'s {"text": [...], "answer_start": [...]}'
        if _is_answer(a):
            return [_text(a)]
        starts: list[Any] = []
        if isinstance(a, dict):
            if "text" not in a:
                raise ValueError(f"{where}: field 'answers' has no 'text' list; {fix}")
            texts, starts = a["text"], a.get("answer_start", [])
            if not isinstance(texts, list) or not isinstance(starts, list):
                raise ValueError(f"{where}: field 'answers': 'text' and 'answer_start' must be lists; {fix}")
            if starts and len(starts) != len(texts):
                raise ValueError(
                    f"{where}: field 'answers' has {len(texts)} texts but {len(starts)} answer_start values; "
                    "give one start per text (or leave answer_start out)"
                )
        elif isinstance(a, list) and a and all(isinstance(x, dict) for x in a):  # SQuAD's raw [{text, answer_start}]
            if not all("text" in x for x in a):
                raise ValueError(f"{where}: field 'answers': every answer needs a 'text'; {fix}")
            texts, starts = [x["text"] for x in a], [x["answer_start"] for x in a if "answer_start" in x]
            starts = starts if len(starts) == len(texts) else []
        elif isinstance(a, list):
            texts = a
        else:
            raise ValueError(f"{where}: field 'answers' is {_shown(a)}; {fix}")
        if not texts:
            raise ValueError(f"{where}: field 'answers' has no answer; {fix}")
        for k, t in enumerate(texts):
            if not _is_answer(t):
                raise ValueError(
                    f"{where}: field 'answers' text {k} is {_shown(t)}; each answer must be a non-empty string"
                )
        ctx = row.get("context")
        for k, (s, t) in enumerate(zip(starts, texts)):
            if not isinstance(s, int) or isinstance(s, bool) or s < 0:
                raise ValueError(f"{where}: field 'answers' answer_start {k} is {_shown(s)}; it must be an offset >= 0")
            if isinstance(ctx, str) and ctx[s : s + len(_text(t))] != _text(t):
                raise ValueError(
                    f"{where}: field 'answers': answer_start {k} ({s}) does not point at {_shown(t)} in 'context' "
                    f"(found {_shown(ctx[s : s + len(_text(t))])}); correct the offset or leave answer_start out"
                )
        return [_text(t) for t in texts]

    def references(self, row: dict[str, Any]) -> list[str]:
        return self._answers(row, "row") if "answers" in row else [_text(row["answer"])]

    def prompt(self, row: dict[str, Any]) -> str:
        q = f"Question: {row['question']}\nAnswer:"
        return f"Context: {row['context']}\n{q}" if row.get("context") is not None else q

    def response(self, row: dict[str, Any]) -> str:
        return self.references(row)[0]

    def targets(self, row: dict[str, Any]) -> list[str]:
        return self.references(row)
