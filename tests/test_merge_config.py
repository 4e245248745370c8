"""mergekit's YAML taken as is by `lifelong merge`: parameter settings resolved per tensor (gradients,
filters, precedence of model, slice and global parameters), base_model listed under models, slices and
passthrough (frankenmerges, depth up-scaling), dtype/out_dtype, model references, chat templates; and the
same configs run through mergekit itself when it is installed (/tmp/mkvenv)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lifelong.config import Strict
from lifelong.configio import ConfigError
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext
from lifelong.merging.engine import MergeConfig, load_merge_config, merge_models
from lifelong.merging.params import evaluate

MERGEKIT = Path("/tmp/mkvenv/bin/mergekit-yaml")
N_LAYERS = 5


def save_model(path: Path, seed: int, layers: int = N_LAYERS, kind: str = "llama", **overrides: Any) -> str:
    """A tiny model (64 wide, `layers` layers); seed 0 is the base, others the base plus noise."""
    from lifelong.testing import tiny_llama, tiny_tokenizer

    if kind == "qwen2":
        from transformers import AutoModelForCausalLM, Qwen2Config

        cfg = Qwen2Config(
            vocab_size=len(tiny_tokenizer()),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            **overrides,
        )
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg)
    else:
        model = tiny_llama(seed=0, num_hidden_layers=layers, **overrides)
    if seed:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("zoo")
    return {name: save_model(root / name, seed) for name, seed in (("base", 0), ("a", 1), ("b", 2), ("c", 3))}


# ---- a probe method: writes the resolved parameters into the output tensors -------------------------
class ProbeParams(Strict):
    g: float = -1.0
    """A global number (gradients and filters apply to it)."""
    show: Literal["g", "t", "n", "density", "weight", "sum"] = "g"
    """What the output tensor is filled with."""
    which: int = 0
    """Which input's per-model parameter to show."""


class Probe(MergeMethod):
    """Fills each output tensor with one resolved value, to read the engine's resolution back."""

    Params = ProbeParams
    model_params = {"weight": 1.0, "density": 1.0}
    base_in_models = "base"

    def merge(self, tensors, weights, base, ctx: TensorContext) -> torch.Tensor:
        p: ProbeParams = self.params  # type: ignore[assignment]
        value = {
            "g": p.g,
            "t": ctx.t,
            "n": float(len(tensors)),
            "density": ctx.model_param(p.which, "density", -1.0),
            "weight": weights[p.which],
            "sum": float(sum(weights)),
        }[p.show]
        return torch.full_like(tensors[0], float(value))


class ProbeInput(Probe):
    base_in_models = "input"


@pytest.fixture
def probe():
    MERGE_METHODS.register("probe")(Probe)
    MERGE_METHODS.register("probe_input")(ProbeInput)
    yield
    MERGE_METHODS.unregister("probe")
    MERGE_METHODS.unregister("probe_input")


def merged(tmp_path: Path, cfg: dict, name: str = "out") -> dict[str, torch.Tensor]:
    out = merge_models(MergeConfig.model_validate(cfg), tmp_path / name, quiet=True)
    return load_file(str(out / "model.safetensors"))


def value(sd: dict[str, torch.Tensor], name: str) -> float:
    t = sd[name]
    assert bool((t == t.flatten()[0]).all()), name
    return round(float(t.flatten()[0]), 6)  # stored in float32


Q = "model.layers.{}.self_attn.q_proj.weight"
UP = "model.layers.{}.mlp.up_proj.weight"
EMB = "model.embed_tokens.weight"
NORM = "model.norm.weight"


# ---- settings ---------------------------------------------------------------------------------------
def test_gradient_interpolates_over_the_layers_like_mergekit(tmp_path, zoo, probe, monkeypatch):
    built: list[float] = []
    real_init = Probe.__init__
    monkeypatch.setattr(Probe, "__init__", lambda self, p=None: (built.append(p.g), real_init(self, p))[1])
    sd = merged(tmp_path, {"merge_method": "probe", "models": [{"model": zoo["a"]}], "parameters": {"g": [0, 1, 0.5]}})
    assert sorted(built) == [0.0, 0.5, 0.75, 1.0]  # one method instance per distinct resolved global value
    # 5 layers: t = 0, .25, .5, .75, 1 -> position t*(3-1) over [0, 1, 0.5]
    assert [value(sd, Q.format(i)) for i in range(N_LAYERS)] == [0.0, 0.5, 1.0, 0.75, 0.5]
    assert value(sd, EMB) == 0.0 and value(sd, NORM) == 0.0  # outside the layers t = 0: the first value
    t = merged(tmp_path, {"merge_method": "probe", "models": [{"model": zoo["a"]}], "parameters": {"show": "t"}}, "t")
    assert [value(t, UP.format(i)) for i in range(N_LAYERS)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # non-numeric lists pick v[int(t (len - 1))]; numeric ones interpolate exactly as mergekit's formula
    assert [evaluate(("x", "y", "z"), "n", t, str) for t in (0, 0.49, 0.5, 0.99, 1)] == ["x", "x", "y", "y", "z"]
    assert evaluate((1, 2, 4), "n", 0.75, float) == 0.5 * 2 + 0.5 * 4


def test_filters_first_match_wins_and_unmatched_falls_through(tmp_path, zoo, probe):
    g = [{"filter": "self_attn", "value": 1}, {"filter": "q_proj", "value": 2}, {"filter": "mlp", "value": [3, 5]}]
    sd = merged(
        tmp_path,
        {
            "merge_method": "probe",
            "slices": [{"sources": [{"model": zoo["a"], "layer_range": [0, N_LAYERS]}], "parameters": {"g": g}}],
            "parameters": {"g": 9},
        },
    )
    assert value(sd, Q.format(2)) == 1.0  # self_attn listed first beats q_proj
    assert [value(sd, UP.format(i)) for i in (0, 2, 4)] == [3.0, 4.0, 5.0]  # a gradient inside a condition
    assert value(sd, "model.layers.1.input_layernorm.weight") == 9.0  # no filter matched: the global value
    star = merged(
        tmp_path,
        {"merge_method": "probe", "models": [{"model": zoo["a"]}], "parameters": {"g": [{"filter": "*", "value": 7}]}},
        "star",
    )
    assert value(star, NORM) == 7.0


def test_model_parameters_beat_slice_and_global_ones(tmp_path, zoo, probe):
    models = [
        {"model": zoo["a"], "parameters": {"density": 0.7}},
        {"model": zoo["b"]},
        {"model": zoo["c"], "parameters": {"density": [{"filter": "mlp", "value": 0.9}]}},
    ]
    for which, want_q, want_up in ((0, 0.7, 0.7), (1, 0.3, 0.3), (2, 0.3, 0.9)):
        sd = merged(
            tmp_path,
            {
                "merge_method": "probe",
                "base_model": zoo["base"],
                "models": models,
                "parameters": {"density": 0.3, "show": "density", "which": which},
            },
            f"m{which}",
        )
        assert (value(sd, Q.format(1)), value(sd, UP.format(1))) == (want_q, want_up)
    # slices: the source's parameters, then the slice's, then the global ones
    src = lambda m, **p: {"model": zoo[m], "layer_range": [0, N_LAYERS], "parameters": p}  # noqa: E731
    cfg = {
        "merge_method": "probe",
        "base_model": zoo["base"],
        "slices": [{"sources": [src("base"), src("a", density=0.1), src("b")], "parameters": {"density": 0.2}}],
        "parameters": {"density": 0.3, "show": "density"},
    }
    for which, want in ((0, 0.1), (1, 0.2)):
        sd = merged(tmp_path, {**cfg, "parameters": {**cfg["parameters"], "which": which}}, f"s{which}")
        assert value(sd, Q.format(3)) == want
    # per-model names resolve against the source layer's name, global ones against the output's
    per = merged(
        tmp_path,
        {
            "merge_method": "probe",
            "slices": [
                {
                    "sources": [
                        {
                            "model": zoo["a"],
                            "layer_range": [3, 4],
                            "parameters": {"density": [{"filter": "layers.3.", "value": 0.5}]},
                        }
                    ],
                    "parameters": {"g": [{"filter": "layers.0.", "value": 0.25}]},
                }
            ],
            "parameters": {"show": "density"},
        },
        "per",
    )
    assert value(per, Q.format(0)) == 0.5


def test_global_names_are_method_params_per_model_names_default_from_global(tmp_path, zoo, probe):
    sd = merged(
        tmp_path,
        {
            "merge_method": "probe",
            "models": [{"model": zoo["a"]}, {"model": zoo["b"], "parameters": {"weight": 3}}],
            "parameters": {"weight": 0.5, "show": "sum"},
        },
    )
    assert value(sd, Q.format(0)) == 3.5  # model a: the global weight 0.5; model b its own 3


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_unknown_parameter_is_located_and_lists_the_methods_parameters(tmp_path, zoo):
    y = write_yaml(
        tmp_path / "m.yaml",
        f"merge_method: ties\nbase_model: {zoo['base']}\nmodels:\n  - model: {zoo['a']}\n"
        "    parameters:\n      weight: 1\n      densty: 0.5\n",
    )
    with pytest.raises(ConfigError) as e:
        load_merge_config(y)
    msg = str(e.value)
    assert msg.startswith(f"{y}:7: models.0.parameters.densty: unknown parameter 'densty'"), msg
    assert "per-model parameters: weight, density" in msg and "lambda" in msg
    # a global parameter given per model, and a bad value inside a gradient: located too
    y.write_text(
        f"merge_method: ties\nbase_model: {zoo['base']}\nmodels:\n  - model: {zoo['a']}\n"
        "    parameters: {normalize: false}\n"
    )
    with pytest.raises(ConfigError, match=rf"{y}:5: models\.0\.parameters\.normalize: 'normalize' is a global"):
        load_merge_config(y)
    y.write_text(f"merge_method: linear\nmodels:\n  - model: {zoo['a']}\n    parameters:\n      weight: [1, .nan]\n")
    with pytest.raises(ConfigError, match=rf"{y}:5: models\.0\.parameters\.weight\.1: nan is not a usable"):
        load_merge_config(y)
    y.write_text(
        f"merge_method: slerp\nmodels:\n  - model: {zoo['a']}\n  - model: {zoo['b']}\n"
        "parameters:\n  t:\n    - pattern: self_attn\n      value: 0.3\n"
    )
    with pytest.raises(ConfigError, match=rf"{y}:7: parameters\.t\.0\.pattern: unknown key of a condition"):
        load_merge_config(y)


def test_base_listed_in_models_is_dropped_or_kept_per_method(tmp_path, zoo, probe):
    base = zoo["base"]
    listed = [{"model": base, "parameters": {"weight": 4}}, {"model": zoo["a"], "parameters": {"weight": 2}}]
    for method, want_n, want_sum in (("probe", 1, 2.0), ("probe_input", 2, 6.0)):
        for label, models in (("listed", listed), ("unlisted", listed[1:])):
            n = merged(
                tmp_path,
                {"merge_method": method, "base_model": base, "models": models, "parameters": {"show": "n"}},
                f"{method}{label}n",
            )
            s = merged(
                tmp_path,
                {"merge_method": method, "base_model": base, "models": models, "parameters": {"show": "sum"}},
                f"{method}{label}s",
            )
            if method == "probe_input" and label == "unlisted":  # mergekit merges an unlisted base too, weight 1
                assert (value(n, NORM), value(s, NORM)) == (2.0, 3.0)
            else:
                assert (value(n, NORM), value(s, NORM)) == (want_n, want_sum), (method, label)
    # real methods: task arithmetic ignores a listed base's weight; linear averages it in
    ta = [
        merged(tmp_path, {"merge_method": "task_arithmetic", "base_model": base, "models": m}, f"ta{i}")
        for i, m in enumerate((listed, listed[1:]))
    ]
    assert all(torch.equal(ta[0][k], ta[1][k]) for k in ta[0])
    lin = merged(tmp_path, {"merge_method": "linear", "base_model": base, "models": listed}, "lin")
    ref = [load_file(f"{d}/model.safetensors") for d in (base, zoo["a"])]
    assert torch.allclose(lin[Q.format(2)], (4 * ref[0][Q.format(2)] + 2 * ref[1][Q.format(2)]) / 6, atol=1e-7)


# ---- slices and passthrough -----------------------------------------------------------------------
def test_depth_upscaling_copies_each_layer_bit_for_bit(tmp_path):
    from transformers import AutoModelForCausalLM

    src = save_model(tmp_path / "src", 4, layers=8, kind="qwen2", use_sliding_window=True, max_window_layers=3)
    types = json.loads((Path(src) / "config.json").read_text())["layer_types"]
    assert types[:3] == ["full_attention"] * 3 and types[3] == "sliding_attention"
    y = write_yaml(
        tmp_path / "dus.yaml",
        "slices:\n  - sources:\n    - model: src\n      layer_range: [0, 6]\n"
        "  - sources:\n    - model: src\n      layer_range: [2, 8]\nmerge_method: passthrough\ndtype: float32\n",
    )
    out = merge_models(load_merge_config(y), tmp_path / "up", quiet=True)
    conf = json.loads((out / "config.json").read_text())
    assert conf["num_hidden_layers"] == 12
    origin = list(range(0, 6)) + list(range(2, 8))
    assert conf["layer_types"] == [types[j] for j in origin]
    model = AutoModelForCausalLM.from_pretrained(str(out))
    source = AutoModelForCausalLM.from_pretrained(src)
    assert len(model.model.layers) == 12
    for k, j in enumerate(origin):
        got, want = model.model.layers[k].state_dict(), source.model.layers[j].state_dict()
        assert all(torch.equal(got[n], want[n]) for n in want), (k, j)
    assert torch.equal(model.model.embed_tokens.weight, source.model.embed_tokens.weight)
    ids = torch.tensor([[5, 9, 14, 3]])
    assert torch.isfinite(model(ids).logits).all()


def test_gpt2_layers_h_n_are_renumbered_too(tmp_path):
    from transformers import AutoModelForCausalLM

    from lifelong.testing import tiny_gpt2

    tiny_gpt2(seed=0, n_layer=4).save_pretrained(tmp_path / "g")
    sd = merged(
        tmp_path,
        {
            "merge_method": "passthrough",
            "slices": [{"sources": [{"model": str(tmp_path / "g"), "layer_range": r}]} for r in ([0, 3], [1, 4])],
        },
    )
    src = load_file(str(tmp_path / "g" / "model.safetensors"))
    h = "transformer.h.{}.attn.c_attn.weight"
    assert all(torch.equal(sd[h.format(k)], src[h.format(j)]) for k, j in enumerate([0, 1, 2, 1, 2, 3]))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["n_layer"] == 6
    assert len(AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).transformer.h) == 6


def test_frankenmerge_takes_embeddings_from_the_first_slice_and_norm_from_the_last(tmp_path, zoo):
    sd = merged(
        tmp_path,
        {
            "merge_method": "passthrough",
            "slices": [
                {"sources": [{"model": zoo["a"], "layer_range": [0, 3]}]},
                {"sources": [{"model": zoo["b"], "layer_range": [1, 5]}]},
            ],
        },
    )
    a, b = (load_file(f"{zoo[m]}/model.safetensors") for m in "ab")
    assert torch.equal(sd[EMB], a[EMB]) and torch.equal(sd[NORM], b[NORM])
    assert torch.equal(sd[Q.format(2)], a[Q.format(2)]) and torch.equal(sd[Q.format(3)], b[Q.format(1)])
    assert torch.equal(sd[Q.format(6)], b[Q.format(4)]) and Q.format(7) not in sd
    # mergekit's per-model scale: zero the o_proj of the second slice only
    scaled = merged(
        tmp_path,
        {
            "merge_method": "passthrough",
            "slices": [
                {"sources": [{"model": zoo["a"], "layer_range": [0, 2]}]},
                {
                    "sources": [{"model": zoo["a"], "layer_range": [2, 5]}],
                    "parameters": {"scale": [{"filter": "o_proj", "value": 0.0}, {"value": 1.0}]},
                },
            ],
        },
        "scaled",
    )
    o = "model.layers.{}.self_attn.o_proj.weight"
    assert torch.equal(scaled[o.format(1)], a[o.format(1)]) and not scaled[o.format(3)].any()
    assert torch.equal(scaled[Q.format(3)], a[Q.format(3)])


def test_slice_wise_merge_with_several_sources(tmp_path, zoo):
    sd = merged(
        tmp_path,
        {
            "merge_method": "linear",
            "slices": [
                {
                    "sources": [
                        {"model": zoo["a"], "layer_range": [0, 3]},
                        {"model": zoo["b"], "layer_range": [2, 5], "parameters": {"weight": [0, 1]}},
                    ]
                },
                {"sources": [{"model": zoo["c"], "layer_range": [4, 5]}]},
            ],
        },
    )
    a, b, c = (load_file(f"{zoo[m]}/model.safetensors") for m in "abc")
    # layer k of slice 0 = (a[k] + w b[k + 2]) / (1 + w), w = gradient 0 -> 1 over t = 0, .5, 1
    for k, w in ((0, 0.0), (1, 0.5), (2, 1.0)):
        want = (a[Q.format(k)] + w * b[Q.format(k + 2)]) / (1 + w)
        assert torch.allclose(sd[Q.format(k)], want, atol=1e-7), k
    assert torch.equal(sd[Q.format(3)], c[Q.format(4)])
    assert torch.equal(sd[EMB], a[EMB])  # the first slice's sources at t = 0: b's weight gradient gives 0
    assert torch.equal(sd[NORM], c[NORM])


def test_slice_errors_are_located(tmp_path, zoo):
    y = write_yaml(
        tmp_path / "s.yaml",
        f"merge_method: passthrough\nslices:\n  - sources:\n    - model: {zoo['a']}\n      layer_range: [2, 9]\n",
    )
    with pytest.raises(ConfigError, match=rf"{y}:5: slices\.0\.sources\.0\.layer_range: \[2, 9\] is not a range"):
        merge_models(load_merge_config(y), tmp_path / "o")
    y.write_text(
        f"merge_method: passthrough\nslices:\n  - sources:\n    - model: {zoo['a']}\n      layer_range: [0, 2]\n"
        f"    - model: {zoo['b']}\n      layer_range: [0, 2]\n"
    )
    with pytest.raises(ConfigError, match=rf"{y}:3: slices\.0: merge_method passthrough takes exactly 1 models"):
        merge_models(load_merge_config(y), tmp_path / "o")
    assert not (tmp_path / "o").exists()


# ---- dtype ----------------------------------------------------------------------------------------
def test_dtype_rounds_inputs_and_out_dtype_sets_the_output(tmp_path, zoo):
    models = [{"model": zoo["a"], "parameters": {"weight": 0.7}}, {"model": zoo["b"], "parameters": {"weight": 0.4}}]
    a, b = (load_file(f"{zoo[m]}/model.safetensors")[Q.format(1)] for m in "ab")
    lin = MERGE_METHODS.get("linear")()
    ctx = TensorContext(name=Q.format(1))
    bf = merged(tmp_path, {"merge_method": "linear", "models": models, "dtype": "bfloat16"}, "bf")
    want = lin.merge([a.bfloat16().float(), b.bfloat16().float()], [0.7, 0.4], None, ctx).bfloat16()
    assert bf[Q.format(1)].dtype == torch.bfloat16 and torch.equal(bf[Q.format(1)], want)
    assert not torch.equal(want, lin.merge([a, b], [0.7, 0.4], None, ctx).bfloat16())  # inputs rounded first
    h = merged(tmp_path, {"merge_method": "linear", "models": models, "dtype": "float32", "out_dtype": "float16"}, "h")
    assert h[Q.format(1)].dtype == torch.float16
    assert torch.equal(h[Q.format(1)], lin.merge([a, b], [0.7, 0.4], None, ctx).half())
    conf = json.loads((tmp_path / "h" / "config.json").read_text())
    assert conf["dtype"] == "float16"


# ---- model references, tokenizer and chat template -------------------------------------------------
def test_hub_ids_resolve_from_the_local_cache_and_fail_clearly_offline(tmp_path, zoo, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snap = cache / "models--org--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(zoo["a"], snap)
    (cache / "models--org--tiny" / "refs").mkdir(parents=True)
    (cache / "models--org--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    sd = merged(tmp_path, {"merge_method": "passthrough", "models": [{"model": "org/tiny"}]})
    assert torch.equal(sd[Q.format(0)], load_file(f"{zoo['a']}/model.safetensors")[Q.format(0)])
    with pytest.raises(
        ValueError, match=r"model 'org/absent': not a local directory and not in the local Hugging Face cache"
    ):
        merged(tmp_path, {"merge_method": "passthrough", "models": [{"model": "org/absent"}]}, "x")


def test_model_plus_lora_reference_applies_the_adapter(tmp_path, zoo):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(zoo["a"]),
        LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False),
    )
    peft_model.save_pretrained(tmp_path / "lora")
    want = peft_model.merge_and_unload().state_dict()[Q.format(1)]
    sd = merged(tmp_path, {"merge_method": "passthrough", "models": [{"model": f"{zoo['a']}+{tmp_path / 'lora'}"}]})
    assert torch.allclose(sd[Q.format(1)], want, atol=1e-6)
    assert not torch.allclose(want, load_file(f"{zoo['a']}/model.safetensors")[Q.format(1)])


def test_chat_template_and_tokenizer_options(tmp_path, zoo):
    tpl = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    out = merge_models(
        MergeConfig(merge_method="linear", models=[{"model": zoo["a"]}, {"model": zoo["b"]}], chat_template=tpl),
        tmp_path / "t",
        quiet=True,
    )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "<user>hi"
    auto = merge_models(
        MergeConfig(merge_method="linear", models=[{"model": str(out)}, {"model": zoo["b"]}], chat_template="auto"),
        tmp_path / "auto",
        quiet=True,
    )
    assert AutoTokenizer.from_pretrained(str(auto)).chat_template == tpl
    for bad, why in (
        ({"chat_template": "chatml"}, "mergekit's bundled templates"),
        ({"tokenizer": {"source": "union", "tokens": {"<x>": {"source": "base"}}}}, "tokenizer.tokens"),
        ({"tokenizer_source": "base", "tokenizer": {"source": "base"}}, "not both"),
        ({"slices": [{"sources": [{"model": zoo["a"], "layer_range": [0, 1]}]}]}, "exactly one of `models:`"),
        ({"modules": {"text": {}}}, "`modules:` syntax"),
    ):
        with pytest.raises(ValueError, match=why):
            merge_models(
                MergeConfig.model_validate({"merge_method": "linear", "models": [{"model": zoo["a"]}], **bad}),
                tmp_path / "x",
            )


def test_each_input_tensor_is_read_once_per_output_tensor(tmp_path, zoo, monkeypatch):
    """The engine holds one tensor per input at a time: every output tensor reads each input's tensor once
    (the base once even when it is also merged) and nothing else."""
    from lifelong.merging import st_io

    reads: list[str] = []
    real = st_io.LazyModel.get

    def counting(self, name):
        reads.append(name)
        return real(self, name)

    monkeypatch.setattr(st_io.LazyModel, "get", counting)
    models = [{"model": zoo["base"]}, {"model": zoo["a"]}, {"model": zoo["b"]}]
    out = merge_models(
        MergeConfig(merge_method="linear", base_model=zoo["base"], models=models), tmp_path / "o", quiet=True
    )
    n_out = len(load_file(str(out / "model.safetensors")))
    assert len(reads) == 3 * n_out and set(Counter(reads).values()) == {3}


# ---- mergekit's example configs ---------------------------------------------------------------------
GRADIENT_SLERP = """slices:
  - sources:
      - model: {a}
        layer_range: [0, {n}]
      - model: {b}
        layer_range: [0, {n}]
# or, the equivalent models: syntax:
# models:
#   - model: {a}
#   - model: {b}
merge_method: slerp
base_model: {a}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5 # fallback for rest of tensors
dtype: float16
"""
"""mergekit's examples/gradient-slerp.yml, verbatim but for the model names and the layer count."""


def test_mergekits_gradient_slerp_example_runs_unchanged(tmp_path, zoo):
    from lifelong.merging.slerp import slerp

    y = write_yaml(tmp_path / "gradient-slerp.yml", GRADIENT_SLERP.format(a=zoo["a"], b=zoo["b"], n=N_LAYERS))
    out = merge_models(load_merge_config(y), tmp_path / "o", quiet=True)
    sd = load_file(str(out / "model.safetensors"))
    a, b = (load_file(f"{zoo[m]}/model.safetensors") for m in "ab")
    half = lambda t: t.half().float()  # noqa: E731  (dtype float16: inputs rounded, output float16)
    # layer k of 5 sits at t = k / 4, i.e. at entry k of the 5-entry gradients
    for name, t in (
        (Q.format(2), 0.3),
        (UP.format(2), 0.7),
        (Q.format(3), 0.7),
        (UP.format(3), 0.3),
        ("model.layers.1.input_layernorm.weight", 0.5),
        (EMB, 0.5),
    ):
        want = slerp(half(a[name]), half(b[name]), t).half()
        assert sd[name].dtype == torch.float16 and torch.equal(sd[name], want), name
    assert torch.equal(sd[Q.format(0)], a[Q.format(0)].half()) and torch.equal(sd[Q.format(4)], b[Q.format(4)].half())


# ---- parity with mergekit itself ---------------------------------------------------------------------
def run_both(tmp_path: Path, name: str, cfg: dict) -> tuple[dict, dict]:
    y = tmp_path / f"{name}.yml"
    y.write_text(yaml.safe_dump(cfg, sort_keys=False))
    ours = merge_models(load_merge_config(y), tmp_path / f"ll-{name}", quiet=True)
    theirs = tmp_path / f"mk-{name}"
    subprocess.run(
        [str(MERGEKIT), str(y), str(theirs), "--lazy-unpickle", "--no-cuda", "--allow-crimes", "--quiet"],
        check=True,
        capture_output=True,
    )
    return load_file(str(ours / "model.safetensors")), load_file(str(theirs / "model.safetensors"))


@pytest.mark.skipif(not MERGEKIT.exists(), reason="mergekit is not installed in /tmp/mkvenv")
def test_same_yaml_same_model_as_mergekit(tmp_path, zoo):
    n = N_LAYERS
    cases = {
        "gradient-slerp": yaml.safe_load(
            GRADIENT_SLERP.format(a=zoo["base"], b=zoo["a"], n=n).replace("float16", "float32")
        ),
        "ties-per-model": {
            "models": [
                {"model": zoo["a"], "parameters": {"density": [1, 0.7, 0.1], "weight": 1.0}},
                {"model": zoo["b"], "parameters": {"density": 0.5, "weight": [0, 0.3, 0.7, 1]}},
                {
                    "model": zoo["c"],
                    "parameters": {"density": 0.33, "weight": [{"filter": "mlp", "value": 0.5}, {"value": 0}]},
                },
            ],
            "merge_method": "ties",
            "base_model": zoo["base"],
            "parameters": {"normalize": True, "int8_mask": True},
            "dtype": "float32",
        },
        "frankenmerge": {
            "slices": [
                {"sources": [{"model": zoo["a"], "layer_range": [0, 3]}]},
                {"sources": [{"model": zoo["b"], "layer_range": [1, 5]}]},
            ],
            "merge_method": "passthrough",
            "dtype": "float32",
        },
    }
    for name, cfg in cases.items():
        ours, theirs = run_both(tmp_path, name, cfg)
        assert set(ours) == set(theirs), name
        diff = max(float((ours[k].float() - theirs[k].float()).abs().max()) for k in ours)
        assert diff <= 1e-6, (name, diff)
