import pytest
import yaml

from lifelong.cli import main
from lifelong.configio import ConfigError, apply_overrides
from lifelong.testing import tiny_run_config
from lifelong.validation import load_config


def write(tmp_path, raw, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def test_valid_config_and_stage_overrides(tmp_path):
    raw = tiny_run_config("naive")
    raw["stages"][1]["train"] = {"lr": 0.5}
    cfg = load_config(write(tmp_path, raw))
    assert cfg.stage_train(0).lr == raw["train"]["lr"]
    assert cfg.stage_train(1).lr == 0.5
    assert cfg.stage_train(1).batch_size == raw["train"]["batch_size"]


def test_unknown_key_is_located_by_file_and_line(tmp_path):
    text = (
        "name: x\nmodel: {tiny: llama}\ntrain:\n  lr: 0.1\n  lerning_rate: 3\n"
        "stages:\n  - name: a\n    data: {rows: [{text: hi}]}\n"
    )
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"{p}:5: train.lerning_rate: unknown key" in str(e.value)


def test_unknown_strategy_suggests_a_name(tmp_path):
    raw = tiny_run_config({"name": "replya"})
    with pytest.raises(ConfigError, match="did you mean 'replay'"):
        load_config(write(tmp_path, raw))


def test_strategy_parameters_are_typed_per_strategy(tmp_path):
    raw = tiny_run_config({"name": "replay", "fraction": 1.5})
    with pytest.raises(ConfigError, match=r":8: strategy\.fraction: Input should be less than 1"):
        load_config(write(tmp_path, raw))
    raw = tiny_run_config({"name": "naive", "fraction": 0.5})
    with pytest.raises(ConfigError, match=r"strategy\.fraction: unknown key"):
        load_config(write(tmp_path, raw))
    raw = tiny_run_config({"name": "replay", "fraction": 0.5})
    assert load_config(write(tmp_path, raw)).strategy[0].model_extra == {"fraction": 0.5}


def test_dotted_overrides(tmp_path):
    p = write(tmp_path, tiny_run_config("naive"))
    cfg = load_config(
        p, ["train.lr=0.25", "stages.1.train.max_steps=3", "strategy.0.name=replay", "strategy.0.buffer_size=7"]
    )
    assert cfg.train.lr == 0.25 and cfg.stage_train(1).max_steps == 3 and cfg.stage_train(0).max_steps == 30
    assert cfg.strategy[0].name == "replay" and cfg.strategy[0].model_extra["buffer_size"] == 7
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides({"stages": [1]}, ["stages.5.name=x"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.lr"])


def test_bad_yaml_and_duplicate_stage_names(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\nstages: [\n")
    with pytest.raises(ConfigError, match="broken.yaml:3: not valid YAML"):
        load_config(p)
    raw = tiny_run_config("naive")
    raw["stages"][1]["name"] = raw["stages"][0]["name"]
    with pytest.raises(ConfigError, match="duplicate stage name"):
        load_config(write(tmp_path, raw))


def test_model_needs_exactly_one_source(tmp_path):
    raw = tiny_run_config("naive")
    raw["model"] = {"tiny": "llama", "path": "some/dir"}
    with pytest.raises(ConfigError, match="exactly one of model.path"):
        load_config(write(tmp_path, raw))


def test_validate_cli(tmp_path, capsys):
    good = write(tmp_path, tiny_run_config("replay"))
    assert main(["validate", str(good)]) == 0
    assert "valid (3 stages, strategy replay)" in capsys.readouterr().out
    bad = write(tmp_path, {**tiny_run_config("naive"), "extra_thing": 1}, "bad.yaml")
    assert main(["validate", str(bad)]) == 2
    assert "extra_thing: unknown key" in capsys.readouterr().err


def test_ls_prints_fields_with_docstrings(capsys):
    assert main(["ls", "strategies"]) == 0
    out = capsys.readouterr().out
    assert "replay:" in out and "naive:" in out
    assert "buffer_size: int (default 1000)" in out
    assert "Maximum number of stored examples" in out
    assert main(["ls", "config"]) == 0
    assert "checkpoint_every" in capsys.readouterr().out
