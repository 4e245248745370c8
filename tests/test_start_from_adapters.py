"""`start_from` with an adapter strategy: weights kept before the model was wrapped (the run's `base`) load into
the wrapped model's base layers; nothing is skipped silently."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from lifelong.runner import Run, unwrapped_name
from lifelong.testing import tiny_run_config
from lifelong.validation import validate_raw


def test_peft_names_map_to_plain_names():
    assert unwrapped_name("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight") == (
        "model.layers.0.self_attn.q_proj.weight"
    )
    assert unwrapped_name("model.norm.weight") == "model.norm.weight"


def test_start_from_base_under_lora_loads_the_base_weights(tmp_path):
    raw = tiny_run_config("naive", n_stages=3, steps=3, output_dir=str(tmp_path / "runs"), name="sf")
    raw["strategy"] = [{"name": "lora", "r": 4}]
    raw["stages"][2]["start_from"] = "base"
    raw["eval"]["bootstrap"] = 0
    run = Run(validate_raw(raw), quiet=True)
    seen = {}
    real = run.load_kept

    def spy(name: str) -> None:
        # perturb every base weight first, so a load that skips them shows
        with torch.no_grad():
            for p in run.model.parameters():
                if not p.requires_grad:
                    p.add_(1.0)
        real(name)
        kept = load_file(str(run.kept_path(name)))
        state = {unwrapped_name(k): v for k, v in run.model.state_dict().items()}
        seen["equal"] = all(torch.equal(state[k], v) for k, v in kept.items())
        seen["n"] = len(kept)

    run.load_kept = spy  # type: ignore[method-assign]
    run.execute()
    assert seen["n"] > 10 and seen["equal"]


def test_a_kept_file_that_matches_nothing_is_an_error(tmp_path):
    raw = tiny_run_config("naive", n_stages=2, steps=2, output_dir=str(tmp_path / "runs"), name="bad")
    raw["stages"][1]["start_from"] = "base"
    raw["eval"]["bootstrap"] = 0
    run = Run(validate_raw(raw), quiet=True)
    run.keep_weights("base")
    save_file({"no.such.weight": torch.zeros(2)}, str(run.kept_path("base")))
    with pytest.raises(ValueError, match="1 kept tensors .*'no.such.weight'.* match no weight"):
        run.load_kept("base")
