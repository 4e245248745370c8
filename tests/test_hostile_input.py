"""Regression tests of issue 13's reports against the validator, the merge engine and the CLI: each hostile
input gets one located line, never a traceback, a hang or a written model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from lifelong.cli import main
from lifelong.configio import ConfigError
from lifelong.testing import tiny_run_config
from lifelong.validation import load_config


def write(tmp_path, raw, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def error_of(path, overrides=()):
    with pytest.raises(ConfigError) as e:
        load_config(path, list(overrides))
    return str(e.value)


def test_non_utf8_config_names_file_line_and_column(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"name: x\nmodel: {tiny: llama}\n# caf\xe9 \xff\nstages: []\n")
    assert error_of(p) == f"{p}:3: not UTF-8 (byte 0xe9 at column 6); save the file as UTF-8"


def test_deep_nesting_and_alias_bombs_are_refused(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: x\nmodel: " + "{a: " * 500 + "1" + "}" * 500 + "\n")
    assert "nested deeper than 64 levels" in error_of(deep)
    deep_block = tmp_path / "deep2.yaml"
    deep_block.write_text("name: x\nmodel:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(300)))
    assert error_of(deep_block).startswith(f"{deep_block}:")
    lol = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lol += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("name: x\n" + "\n".join(lol) + "\n")
    assert "expands to more than 200,000 values" in error_of(bomb)
    assert bomb.stat().st_size < 6000  # the 5.7 KB file of the report, refused before it is expanded


def test_a_cyclic_alias_and_an_oversized_file_are_refused(tmp_path):
    cyc = tmp_path / "cyc.yaml"
    cyc.write_text("name: x\nloop: &l [1, *l]\n")
    msg = error_of(cyc)
    assert msg.startswith(f"{cyc}:2:") and ("cycle" in msg or "not valid YAML" in msg)
    big = tmp_path / "big.yaml"
    big.write_text("name: x\n" + "# padding\n" * 500_000)
    assert "too large" in error_of(big)


def test_duplicate_keys_name_both_lines(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "name: x\nmodel: {tiny: llama}\ntrain:\n  lr: 0.1\n  batch_size: 2\n  lr: 0.2\n"
        "stages:\n  - name: a\n    data: {rows: [{text: hi}]}\n"
    )
    assert error_of(p) == f"{p}:6: duplicate key 'lr' (first at line 4); keep one of the two"


@pytest.mark.parametrize(
    "field,value,expect",
    [
        ("batch_size", 0, "stages.1.train.batch_size: Input should be greater than or equal to 1"),
        ("lr", float("nan"), "stages.1.train.lr: nan is not a usable number"),
        ("lr", 9.2e18, "stages.1.train.lr: 9.2e+18 is beyond any usable value"),
        ("max_steps", 10**30, "stages.1.train.max_steps: 1e+30 is beyond any usable value"),
        ("cooldown_steps", True, "stages.1.train.cooldown_steps: expected a number, got the boolean true"),
    ],
)
def test_stage_train_overrides_have_the_run_level_bounds(tmp_path, field, value, expect):
    raw = tiny_run_config("naive")
    raw["stages"][1]["train"] = {field: value}
    p = write(tmp_path, raw)
    msg = error_of(p)
    assert f"{p}:" in msg and expect in msg, msg


@pytest.mark.parametrize(
    "override,field",
    [
        ("train.lr=1e30", "train.lr"),
        ("train.max_steps=1000000000000000000000000000000", "train.max_steps"),
        ("train.batch_size=1e30", "train.batch_size"),
        ("eval.batch_size=100000000000", "eval.batch_size"),
        ("eval.bootstrap=100000000000", "eval.bootstrap"),
        ("seed=-9223372036854775808", "seed"),
        ("stages.1.preference.average=[-1]", "stages.1.preference.average.0"),
        ("stages.1.preference.average=[2.5]", "stages.1.preference.average.0"),
        ("stages.1.preference.average=[.nan]", "stages.1.preference.average"),
        ("stages.1.preference.average_sweep=[.inf]", "stages.1.preference.average_sweep"),
        ("stages.1.preference.beta=1e-320", "stages.1.preference.beta"),
        ("strategy=[]", "strategy"),
        ("stages.0.data.path=''", "stages.0.data.path"),
        ("train.cooldown_steps=true", "train.cooldown_steps"),
        ("eval.probes.0.params.max_new_tokens=1000000000000", "eval.probes.0.params.max_new_tokens"),
    ],
)
def test_values_no_run_can_use_are_rejected_where_they_are(tmp_path, override, field):
    raw = tiny_run_config("naive")
    raw["eval"]["probes"] = [
        {
            "name": "gen",
            "rows": [{"prompt": "a", "response": "b"}],
            "scorer": "exact_match",
            "params": {"max_new_tokens": 4},
        }
    ]
    p = write(tmp_path, raw)
    load_config(p)  # valid as written
    msg = error_of(p, [override])
    assert f"{p}:" in msg and f": {field}" in msg, msg


def test_model_and_data_paths_are_checked_without_loading(tmp_path):
    raw = tiny_run_config("naive")
    raw["model"] = {"path": "no/such/dir/model"}
    p = write(tmp_path, raw)
    assert "model.path: 'no/such/dir/model' is no local folder or file and no hub id" in error_of(p)
    raw["model"] = {"path": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # a hub id: fetched at run time
    load_config(write(tmp_path, raw))
    raw = tiny_run_config("naive")
    raw["stages"][1]["data"] = {"path": "missing.jsonl"}
    p = write(tmp_path, raw)
    msg = error_of(p)
    assert msg.startswith(f"{p}:") and "stages.1.data.path: no such file or folder" in msg


def test_merge_rejects_nan_weights_and_zero_sum_normalised_weights(tmp_path, capsys):
    from tests.test_merging import save_tiny

    a = save_tiny(tmp_path / "a", 1)
    b = save_tiny(tmp_path / "b", 2)
    for name, models, params in [
        ("nan", [{"model": str(a), "parameters": {"weight": float("nan")}}, {"model": str(b)}], {}),
        (
            "zero",
            [{"model": str(a), "parameters": {"weight": 0.0}}, {"model": str(b), "parameters": {"weight": 0.0}}],
            {},
        ),
        ("lambda", [{"model": str(a)}, {"model": str(b)}], {"lambda": float("nan")}),
    ]:
        cfg = {
            "merge_method": "task_arithmetic" if name == "lambda" else "linear",
            "models": models,
            "parameters": params,
        }
        if name == "lambda":
            cfg["base_model"] = str(a)
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump(cfg))
        assert main(["merge", str(p), "--out", str(tmp_path / f"out-{name}")]) == 2
        err = capsys.readouterr().err
        assert f"{p}:" in err and "Traceback" not in err, err
        assert not (tmp_path / f"out-{name}").exists()


def test_merge_refuses_to_write_non_finite_tensors_its_inputs_did_not_have(tmp_path, monkeypatch):
    from lifelong.merging.engine import MergeConfig, merge_models
    from lifelong.merging.linear import Linear
    from tests.test_merging import save_tiny

    a = save_tiny(tmp_path / "a", 1)
    b = save_tiny(tmp_path / "b", 2)
    cfg = MergeConfig(merge_method="linear", models=[{"model": str(a)}, {"model": str(b)}])
    real = Linear.merge

    def broken(self, tensors, weights, base, ctx):
        out = real(self, tensors, weights, base, ctx)
        return out / 0 if "mlp" in ctx.name else out  # a degenerate method: inf / nan from finite inputs

    monkeypatch.setattr(Linear, "merge", broken)
    with pytest.raises(ValueError, match=r"tensor '.*mlp.*': the merge produced \d+ NaN or infinite values"):
        merge_models(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no half-written folder left


def test_a_reader_that_leaves_the_pipe_gives_no_traceback():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifelong", "ls", "config"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # like `| head` that has already exited
    err = proc.stderr.read().decode()
    proc.wait()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode in (0, 141)


def test_a_run_without_eval_tasks_and_duplicate_task_names_are_located(tmp_path):
    raw = tiny_run_config("naive")
    for s in raw["stages"]:
        s.pop("eval", None)
    raw["eval"].pop("probes", None)
    p = write(tmp_path, raw)
    assert "stages: no eval task, so the run would train and measure nothing" in error_of(p)
    raw = tiny_run_config("naive")
    raw["eval"]["probes"] = [{"name": raw["stages"][0]["name"], "rows": [{"text": "a b c"}]}]
    p = write(tmp_path, raw)
    msg = error_of(p)
    assert msg.startswith(f"{p}:") and "eval.probes.0: eval task name" in msg and "already used by stages.0.eval" in msg
