"""A run fits eval items into the model's context (no crash past a GPT-2's positions, nothing cut silently),
and `lifelong eval` scores the same fitted items, so its scores equal the run's matrix."""

from __future__ import annotations

import json

from lifelong.runner import Run
from lifelong.testing import tiny_run_config
from lifelong.validation import validate_raw


def test_a_run_fits_long_eval_items_into_the_context_and_says_so(tmp_path):
    raw = tiny_run_config("naive", n_stages=1, steps=2, output_dir=str(tmp_path / "runs"), name="fit")
    raw["model"] = {"tiny": "gpt2", "tiny_config": {"n_positions": 48}}
    raw["train"]["max_length"] = 40
    long_prompt = "t0 " + "abc " * 30 + "?"  # ~125 characters: past the 48 positions of the model
    raw["eval"]["bootstrap"] = 0
    raw["eval"]["probes"] = [
        {
            "name": "long",
            "rows": [{"text": long_prompt, "label": "yes"}, {"text": "t0 ab?", "label": "no"}],
            "labels": ["no", "yes"],
        }
    ]
    run = Run(validate_raw(raw), quiet=True)
    probe = next(t for t in run.tasks if t.name == "long")
    assert probe.lengths is not None and probe.lengths.truncated == 1 and probe.lengths.dropped == 0
    run.execute()  # scoring past the model's positions would raise IndexError in a GPT-2
    events = [json.loads(line) for line in (run.run_dir / "events.jsonl").read_text().splitlines()]
    fit = [e for e in events if e["type"] == "eval_fit"]
    assert fit and fit[0]["task"] == "long" and fit[0]["truncated"] == 1 and "inline row 0" in fit[0]["first"]
