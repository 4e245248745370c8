"""`lifelong ls strategies|stages|scorers|merges|editors|formats|benchmarks|config`: registered methods with their
documented parameters."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

WHAT = ("strategies", "stages", "scorers", "merges", "editors", "formats", "benchmarks", "config")

BASE_EXAMPLES = {
    "text": ('{"text": "A document to learn as language modelling."}', "packed into blocks; every token is learned"),
    "prompt_response": ('{"prompt": "Capital of France?", "response": "Paris"}', "learns the response"),
    "messages": (
        '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}',
        "learns the assistant turns",
    ),
    "classification": ('{"text": "Great film!", "label": "positive"}', "the label set becomes the options"),
    "choice": ('{"prompt": "2+2=", "options": ["3", "4"], "answer": 1}', "scored by option log-likelihood"),
    "preference": ('{"prompt": "Say hi", "chosen": "Hello!", "rejected": "Go away."}', "DPO pairs"),
    "edit": (
        '{"prompt": "{} is the capital of", "subject": "Paris", "target_new": "Rome"}',
        "a knowledge-edit request (docs/editing.md)",
    ),
}
"""Two lines per base format for `lifelong ls formats`: a row, and what happens to it."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ls", help="list strategies, stage kinds, scorers, merges, editors, formats, benchmarks or config fields"
    )
    p.add_argument("what", choices=WHAT)


def _fields(model: Any, indent: str = "    ") -> list[str]:
    out = []
    for name, f in model.model_fields.items():
        default = "required" if f.is_required() else f"default {f.get_default(call_default_factory=True)!r}"
        args = getattr(f.annotation, "__args__", None)  # Optional[int], Literal[...]: show the arguments too
        ann = (None if args else getattr(f.annotation, "__name__", None)) or str(f.annotation).replace("typing.", "")
        out.append(f"{indent}{f.alias or name}: {ann} ({default})")
        if f.description:
            out.append(f"{indent}    {' '.join(f.description.split())}")
    return out


def main(args: argparse.Namespace) -> int:
    from lifelong.config import DataConfig, EvalConfig, EvalTaskConfig, ModelConfig, RunConfig, StageConfig, TrainConfig
    from lifelong.editing import EDITORS
    from lifelong.eval.scorers import SCORERS
    from lifelong.merging import MERGE_METHODS
    from lifelong.stages import STAGE_KINDS
    from lifelong.strategies import STRATEGIES

    lines: list[str] = []
    if args.what == "formats":
        from lifelong.data.scenarios import SCENARIOS

        for name, (row, what) in BASE_EXAMPLES.items():
            lines += [f"{name}:", f"    {row}", f"    {what}"]
        for name, cls in SCENARIOS.items():
            first, _, second = cls.example.partition("\n")
            fields = " | ".join(" + ".join(f) for f in cls.fields)
            lines += [f"{name} (scenario; fields {fields}; scorer {cls.scorer}):", f"    {first}", f"    {second}"]
            if cls.protocol:
                lines.append(f"    protocol: {cls.protocol}")
    elif args.what == "benchmarks":
        from lifelong.benchmarks import BENCHMARKS

        for name, bench in BENCHMARKS.items():
            doc = inspect.getdoc(bench) or ""
            lines.append(f"{name}: {' '.join(doc.split(chr(10) * 2)[0].split()) if doc else ''}")
            if bench.tasks:
                lines.append(f"    tasks: {', '.join(bench.tasks)}")
            for number, order in sorted(bench.orders.items()):
                lines.append(f"    order {number}: {' -> '.join(order)}")
            lines += _fields(bench.Params)
    elif args.what == "config":
        for title, model in (
            ("run", RunConfig),
            ("model", ModelConfig),
            ("train", TrainConfig),
            ("stages[]", StageConfig),
            ("stages[].data", DataConfig),
            ("stages[].eval / eval.probes[]", EvalTaskConfig),
            ("eval", EvalConfig),
        ):
            lines += [f"{title}:"] + _fields(model)
    else:
        reg: Any = {
            "strategies": STRATEGIES,
            "stages": STAGE_KINDS,
            "scorers": SCORERS,
            "merges": MERGE_METHODS,
            "editors": EDITORS,
        }[args.what]
        for name, cls in reg.items():
            doc = inspect.getdoc(cls) or ""
            lines.append(f"{name}: {' '.join(doc.split(chr(10) * 2)[0].split()) if doc else ''}")
            flags = {
                k: getattr(cls, k)
                for k in (
                    "needs_task_identity",
                    "supports_distributed",
                    "supports_fsdp",
                    "supports_deepspeed",
                    "stores_examples",
                    "trainable",
                    "higher_is_better",
                    "uses_base",
                    "n_models",
                    "formats",
                    "batched",
                    "changes_weights",
                    "needs_training",
                )
                if hasattr(cls, k)
            }
            if flags:
                lines.append("    capabilities: " + ", ".join(f"{k}={v}" for k, v in flags.items()))
            if args.what == "merges":  # mergekit's "input" parameters: per model, or every model's default
                per_model = ", ".join(f"{k} (default {v})" for k, v in cls.model_params.items())
                lines.append(f"    per-model parameters: {per_model}; a listed base_model is {cls.base_in_models}")
            if hasattr(cls, "Params"):
                lines += _fields(cls.Params)
    print("\n".join(lines))
    return 0
