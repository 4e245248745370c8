"""The `tool_call` format's argument check (`lifelong.data.scenarios.tool_call.validate`, the JSON Schema keywords
function-calling schemas use) against the `jsonschema` library (Draft 2020-12) on the same calls: every call of
examples/data/tools and, for each, mutated arguments meant to break one keyword (a required key dropped, a value
of each other JSON type, a value outside an enum or a minimum / maximum, a boolean for a number, an integer-valued
float, an extra key with and without `additionalProperties: false`). Prints how many verdicts (valid / invalid)
agree, and every disagreement. `jsonschema` is not a dependency of lifelong; install it apart:

    .venv/bin/pip install --target /tmp/jsref jsonschema
    PYTHONPATH=/tmp/jsref .venv/bin/python bench/tool_schema_vs_jsonschema.py
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
from pathlib import Path
from typing import Any, Iterator

from lifelong.data.scenarios.tool_call import validate

ROOT = Path(__file__).resolve().parents[1]
OTHERS: list[Any] = ["text", 7, 2.5, True, None, [1], {"k": 1}]


def mutations(args: dict, schema: dict) -> Iterator[tuple[str, dict, dict]]:
    """(what, arguments, schema) variants of one call."""
    yield "as written", args, schema
    props = schema["properties"]
    for k in schema.get("required", []):
        yield f"drop required {k}", {a: v for a, v in args.items() if a != k}, schema
    for k, sub in props.items():
        for v in OTHERS:
            yield f"{k} = {json.dumps(v)}", {**args, k: v}, schema
        if "enum" in sub:
            yield f"{k} outside enum", {**args, k: "none of these"}, schema
        if "minimum" in sub:
            yield f"{k} below minimum", {**args, k: sub["minimum"] - 1}, schema
        if "maximum" in sub:
            yield f"{k} above maximum", {**args, k: sub["maximum"] + 1}, schema
        if sub.get("type") in ("integer", "number"):
            yield f"{k} integer-valued float", {**args, k: 3.0}, schema
    closed = copy.deepcopy(schema)
    closed["additionalProperties"] = False
    yield "extra key", {**args, "extra": 1}, schema
    yield "extra key, additionalProperties false", {**args, "extra": 1}, closed
    yield "as written, additionalProperties false", args, closed


def main() -> None:
    import jsonschema

    calls = []
    for path in sorted((ROOT / "examples/data/tools").glob("stage*_*.jsonl")):
        if path.name.endswith("_tools.jsonl"):
            continue
        for line in path.read_text().splitlines():
            row = json.loads(line)
            tool = next(t for t in row["tools"] if t["name"] == row["call"]["name"])
            jsonschema.Draft202012Validator.check_schema(tool["parameters"])  # the shipped schemas are valid
            calls.append((row["call"]["arguments"], tool["parameters"]))
    total = agree = invalid = 0
    for args, schema in calls:
        for what, a, s in mutations(args, schema):
            ours = validate(a, s) is None
            theirs = jsonschema.Draft202012Validator(s).is_valid(a)
            total += 1
            agree += ours == theirs
            invalid += not theirs
            if ours != theirs:
                print(f"disagree ({what}): {json.dumps(a)} ours {ours}, jsonschema {theirs}")
    version = importlib.metadata.version("jsonschema")
    print(f"jsonschema {version}: {agree} of {total} verdicts agree over {len(calls)} calls ({invalid} invalid by it)")


if __name__ == "__main__":
    main()
