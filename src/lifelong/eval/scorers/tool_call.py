"""Tool calls: the greedy generation is parsed as a JSON call `{"name": ..., "arguments": {...}}` and compared
with the gold call, field by field, as the Berkeley Function Calling Leaderboard's checks do (Patil et al. 2023,
"Gorilla: Large Language Model Connected with Massive APIs": the function name, then the arguments) but with
exact JSON equality of the arguments (no lists of acceptable values).

Parsing takes the first JSON object in the generation (text around it is tolerated: "Sure! {...}"), by
`json.JSONDecoder.raw_decode` from each `{` in turn; `arguments` given as a JSON string (the OpenAI wire format)
is parsed too. Column 0 (the matrix): the tool name is right. Beside it (`also_reported`): `arguments` (the
arguments are JSON-equal to the gold ones: keys in any order, `1` equal to `1.0`, a boolean never a number),
`call` (name and arguments both right) and `parsed` (a JSON call was found). Each item's record holds the parsed
call, or the parse error, and the gold call."""

from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
from pydantic import Field

from lifelong.config import Strict
from lifelong.data.scenarios.tool_call import canonical_call, json_equal
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer


class ToolCallParams(Strict):
    max_new_tokens: int = Field(default=64, ge=1, le=65536)
    """Generation budget per item (a call with a few arguments is 20-40 tokens)."""


def parse_call(text: str) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """The first JSON object in `text` as a call `{name, arguments}`, or None and why not."""
    dec = json.JSONDecoder()
    i, error = text.find("{"), None
    while i != -1:
        try:
            obj, _ = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            error = error or f"not valid JSON from character {i}: {e.msg} at character {e.pos}"
            i = text.find("{", i + 1)
            continue
        if not isinstance(obj.get("name"), str):  # e.g. the arguments of a call cut short: say why the call failed
            return None, error or f"the JSON object has no 'name' string: {json.dumps(obj)[:80]}"
        args = obj.get("arguments", {})
        if isinstance(args, str):  # OpenAI's wire format: the arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return None, "'arguments' is a string that is not JSON"
        if not isinstance(args, dict):
            return None, f"'arguments' is not an object: {json.dumps(args)[:80]}"
        return {"name": obj["name"], "arguments": args}, None
    return None, error or "no JSON object in the generation"


@SCORERS.register("tool_call")
class ToolCallScorer(Scorer):
    Params = ToolCallParams
    metric = "accuracy"
    formats = ("tool_call",)

    def also_reported(self) -> tuple[str, ...]:
        return ("arguments", "call", "parsed")

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        p: ToolCallParams = self.params  # type: ignore[assignment]
        ctxs = [lm.fm.prompt_ids(it["prompt"]) for it in items]
        gens = lm.generate(ctxs, max_new_tokens=p.max_new_tokens)
        out = np.zeros((len(items), 4))
        records = []
        for n, (raw, it) in enumerate(zip(gens, items)):
            gold = it["call"]
            call, error = parse_call(raw)
            name_ok = call is not None and call["name"] == gold["name"]
            args_ok = call is not None and json_equal(call["arguments"], gold["arguments"])
            out[n] = (float(name_ok), float(args_ok), float(name_ok and args_ok), float(call is not None))
            records.append(
                {
                    "index": n,
                    "score": float(name_ok),
                    "prediction": canonical_call(call["name"], call["arguments"]) if call else raw.strip(),
                    "gold": canonical_call(gold["name"], gold["arguments"]),
                    "generation": raw,
                    "parsed": call,
                    "parse_error": error,
                    "name_correct": name_ok,
                    "arguments_correct": args_ok,
                }
            )
        return out, records
