"""An `edit` stage inside a stream: the results matrix shows the edits landing, whether they hurt the
earlier task, and a later fine-tuning stage erasing them."""

import json

import pytest

from lifelong.configio import ConfigError
from lifelong.runner import run
from lifelong.testing import fact_requests
from lifelong.validation import validate_raw


def stream(fs, tmp_path, **edit):
    subjects = list(fs.facts)
    edited = subjects[:4]
    rows = fact_requests(fs.facts, edited)
    (tmp_path / "edits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    known = [{"prompt": f"The home of {s}", "response": fs.facts[s]} for s in subjects[20:28]]
    old = [
        {"prompt": t.replace("{}", s), "response": fs.facts[s]}
        for s in edited
        for t in ("The home of {}", "The residence of {}", "The town of {}")
    ]
    return {
        "name": "edit-stream",
        "output_dir": str(tmp_path / "runs"),
        "torch_threads": 1,
        "model": {"path": fs.path},
        "train": {"lr": 3e-3, "batch_size": 12, "max_steps": 15, "max_length": 16},
        "eval": {"batch_size": 16, "bootstrap": 0},
        "stages": [
            {
                "name": "known",
                "data": {"rows": known},
                "eval": {"rows": known, "params": {"max_new_tokens": 2}},
                "train": {"lr": 1e-3},
            },
            {
                "name": "edits",
                "kind": "edit",
                "data": {"path": str(tmp_path / "edits.jsonl")},
                "edit": {"method": "rome", "params": {"layer": 0, "n_prefixes": 5, "stats": fs.stats}, **edit},
            },
            {"name": "refresh", "data": {"rows": old}},
        ],
    }


def test_edit_stage_in_a_stream(fact_setup, tmp_path):
    cfg = validate_raw(stream(fact_setup, tmp_path))
    res = run(cfg, quiet=True)
    cols = [t["name"] for t in res.tasks]
    assert cols == ["known", "edits"]
    assert res.tasks[1]["metric"] == "efficacy[top1]"
    m = {row: dict(zip(cols, vals)) for row, vals in zip(res.rows, res.matrix)}
    assert m["baseline"]["edits"] <= 25  # the model knows the old facts
    assert m["edits"]["edits"] >= 75  # the edits landed
    # the matrix measures what the edits cost the earlier task (measured: 100 -> 75 after four sequential ROME
    # edits; without the fine-tuning stage before them, 100 -> 100)
    assert m["known"]["known"] == 100 and 50 <= m["edits"]["known"] <= 100
    assert m["refresh"]["edits"] <= m["edits"]["edits"] - 50  # fine-tuning on the old facts erased them
    edits = res.extra["edits"]["edits"]
    assert edits["method"] == "rome" and edits["summary"]["efficacy[top1]"] >= 75
    events = [json.loads(x) for x in (cfg_dir(cfg) / "events.jsonl").read_text().splitlines()]
    assert any(e["type"] == "edit" and e["requests"] == 4 for e in events)


def cfg_dir(cfg):
    from pathlib import Path

    return Path(cfg.output_dir) / cfg.name


def test_edit_stage_config_errors(fact_setup, tmp_path):
    raw = stream(fact_setup, tmp_path, method="romee")
    with pytest.raises(ConfigError, match="stages.1.edit.method: unknown editing method 'romee'; did you mean 'rome'"):
        validate_raw(raw)
    raw = stream(fact_setup, tmp_path)
    raw["stages"][1]["edit"]["params"]["layr"] = 1
    with pytest.raises(ConfigError, match="stages.1.edit.params.layr"):
        validate_raw(raw)
