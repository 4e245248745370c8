"""Tool-incremental learning: a request, the tools on offer (name, description, JSON-schema parameters) and the
one call that serves it; stages bring new tools and the old ones must still be called right (Toolformer,
Schick et al. 2023, and ToolkenGPT, Hao et al. 2023, for tools learned into the weights; tool use from
documentation, Hsieh et al. 2023, "Tool Documentation Enables Zero-Shot Tool-Usage with Large Language Models",
for tools kept outside them; the call format is the JSON function call of the Berkeley Function Calling
Leaderboard, Patil et al. 2023, "Gorilla").

A row: `{"prompt": "What's the weather in Oslo?", "tools": [{"name": "get_weather", "description": "...",
"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
"call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}`. The call must name a tool of the row and its
arguments must validate against that tool's parameters (checked here, see `validate`). The default prompt lists
the tools (name, description, parameters as compact JSON) and asks for one JSON call; the model learns the
call's canonical JSON (`{"name": ..., "arguments": {...}}`, argument keys sorted). A `data.template` over the
row's fields (e.g. `"Request: {prompt}"`) leaves the tools out of the prompt: the tools must then be known from
the weights, or retrieved from a memory stage, which takes the same tool objects as documents (`tool_document`).

`validate` checks the JSON Schema keywords function-calling schemas use: `type` (one or a list: string, integer,
number, boolean, array, object, null), `properties`, `required`, `additionalProperties`, `enum`, `items`,
`minimum` / `maximum`, `minLength` / `maxLength`, `minItems` / `maxItems`; other keywords are not checked."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Optional

from lifelong.data.scenarios import SCENARIOS
from lifelong.data.scenarios.base import ScenarioFormat

TYPES = ("string", "integer", "number", "boolean", "array", "object", "null")


def _shown(v: Any) -> str:
    s = json.dumps(v, default=str, ensure_ascii=False)
    return s if len(s) <= 60 else s[:57] + "..."


def compact(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _sorted(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _sorted(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [_sorted(x) for x in v]
    return v


def canonical_call(name: str, arguments: dict[str, Any]) -> str:
    """The JSON a model learns to answer: name first, then the arguments with their keys sorted."""
    return json.dumps({"name": name, "arguments": _sorted(arguments)}, ensure_ascii=False)


def tool_line(tool: dict[str, Any]) -> str:
    """One tool as a prompt lists it: `name: description Parameters: {compact JSON schema}`."""
    return f"{tool['name']}: {tool['description']} Parameters: {compact(tool['parameters'])}"


def tool_document(tool: dict[str, Any]) -> str:
    """One tool as a memory document (a memory stage's row `{name, description, parameters}`)."""
    return f"Tool {tool_line(tool)}"


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two parsed JSON values: objects by keys (any order), arrays in order, numbers by value
    (`1` equals `1.0`), but a boolean never equals a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _is(v: Any, t: str) -> bool:
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    return {
        "string": isinstance(v, str),
        "integer": number and float(v).is_integer(),
        "number": number,
        "boolean": isinstance(v, bool),
        "array": isinstance(v, list),
        "object": isinstance(v, dict),
        "null": v is None,
    }[t]


def validate(value: Any, schema: dict[str, Any], path: str = "arguments") -> Optional[str]:
    """The first way `value` breaks `schema` (keywords in the module docstring), as `path: problem`, or None."""
    t = schema.get("type")
    if t is not None:
        ts = t if isinstance(t, list) else [t]
        if not any(_is(value, x) for x in ts):
            return f"{path} must be {' or '.join(ts)}, got {_shown(value)}"
    if "enum" in schema and not any(json_equal(value, e) for e in schema["enum"]):
        return f"{path} must be one of {_shown(schema['enum'])}, got {_shown(value)}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value:
                return f"{path} lacks the required {k!r}"
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                problem = validate(v, props[k], f"{path}.{k}")
            elif extra is False:
                problem = f"{path} has {k!r}, which the tool does not take (its parameters: {', '.join(props)})"
            else:
                problem = validate(v, extra, f"{path}.{k}") if isinstance(extra, dict) else None
            if problem:
                return problem
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            return f"{path} has {len(value)} items, outside minItems / maxItems"
        for i, v in enumerate(value):
            problem = validate(v, schema["items"], f"{path}[{i}]") if isinstance(schema.get("items"), dict) else None
            if problem:
                return problem
    if isinstance(value, str) and not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
        return f"{path} has {len(value)} characters, outside minLength / maxLength"
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"]:
            return f"{path} is {value}, outside minimum / maximum"
    return None


def schema_problem(schema: Any, path: str) -> Optional[str]:
    """The first problem of a parameters schema itself (an object schema whose property types are known)."""
    if not isinstance(schema, dict):
        return f"{path} must be a JSON schema object, got {_shown(schema)}"
    t = schema.get("type")
    for x in t if isinstance(t, list) else [t] if t is not None else []:
        if x not in TYPES:
            return f"{path}.type {_shown(x)} is not a JSON type ({', '.join(TYPES)})"
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        return f"{path}.properties must be an object of property schemas, got {_shown(props)}"
    for k, sub in props.items():
        problem = schema_problem(sub, f"{path}.properties.{k}")
        if problem:
            return problem
    req = schema.get("required", [])
    if not isinstance(req, list) or any(k not in props for k in req):
        return f"{path}.required must list names of its properties ({', '.join(props)}), got {_shown(req)}"
    if isinstance(schema.get("items"), dict):
        return schema_problem(schema["items"], f"{path}.items")
    return None


def check_tool(tool: Any, where: str, at: str = "tool") -> None:
    """A tool definition `{name, description, parameters}` (a row's `tools` entry or a memory stage's row)."""
    if not isinstance(tool, dict):
        raise ValueError(f"{where}: {at} must be an object {{name, description, parameters}}, got {_shown(tool)}")
    for f in ("name", "description"):
        if not isinstance(tool.get(f), str) or not tool[f].strip():
            raise ValueError(f"{where}: {at} field {f!r} must be a non-empty string, got {_shown(tool.get(f))}")
    params = tool.get("parameters")
    problem = schema_problem(params, f"{at} {tool['name']!r} parameters")
    if problem is None and isinstance(params, dict) and params.get("type") != "object":
        problem = f"{at} {tool['name']!r} parameters must be a schema of type object (the call's arguments)"
    if problem:
        raise ValueError(f"{where}: {problem}")


@SCENARIOS.register("tool_call")
class ToolCall(ScenarioFormat):
    fields: ClassVar[tuple[tuple[str, ...], ...]] = (("prompt", "tools", "call"),)
    scorer = "tool_call"
    example = (
        '{"prompt": "Weather in Oslo?", "tools": [{"name": "get_weather", "description": "Current weather.", '
        '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}], '
        '"call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}\n'
        'Tools: - get_weather: ... Request: Weather in Oslo? -> {"name": "get_weather", "arguments": {"city": "Oslo"}}'
    )
    protocol = (
        "tools learned in the weights (Toolformer, Schick et al. 2023; ToolkenGPT, Hao et al. 2023) or read from "
        "documentation (Hsieh et al. 2023); JSON calls as in Gorilla / BFCL (Patil et al. 2023)"
    )

    def check(self, row: dict[str, Any], where: str) -> None:
        super().check(row, where)
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise ValueError(
                f"{where}: field 'prompt' must be a non-empty string (the request), got {_shown(row['prompt'])}"
            )
        tools = row["tools"]
        if not isinstance(tools, list) or not tools:
            raise ValueError(f"{where}: field 'tools' must be a non-empty list of {{name, description, parameters}}")
        names: dict[str, dict] = {}
        for k, tool in enumerate(tools):
            check_tool(tool, where, f"tools[{k}]")
            if tool["name"] in names:
                raise ValueError(f"{where}: tools[{k}] repeats the tool name {tool['name']!r}; names are unique")
            names[tool["name"]] = tool
        call = row["call"]
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or "arguments" not in call:
            raise ValueError(
                f'{where}: field \'call\' must be {{"name": ..., "arguments": {{...}}}}, got {_shown(call)}'
            )
        if call["name"] not in names:
            raise ValueError(
                f"{where}: field 'call' names the tool {call['name']!r}, which is not in the row's tools "
                f"({', '.join(names)}); add its definition to 'tools' or correct the name"
            )
        if not isinstance(call["arguments"], dict):
            raise ValueError(f"{where}: field 'call.arguments' must be an object, got {_shown(call['arguments'])}")
        problem = validate(call["arguments"], names[call["name"]]["parameters"], "call.arguments")
        if problem:
            raise ValueError(f"{where}: {problem} (tool {call['name']!r}); correct the call or the tool's parameters")

    def prompt(self, row: dict[str, Any]) -> str:
        tools = "\n".join(f"- {tool_line(t)}" for t in row["tools"])
        return (
            f"Tools:\n{tools}\n\nRequest: {row['prompt']}\n"
            'Answer with one JSON call {"name": ..., "arguments": {...}}.'
        )

    def response(self, row: dict[str, Any]) -> str:
        return canonical_call(row["call"]["name"], row["call"]["arguments"])

    def item(self, row: dict[str, Any]) -> dict[str, Any]:
        return {
            "call": {"name": row["call"]["name"], "arguments": row["call"]["arguments"]},
            "tools": [t["name"] for t in row["tools"]],
        }
