"""Merge methods against hand-computed examples, their properties, and the streaming engine end to end."""

import json

import pytest
import torch
import yaml

from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import TensorContext
from lifelong.merging.engine import MergeConfig, merge_models

CTX = TensorContext(name="w", seed=0)


def method(name, **params):
    cls = MERGE_METHODS.get(name)
    return cls(cls.Params(**params))


def test_ties_hand_computed():
    base = torch.zeros(6)
    a = torch.tensor([3.0, -1.0, 0.5, 2.0, -4.0, 0.1])
    b = torch.tensor([-2.0, -3.0, 0.2, 1.0, 5.0, 0.0])
    c = torch.tensor([1.0, 2.0, -0.4, -6.0, -1.0, 0.3])
    half = TensorContext(name="w", model_params=[{"weight": 1.0, "density": 0.5}] * 3)  # density per model
    # density 0.5 keeps exactly int(0.5 * 6) = 3 entries of each task vector (mergekit):
    # a -> [3, 0, 0, 2, -4, 0]; b -> [-2, -3, 0, 0, 5, 0]; c -> [1, 2, 0, -6, 0, 0] (|1| twice at the 3rd
    # place: the first in torch's sort order is kept)
    # mass election per entry: [3-2+1=2 (+), -3+2=-1 (-), 0, 2-6=-4 (-), -4+5=1 (+), 0]
    # disjoint means (weights 1): e0: mean(3, 1) = 2; e1: -3; e3: -6; e4: 5
    out = method("ties").merge([a, b, c], [1, 1, 1], base, half)
    assert torch.allclose(out, torch.tensor([2.0, -3.0, 0.0, -6.0, 5.0, 0.0]))
    # frequency election (a zero count elects +): e0 (+,-,+) +; e1 (0,-,+) +: 2; e3 (+,0,-) +: 2; e4 (-,+,0) +: 5
    out_f = method("ties", sign="frequency").merge([a, b, c], [1, 1, 1], base, half)
    assert torch.allclose(out_f, torch.tensor([2.0, 2.0, 0.0, 2.0, 5.0, 0.0]))
    # lifelong's earlier trim keeps both tied |1| of c: e4 sums to 0, elected +: b's 5 alone
    legacy = method("ties", trim_rule="threshold", average="count").merge([a, b, c], [1, 1, 1], base, half)
    assert torch.allclose(legacy, torch.tensor([2.0, -3.0, 0.0, -6.0, 5.0, 0.0]))
    # lambda scales the merged task vector, added to the base
    out_l = method("ties", **{"lambda": 0.5}).merge([a + 1, b + 1, c + 1], [1, 1, 1], base + 1, half)
    assert torch.allclose(out_l, 1 + 0.5 * torch.tensor([2.0, -3.0, 0.0, -6.0, 5.0, 0.0]))


def test_task_arithmetic_and_linear_hand_computed():
    base, a, b = torch.tensor([1.0, 1.0]), torch.tensor([2.0, 0.0]), torch.tensor([1.0, 3.0])
    out = method("task_arithmetic", **{"lambda": 0.5}).merge([a, b], [1.0, 2.0], base, CTX)
    assert torch.allclose(out, base + 0.5 * (torch.tensor([1.0, -1.0]) + 2 * torch.tensor([0.0, 2.0])))
    assert torch.allclose(method("linear").merge([a, b], [1.0, 3.0], None, CTX), (a + 3 * b) / 4)


def test_dare_is_unbiased_and_reproducible():
    base = torch.zeros(20000)
    a = torch.randn(20000, generator=torch.Generator().manual_seed(1))
    m = method("dare", p=0.8, combine="task_arithmetic")
    draws = torch.stack([m.merge([a], [1.0], base, TensorContext(name=f"w{i}", seed=0)) for i in range(60)])
    kept = (draws[0] != 0).float().mean()
    assert abs(float(kept) - 0.2) < 0.02  # drop rate p
    assert torch.allclose(draws.mean(0).mean(), a.mean(), atol=0.02)
    assert float((draws.mean(0) - a).abs().mean()) < 0.35 * float(a.abs().mean())  # E[tau~] = tau
    again = m.merge([a], [1.0], base, TensorContext(name="w0", seed=0))
    assert torch.equal(again, draws[0])  # same seed and name: same mask
    other = m.merge([a], [1.0], base, TensorContext(name="w0", seed=1))
    assert not torch.equal(other, draws[0])
    nores = method("dare", p=0.8, rescale=False).merge([a], [1.0], base, TensorContext(name="w0", seed=0))
    assert torch.allclose(nores * 5, draws[0])


def test_slerp_endpoints_midpoint_and_parallel():
    v0, v1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    s = method("slerp", t=0.5)
    assert torch.allclose(s.merge([v0, v1], [1, 1], None, CTX), torch.tensor([2**-0.5, 2**-0.5]))
    assert torch.allclose(method("slerp", t=0.0).merge([v0, v1], [1, 1], None, CTX), v0)
    assert torch.allclose(method("slerp", t=1.0).merge([v0, v1], [1, 1], None, CTX), v1)
    assert torch.allclose(s.merge([v0, 2 * v0], [1, 1], None, CTX), 1.5 * v0)  # parallel: linear


@pytest.mark.parametrize("name,params", [("linear", {}), ("task_arithmetic", {}), ("ties", {}), ("dare", {"p": 0.0})])
def test_merging_one_model_returns_it(name, params):
    base = torch.randn(4, 5)
    a = torch.randn(4, 5)
    out = method(name, **params).merge([a], [1.0], base, CTX)
    assert torch.allclose(out, a, atol=1e-6)


def test_linear_of_identical_models_is_identity():
    a = torch.randn(3, 3)
    assert torch.allclose(method("linear").merge([a, a, a], [0.2, 0.3, 0.5], None, CTX), a)


# ---- engine -------------------------------------------------------------------------------------------
def save_tiny(path, seed, base=None, scale=0.1, dtype=torch.float32):
    from lifelong.testing import tiny_llama, tiny_tokenizer

    model = tiny_llama(seed=0)
    if base is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g))
    model.to(dtype).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def test_engine_matches_in_memory_merge_and_loads(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = save_tiny(tmp_path / "base", 0)
    a = save_tiny(tmp_path / "a", 1, base=True)
    b = save_tiny(tmp_path / "b", 2, base=True)
    cfg = MergeConfig(
        merge_method="ties",
        base_model=base,
        models=[{"model": a}, {"model": b}],
        parameters={"density": 0.5},
        max_shard_size=20_000,
        overrides=[{"pattern": "*embed_tokens*", "use": "base"}],
    )
    out = merge_models(cfg, tmp_path / "merged")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out)
    tb, ta, tbb = (load_file(f"{d}/model.safetensors") for d in (base, a, b))
    got = merged.state_dict()
    m = method("ties")
    per_model = [{"weight": 1.0, "density": 0.5}] * 2  # a global density is every model's default (mergekit)
    for name in tb:
        if "embed_tokens" in name:
            assert torch.equal(got[name], tb[name])
        else:
            want = m.merge([ta[name], tbb[name]], [1, 1], tb[name], TensorContext(name=name, model_params=per_model))
            assert torch.allclose(got[name], want, atol=1e-6), name
    with pytest.raises(ValueError, match="already exists"):
        merge_models(cfg, tmp_path / "merged")


def test_engine_names_the_mismatching_tensor(tmp_path):
    from lifelong.testing import tiny_llama

    base = save_tiny(tmp_path / "base", 0)
    other = tiny_llama(seed=0, intermediate_size=96)
    other.save_pretrained(tmp_path / "wide")
    cfg = MergeConfig(merge_method="task_arithmetic", base_model=base, models=[{"model": str(tmp_path / "wide")}])
    with pytest.raises(ValueError, match=r"tensor 'model\.layers\.0\.mlp\.down_proj\.weight': shape \[64, 128\]"):
        merge_models(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_global_trim_keeps_the_global_top_fraction(tmp_path):
    base = save_tiny(tmp_path / "base", 0)
    a = save_tiny(tmp_path / "a", 1, base=True)
    from lifelong.merging.engine import global_thresholds
    from lifelong.merging.st_io import LazyModel

    lb, la = LazyModel(base), LazyModel(a)
    names = lb.names()
    th = global_thresholds([la], lb, [1.0], 0.1, names)[0]
    all_d = torch.cat([(la.get(n) - lb.get(n)).abs().flatten() for n in names])
    assert int((all_d >= th).sum()) == int(round(0.1 * all_d.numel()))


def test_cli_merge_yaml_like_mergekit(tmp_path, capsys):
    from lifelong.cli import main

    for name, seed in (("base", 0), ("a", 1), ("b", 2)):  # the YAML below names them by path
        save_tiny(tmp_path / name, seed, base=name != "base")
    y = tmp_path / "merge.yaml"
    y.write_text(
        yaml.safe_dump(
            {
                "merge_method": "dare",
                "base_model": "base",
                "models": [
                    {"model": "a", "parameters": {"weight": 0.5}},
                    {"model": "b", "parameters": {"weight": 0.5}},
                ],
                "parameters": {"p": 0.5, "combine": "ties", "density": 0.8},
                "dtype": "bfloat16",
            }
        )
    )
    assert main(["merge", str(y), "--out", str(tmp_path / "m")]) == 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / "model.safetensors"), framework="pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16
    y.write_text(yaml.safe_dump({"merge_method": "tie", "base_model": "base", "models": [{"model": "a"}]}))
    assert main(["merge", str(y), "--out", str(tmp_path / "m2")]) == 2
    assert "did you mean 'ties'" in capsys.readouterr().err
    y.write_text(
        yaml.safe_dump(
            {"merge_method": "ties", "base_model": "base", "models": [{"model": "a"}], "parameters": {"density": 2}}
        )
    )
    assert main(["merge", str(y), "--out", str(tmp_path / "m3")]) == 2
    assert "parameters.density" in capsys.readouterr().err


def test_merge_stage_combines_two_branches_tuned_from_one_base(tmp_path):
    """Behaviour: fine-tune A, fine-tune B from the same base, merge them; the merged model (scored in the same
    results matrix) is well above the base on both tasks."""
    from lifelong.runner import Run
    from lifelong.testing import tiny_pretrained, tiny_run_config
    from lifelong.validation import validate_raw

    base = tiny_pretrained(tmp_path / "base")
    raw = tiny_run_config(
        "naive", n_stages=3, steps=60, train={"lr": 1e-3}, name="branches", output_dir=str(tmp_path / "runs")
    )
    raw["model"] = {"path": base}
    raw["eval"]["bootstrap"] = 0
    a, _, b = raw["stages"]
    b["start_from"] = "base"
    raw["stages"] = [
        a,
        b,
        {"name": "merged", "kind": "merge", "merge": {"method": "task_arithmetic", "models": [a["name"], b["name"]]}},
    ]
    run = Run(validate_raw(raw), quiet=True)
    res = run.execute()
    baseline, merged = res.matrix[0], res.matrix[3]
    assert merged[0] > baseline[0] + 25 and merged[1] > baseline[1] + 25, res.matrix
    assert res.matrix[2][1] > res.matrix[1][1]  # branch B started from the base, not from A
    assert res.costs["merged"]["merged_models"] == 2


def test_merge_stage_config_errors(tmp_path):
    from lifelong.configio import ConfigError
    from lifelong.testing import tiny_run_config
    from lifelong.validation import validate_raw

    raw = tiny_run_config("naive", n_stages=2)
    raw["stages"].append({"name": "m", "kind": "merge", "merge": {"method": "tie", "models": ["task0", "nope"]}})
    with pytest.raises(ConfigError) as e:
        validate_raw(raw)
    assert "'nope' is not `base` or an earlier stage" in str(e.value) and "did you mean 'ties'" in str(e.value)
    raw["stages"][-1] = {"name": "m", "kind": "instruct"}
    with pytest.raises(ConfigError, match="stage kind 'instruct' trains, so it needs `data`"):
        validate_raw(raw)
    raw["stages"][-1] = {"name": "m", "kind": "merge", "merge": {"method": "lora", "models": ["task0", "task1"]}}
    with pytest.raises(ConfigError, match="merges PEFT LoRA adapter directories") as e:
        validate_raw(raw)
    assert "stages.2.merge.method" in str(e.value) or "method" in str(e.value)


def test_ls_merges_shows_per_model_parameters_and_yaml_names(capsys):
    from lifelong.cli import main

    assert main(["ls", "merges"]) == 0
    out = capsys.readouterr().out
    block = out.split("\nties:")[1].split("\n", 1)[1].split("\ntask_arithmetic")[0]
    assert "per-model parameters: weight (default 1.0), density (default 1.0); a listed base_model is base" in block
    assert "\n    lambda: float (default 1.0)" in block and "lambda_" not in block  # the YAML's name, not Python's
    assert "a listed base_model is input" in out.split("\nlinear:")[1].split("\nmodel_stock")[0]


def test_greedy_selection_keeps_only_improving_candidates():
    from lifelong.merging.greedy_soup import select_greedy

    solo = {0: 50.0, 1: 70.0, 2: 60.0, 3: 65.0}
    soups = {(1,): 70.0, (1, 3): 72.0, (1, 2, 3): 71.0}

    def score(idx):
        key = tuple(sorted(idx))
        return solo[key[0]] if len(key) == 1 else soups.get(key, 10.0)

    kept, log = select_greedy(4, score)
    assert kept == [1, 3]  # best first; 3 improves the soup; 2 and 0 do not
    assert [t["kept"] for t in log] == [True, True, False, False]


def test_greedy_soup_end_to_end_drops_a_harmful_model(tmp_path):
    from lifelong.testing import tiny_stream

    base = save_tiny(tmp_path / "base", 0)
    good_a = save_tiny(tmp_path / "a", 1, base=True, scale=0.001)
    good_b = save_tiny(tmp_path / "b", 2, base=True, scale=0.001)
    bad = save_tiny(tmp_path / "bad", 3, base=True, scale=3.0)  # wrecked weights
    rows = tiny_stream(1, n_eval=16)[0]["eval"]
    cfg = MergeConfig(
        merge_method="greedy_soup",
        base_model=base,
        models=[{"model": bad}, {"model": good_a}, {"model": good_b}],
        parameters={"eval": {"rows": [{"text": r["text"]} for r in rows], "format": "text"}},
    )
    out = merge_models(cfg, tmp_path / "soup")
    info = json.loads((out / "greedy_soup.json").read_text())
    assert bad not in info["kept"] and len(info["kept"]) >= 1
    assert (out / "model.safetensors").exists()


def test_peft_lora_adapter_is_merged_into_its_base_first(tmp_path):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = save_tiny(tmp_path / "base", 0)
    other = save_tiny(tmp_path / "b", 2, base=True)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    expected = {k: v.clone() for k, v in peft_model.merge_and_unload().state_dict().items()}
    cfg = MergeConfig(
        merge_method="task_arithmetic", base_model=base, models=[{"model": str(tmp_path / "adapter")}, {"model": other}]
    )
    out = merge_models(cfg, tmp_path / "m")
    got, tb, tother = (
        load_file(str(out / "model.safetensors")),
        load_file(f"{base}/model.safetensors"),
        load_file(f"{other}/model.safetensors"),
    )
    name = "model.layers.0.self_attn.q_proj.weight"
    want = tb[name] + (expected[name] - tb[name]) + (tother[name] - tb[name])
    assert torch.allclose(got[name], want, atol=1e-6)
    assert not torch.allclose(expected[name], tb[name])  # the adapter did change q_proj
