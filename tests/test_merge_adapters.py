"""Adapter-space LoRA merging (`merge_method: lora`, lifelong.merging.adapters): the factor arithmetic by
hand, exactness of cat/svd against the deltas read from the adapter files, parity with PEFT's
`add_weighted_adapter`, the written PEFT directory loaded back, DARE's mechanism, and every refusal."""

import json
import math

import pytest
import torch
import yaml

from lifelong.merging.adapters import (
    LoraMergeParams,
    combine_module,
    magnitude_trim,
    merge_adapters,
    merge_lora,
    ties_combine,
)

torch.set_num_threads(1)
TARGETS = ("q_proj", "v_proj", "down_proj")


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path))


def make_adapter(base, out, r, alpha, seed, targets=TARGETS, **kw):
    """A LoRA adapter on `base` with random A and B (PEFT initialises B to zero: the delta would be 0)."""
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(_load(base), LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), **kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    pm.save_pretrained(str(out))
    return str(out)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from lifelong.testing import tiny_llama, tiny_tokenizer

    d = tmp_path_factory.mktemp("zoo")
    tiny_llama(seed=0).save_pretrained(d / "base")
    tiny_tokenizer().save_pretrained(d / "base")
    base = str(d / "base")
    return {
        "dir": d,
        "base": base,
        "a": make_adapter(base, d / "a", 4, 8, 1),
        "b": make_adapter(base, d / "b", 4, 16, 2, use_rslora=True),  # scaling 16 / sqrt(4)
        "c": make_adapter(base, d / "c", 2, 4, 3),  # another rank
        "d": make_adapter(base, d / "d", 4, 4, 4, targets=("q_proj", "k_proj")),  # other modules
    }


def factors(adapter_dir):
    """module -> (A, B, scaling) read straight from the files (the test's own reading)."""
    from safetensors.torch import load_file

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    t = load_file(str(adapter_dir / "adapter_model.safetensors"))
    out = {}
    for k in t:
        if k.endswith(".lora_A.weight"):
            m = k[len("base_model.model.") : -len(".lora_A.weight")]
            A, B = t[k], t[k.replace("lora_A", "lora_B")]
            r = A.shape[0]
            alpha = cfg["alpha_pattern"].get(m, cfg["lora_alpha"])
            out[m] = (A, B, alpha / (math.sqrt(r) if cfg["use_rslora"] else r))
    return out


def deltas(adapter_dir, weight=1.0):
    return {m: weight * s * (B @ A) for m, (A, B, s) in factors(adapter_dir).items()}


# ---- the arithmetic by hand -----------------------------------------------------------------------------
def test_factor_arithmetic_by_hand():
    # ties: election on the unweighted trimmed tensors (zero total counts +), weighted disjoint mean
    x = torch.tensor([3.0, -1.0, 0.0, 2.0])
    y = torch.tensor([-2.0, -3.0, 0.0, -2.0])
    # totals: 1 (+), -4 (-), 0 (+, nothing agrees: 0), 0 (+): only x agrees
    out = ties_combine([x, y], [0.5, 2.0], "total")
    assert torch.allclose(out, torch.tensor([1.5, (-0.5 - 6.0) / 2, 0.0, 1.0]))
    # frequency: signs sum 0 everywhere but entry 1 (-2) -> +, -, +, +
    assert torch.allclose(ties_combine([x, y], [1, 1], "frequency"), torch.tensor([3.0, -2.0, 0.0, 2.0]))
    # trim keeps floor(density * numel) largest magnitudes
    assert torch.equal(
        magnitude_trim(torch.tensor([1.0, -4.0, 2.0, 0.5, -3.0]), 0.5), torch.tensor([0, -4.0, 0, 0, -3.0])
    )
    A, B = torch.randn(3, 5), torch.randn(4, 3)
    p = lambda **kw: LoraMergeParams(**kw)  # noqa: E731
    # linear: sqrt|c| on each factor, the sign on A: one adapter comes back exactly, negative weights too
    A1, B1 = combine_module([A], [B], [-0.5], [2.0], p(combination_type="linear"), 3)
    assert torch.allclose(B1 @ A1, -1.0 * (B @ A), atol=1e-6)
    assert torch.allclose(A1, -A) and torch.allclose(B1, B)
    # linear of two has the cross terms: (B1 + B2)(A1 + A2) / 4 for weights 0.5 (scaling 1)
    A2, B2 = torch.randn(3, 5), torch.randn(4, 3)
    Al, Bl = combine_module([A, A2], [B, B2], [0.5, 0.5], [1.0, 1.0], p(combination_type="linear"), 3)
    assert torch.allclose(Bl @ Al, (B + B2) @ (A + A2) / 2, atol=1e-5)
    # cat: the exact weighted sum of deltas at rank 6
    Ac, Bc = combine_module([A, A2], [B, B2], [0.5, 2.0], [3.0, 1.0], p(combination_type="cat"), 6)
    assert Ac.shape == (6, 5) and torch.allclose(Bc @ Ac, 1.5 * B @ A + 2.0 * B2 @ A2, atol=1e-5)
    # svd: rank 2 = the best rank-2 approximation of the exact sum (Eckart-Young)
    As, Bs = combine_module([A, A2], [B, B2], [0.5, 2.0], [3.0, 1.0], p(combination_type="svd", svd_rank=2), 2)
    exact = 1.5 * B @ A + 2.0 * B2 @ A2
    s = torch.linalg.svdvals(exact)
    assert math.isclose(float((exact - Bs @ As).norm()), float(s[2:].norm()), rel_tol=1e-4)
    assert torch.allclose(As.norm(dim=1), Bs.norm(dim=0), rtol=1e-4)  # the scale is shared by A and B


# ---- exactness on adapter files, and the written directory loaded by PEFT --------------------------------
def test_cat_and_svd_keep_the_exact_delta_and_load_in_peft(zoo, tmp_path):
    from peft import PeftModel

    d = zoo["dir"]
    w = [0.7, -0.4, 1.3]
    want = {m: sum(wi * deltas(d / n)[m] for wi, n in zip(w, "abc")) for m in factors(d / "a")}
    cat = merge_lora([zoo[n] for n in "abc"], tmp_path / "cat", weights=w, combination_type="cat")
    got = deltas(cat)
    assert set(got) == set(want) and all(torch.allclose(got[m], want[m], atol=1e-6) for m in want)
    assert json.loads((cat / "adapter_config.json").read_text())["r"] == 4 + 4 + 2
    full = merge_lora([zoo[n] for n in "abc"], tmp_path / "svd10", weights=w, combination_type="svd", svd_rank=10)
    assert all(torch.allclose(deltas(full)[m], want[m], atol=1e-6) for m in want)
    svd = merge_lora([zoo[n] for n in "abc"], tmp_path / "svd", weights=w, combination_type="svd")  # rank 4
    for m, D in deltas(svd).items():
        tail = torch.linalg.svdvals(want[m])[4:].norm()
        assert math.isclose(float((want[m] - D).norm()), float(tail), rel_tol=1e-3)
    # loaded with PeftModel: logits equal those of the base with the exact deltas added to its weights
    ids = torch.tensor([[5, 17, 40, 3, 22, 9]])
    merged = _load(zoo["base"])
    with torch.no_grad():
        for m, D in want.items():
            merged.get_submodule(m).weight.add_(D)
    peft_model = PeftModel.from_pretrained(_load(zoo["base"]), str(cat)).eval()
    assert torch.allclose(peft_model(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-4)
    assert (cat / "tokenizer.json").exists() is (d / "a" / "tokenizer.json").exists()


@pytest.mark.parametrize(
    "combination,names,kw",
    [
        ("linear", "ab", {}),
        ("ties", "ab", {"density": 0.5}),
        ("ties", "ab", {"density": 0.3, "majority_sign_method": "frequency"}),
        ("cat", "abc", {}),
        ("svd", "abc", {}),
        ("svd", "abc", {"svd_rank": 3}),
        ("ties_svd", "abc", {"density": 0.5}),
    ],
)
def test_matches_peft_add_weighted_adapter(zoo, tmp_path, combination, names, kw):
    """PEFT's `add_weighted_adapter` is the reference: the same deltas (and for linear/ties/cat the same
    factors, so the same definition: sqrt of the weight on each factor)."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    ref = PeftModel.from_pretrained(_load(zoo["base"]), zoo[names[0]], adapter_name=names[0])
    for n in names[1:]:
        ref.load_adapter(zoo[n], adapter_name=n)
    w = [0.7, -0.4, 1.3][: len(names)]
    ref.add_weighted_adapter(list(names), w, "m", combination_type=combination, **kw)
    out = merge_lora([zoo[n] for n in names], tmp_path / "ours", weights=w, combination_type=combination, **kw)
    ours = dict(PeftModel.from_pretrained(_load(zoo["base"]), str(out)).named_modules())
    n_mod, worst, worst_factor = 0, 0.0, 0.0
    for name, mod in ref.named_modules():
        if isinstance(mod, LoraLayer) and "m" in mod.lora_A:
            o = ours[name]
            worst = max(worst, float((mod.get_delta_weight("m") - o.get_delta_weight("default")).abs().max()))
            if combination in ("linear", "ties", "cat"):
                worst_factor = max(
                    worst_factor,
                    float((mod.lora_A["m"].weight - o.lora_A["default"].weight).abs().max()),
                    float((mod.lora_B["m"].weight - o.lora_B["default"].weight).abs().max()),
                )
            n_mod += 1
    assert n_mod == 2 * len(TARGETS)
    assert worst < 2e-6, worst  # measured: 0 for linear, ties, cat; 7e-7 svd; 1e-7 ties_svd
    assert worst_factor == 0.0


def test_different_modules_cat_adds_nothing_where_absent_linear_refuses(zoo, tmp_path):
    d = zoo["dir"]
    out = merge_lora([zoo["a"], zoo["d"]], tmp_path / "ad", weights=[1.0, 0.5], combination_type="cat")
    got, da, dd = deltas(out), deltas(d / "a"), deltas(d / "d", 0.5)
    assert set(got) == set(da) | set(dd)
    for m in got:
        assert torch.allclose(got[m], da.get(m, 0) + dd.get(m, 0), atol=1e-6), m
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and set(cfg["rank_pattern"].values()) == {8}  # q_proj: 4 + 4; the others 4
    assert cfg["rank_pattern"] == cfg["alpha_pattern"]  # scaling 1 everywhere
    with pytest.raises(
        ValueError, match=r"module 'model\.layers\.0\.[a-z_.]+' has LoRA factors in models\[\d\] .* but not in"
    ):
        merge_lora([zoo["a"], zoo["d"]], tmp_path / "lin", combination_type="linear")
    with pytest.raises(ValueError, match=r"ranks \{.*'models\[0\].*': 4, .*: 2\} differ: combination_type ties"):
        merge_lora([zoo["a"], zoo["c"]], tmp_path / "ties", combination_type="ties", density=0.5)
    assert not (tmp_path / "lin").exists() and not (tmp_path / "ties").exists()


def test_dare_svd_drops_and_rescales_reproducibly(zoo, tmp_path):
    d = zoo["dir"]
    D = deltas(d / "a")
    kw = dict(combination_type="dare_linear_svd", density=0.3, svd_rank=64)  # full rank: no truncation
    one = deltas(merge_lora([zoo["a"]], tmp_path / "s0", **kw))
    again = deltas(merge_lora([zoo["a"]], tmp_path / "s0b", **kw))
    other = deltas(merge_lora([zoo["a"]], tmp_path / "s1", seed=1, **kw))
    kept_all, n_all = 0, 0
    for m, x in one.items():
        assert torch.allclose(x, again[m], atol=1e-6) and not torch.allclose(x, other[m], atol=1e-3)
        kept = x.abs() > 1e-4 * float(x.abs().max())
        kept_all, n_all = kept_all + int(kept.sum()), n_all + kept.numel()
        assert torch.allclose(x[kept], D[m][kept] / 0.3, atol=1e-5)  # kept entries rescaled by 1/density
    assert abs(kept_all / n_all - 0.3) < 0.02


# ---- the YAML path and the refusals ------------------------------------------------------------------------
def test_merge_yaml_through_merge_adapters_and_cli(zoo, tmp_path, capsys):
    from lifelong.merging.engine import load_merge_config

    y = tmp_path / "merge.yaml"
    spec = {
        "merge_method": "lora",
        "base_model": zoo["base"],
        "models": [{"model": zoo["a"], "parameters": {"weight": 0.5}}, {"model": zoo["b"]}],
        "parameters": {"combination_type": "ties", "density": 0.5},
        "dtype": "bfloat16",
    }
    y.write_text(yaml.safe_dump(spec))
    out = merge_adapters(load_merge_config(y), tmp_path / "y")
    want = merge_lora([zoo["a"], zoo["b"]], tmp_path / "f", weights=[0.5, 1.0], combination_type="ties", density=0.5)
    got, ref = factors(out), factors(want)
    assert all(A.dtype == torch.bfloat16 for A, _, _ in got.values())
    assert all(torch.equal(got[m][0], ref[m][0].bfloat16()) for m in ref)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == zoo["base"]
    import inspect

    from lifelong.merging import engine

    if "merge_adapters" not in inspect.getsource(engine):
        pytest.skip("the engine does not hand merge_method lora to merge_adapters yet")
    from lifelong.cli import main

    assert main(["merge", str(y), "--out", str(tmp_path / "cli")]) == 0, capsys.readouterr().err
    assert all(torch.equal(factors(tmp_path / "cli")[m][1], got[m][1]) for m in got)


def test_refusals_name_the_input_and_the_reason(zoo, tmp_path):
    from lifelong.merging.engine import MergeConfig
    from lifelong.testing import tiny_llama

    d = zoo["dir"]
    with pytest.raises(ValueError, match=r"models\[1\] .*base: .*not a PEFT adapter directory"):
        merge_lora([zoo["a"], zoo["base"]], tmp_path / "x")
    dora = make_adapter(zoo["base"], d / "dora", 4, 8, 5, use_dora=True)
    with pytest.raises(ValueError, match=r"models\[1\] .*dora.*DoRA"):
        merge_lora([zoo["a"], dora], tmp_path / "x")
    mts = make_adapter(zoo["base"], d / "mts", 4, 8, 6, modules_to_save=["model.norm"])
    with pytest.raises(ValueError, match=r"modules_to_save"):
        merge_lora([zoo["a"], mts], tmp_path / "x")
    # trained on another base: a declared base elsewhere, and a base of other shapes
    tiny_llama(seed=1).save_pretrained(d / "other")
    other = make_adapter(str(d / "other"), d / "on_other", 4, 8, 7)
    with pytest.raises(ValueError, match=r"was trained on base .*other.* but models\[0\].* on .*base"):
        merge_lora([zoo["a"], other], tmp_path / "x")
    tiny_llama(seed=0, intermediate_size=96).save_pretrained(d / "wide")
    with pytest.raises(ValueError, match=r"base_model .*wide.* is not the base"):
        merge_lora([zoo["a"]], tmp_path / "x", base_model=str(d / "wide"))
    cfg_a = json.loads((d / "a" / "adapter_config.json").read_text())
    (d / "nobase").mkdir()
    (d / "nobase" / "adapter_config.json").write_text(json.dumps({**cfg_a, "base_model_name_or_path": None}))
    (d / "nobase" / "adapter_model.safetensors").write_bytes((d / "a" / "adapter_model.safetensors").read_bytes())
    with pytest.raises(
        ValueError, match=r"down_proj' has no weight .* in base_model .*wide|down_proj': its delta is 64 x 128"
    ):
        merge_lora([str(d / "nobase")], tmp_path / "x", base_model=str(d / "wide"))
    # parameters and config fields that do not apply
    with pytest.raises(ValueError, match="combination_type ties needs density"):
        merge_lora([zoo["a"], zoo["b"]], tmp_path / "x", combination_type="ties")
    with pytest.raises(ValueError, match="density has no effect with combination_type cat"):
        merge_lora([zoo["a"], zoo["b"]], tmp_path / "x", density=0.5)
    cfg = MergeConfig(merge_method="lora", models=[{"model": zoo["a"], "parameters": {"weight": 1.0, "density": 0.5}}])
    with pytest.raises(ValueError, match=r"models\.0\.parameters\.density: merge_method lora takes only `weight`"):
        merge_adapters(cfg, tmp_path / "x")
    cfg = MergeConfig(merge_method="lora", models=[{"model": zoo["a"]}], overrides=[{"pattern": "*", "use": 0}])
    with pytest.raises(ValueError, match="overrides: not supported by merge_method lora"):
        merge_adapters(cfg, tmp_path / "x")
    merge_lora([zoo["a"]], tmp_path / "x")
    with pytest.raises(ValueError, match="already exists"):
        merge_lora([zoo["a"]], tmp_path / "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # nothing half-written


def test_bin_adapter_reads_like_safetensors(zoo, tmp_path):
    from peft import PeftModel

    PeftModel.from_pretrained(_load(zoo["base"]), zoo["a"]).save_pretrained(
        str(tmp_path / "a_bin"), safe_serialization=False
    )
    assert (tmp_path / "a_bin" / "adapter_model.bin").exists()
    x = merge_lora([str(tmp_path / "a_bin"), zoo["b"]], tmp_path / "x", weights=[0.3, 1.0])
    y = merge_lora([zoo["a"], zoo["b"]], tmp_path / "y", weights=[0.3, 1.0])
    fx, fy = factors(x), factors(y)
    assert set(fx) == set(fy) and all(torch.equal(fx[m][0], fy[m][0]) and torch.equal(fx[m][1], fy[m][1]) for m in fy)
