"""LoRA extraction (`lifelong extract-lora`, lifelong.merging.extract_lora): a fine-tune whose delta is
exactly rank 2 is recovered at rank 2 (logits equal) and not at rank 1; on a full-rank delta the logit
error falls as the rank grows and vanishes at full rank; energy picks per-module ranks (rank_pattern);
deltas outside linear weights are left out or saved whole; the CLI; refusals."""

import json
import math

import pytest
import torch

from lifelong.merging.extract_lora import choose_rank, compare_logits, extract_lora, factorise

torch.set_num_threads(1)


def orthonormal(n, k, g):
    return torch.linalg.qr(torch.randn(n, k, generator=g))[0]


def save_pair(d, sv=None, full=0.0, seed=1, kind="llama", norm=0.0):
    """base, and tuned = base + a delta on every linear layer but the head: U diag(sv) V^T with random
    orthonormal U, V (exactly rank len(sv); `sv` may depend on the module), plus `full` * a dense random
    matrix (full rank); `norm`: also shift every norm weight."""
    from lifelong.testing import tiny_model, tiny_tokenizer

    model = tiny_model(kind, seed=0)
    model.save_pretrained(d / "base")
    tiny_tokenizer().save_pretrained(d / "base")
    g = torch.Generator().manual_seed(seed)
    head = model.get_output_embeddings()
    with torch.no_grad():
        for name, mod in model.named_modules():
            w = getattr(mod, "weight", None)
            if w is None or mod is head:
                continue
            if w.dim() == 2 and not isinstance(mod, torch.nn.Embedding):
                M = w.T if kind == "gpt2" else w  # gpt2's Conv1D stores in x out
                s = sv(name) if callable(sv) else sv
                if s:
                    M.add_(
                        orthonormal(M.shape[0], len(s), g)
                        @ torch.diag(torch.tensor(s))
                        @ orthonormal(M.shape[1], len(s), g).T
                    )
                if full:
                    M.add_(full * torch.randn(M.shape, generator=g))
            elif "norm" in name or ".ln_" in name:
                w.add_(norm)
    model.save_pretrained(d / "tuned")
    tiny_tokenizer().save_pretrained(d / "tuned")
    return d / "base", d / "tuned"


def test_rank_choice_and_factorisation():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
    assert choose_rank(s, 14.0, 2, None) == 2 and choose_rank(s, 14.0, 9, None) == 4
    assert choose_rank(s, 14.0, None, 9 / 14) == 1 and choose_rank(s, 14.0, None, 0.65) == 2
    assert choose_rank(s, 14.0, None, 1.0) == 3 and choose_rank(s, 14.0, 2, 1.0) == 2  # rank caps energy
    g = torch.Generator().manual_seed(0)
    D = orthonormal(40, 3, g) @ torch.diag(torch.tensor([4.0, 2.0, 1.0])) @ orthonormal(30, 3, g).T
    A, B, kept = factorise(D, 2, None)
    assert A.shape == (2, 30) and B.shape == (40, 2) and math.isclose(kept, 20 / 21, rel_tol=1e-5)
    assert math.isclose(float((D - B @ A).norm()), 1.0, rel_tol=1e-4)  # Eckart-Young: the dropped sigma
    assert torch.allclose(A.norm(dim=1), B.norm(dim=0), rtol=1e-4)  # sqrt(S) on each side
    A, B, _ = factorise(D, 3, None, lowrank_above=8)  # the randomised SVD path: exact on a rank-3 delta
    assert torch.allclose(B @ A, D, atol=1e-5)


def test_exact_low_rank_delta_is_recovered_at_its_rank(tmp_path):
    base, tuned = save_pair(tmp_path, sv=[1.0, 0.3])
    logits = {}
    for r in (1, 2, 4):
        rep = extract_lora(base, tuned, tmp_path / f"r{r}", rank=r)
        logits[r] = compare_logits(base, tuned, tmp_path / f"r{r}")
        mods = rep["modules"].values()
        assert len(mods) == 14 and all(m["rank"] == r for m in mods)  # a fixed rank is kept as asked
        if r == 1:  # Eckart-Young: error sqrt(0.09 / 1.09), energy 1 / 1.09 in every module
            assert all(math.isclose(m["energy_kept"], 1 / 1.09, rel_tol=1e-4) for m in mods)
            assert all(math.isclose(m["relative_error"], math.sqrt(0.09 / 1.09), rel_tol=1e-3) for m in mods)
        else:
            assert all(m["relative_error"] < 1e-5 for m in mods)
    assert logits[1]["mean_kl"] > 1e-4 and logits[1]["max_abs_logit_diff"] > 0.05
    for r in (2, 4):  # the delta exactly: logits equal to float rounding
        assert logits[r]["max_abs_logit_diff"] < 1e-4 and logits[r]["mean_kl"] < 1e-10
    assert logits[1]["mean_kl"] < logits[1]["mean_kl_base"]  # rank 1 already recovers most of the fine-tune


def test_logit_error_falls_with_rank_to_zero_at_full_rank(tmp_path):
    base, tuned = save_pair(tmp_path, full=0.02)
    kl, diff = [], []
    for r in (1, 4, 16, 128):  # 128 >= every module's min(out, in): full rank
        extract_lora(base, tuned, tmp_path / f"r{r}", rank=r)
        c = compare_logits(base, tuned, tmp_path / f"r{r}")
        kl.append(c["mean_kl"])
        diff.append(c["max_abs_logit_diff"])
    assert kl == sorted(kl, reverse=True) and len(set(kl)) == 4, kl
    assert diff[:3] == sorted(diff[:3], reverse=True), diff
    assert kl[-1] < 1e-10 and diff[-1] < 1e-4


def test_energy_picks_each_modules_rank(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # q_proj: sigma (1, 0.8): rank 1 keeps 0.61 of the energy; elsewhere (1, 0.3): rank 1 keeps 0.917
    base, tuned = save_pair(tmp_path, sv=lambda name: [1.0, 0.8] if "q_proj" in name else [1.0, 0.3])
    rep = extract_lora(base, tuned, tmp_path / "e", energy=0.9)
    ranks = {m: v["rank"] for m, v in rep["modules"].items()}
    assert all(k == (2 if "q_proj" in m else 1) for m, k in ranks.items())
    cfg = json.loads((tmp_path / "e" / "adapter_config.json").read_text())
    assert cfg["r"] == 1 and cfg["lora_alpha"] == 1
    assert cfg["rank_pattern"] == cfg["alpha_pattern"] == {m: 2 for m in ranks if "q_proj" in m}
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(tmp_path / "e"))
    mods = dict(loaded.named_modules())
    for m, k in ranks.items():  # PEFT builds each module at its rank, with scaling 1
        layer = mods[f"base_model.model.{m}"]
        assert layer.lora_A["default"].weight.shape[0] == k and layer.scaling["default"] == 1.0
    rep2 = extract_lora(base, tuned, tmp_path / "e2", energy=0.95)
    assert all(v["rank"] == 2 for v in rep2["modules"].values())
    rep3 = extract_lora(base, tuned, tmp_path / "e3", energy=0.95, rank=1)  # rank caps the energy's choice
    assert all(v["rank"] == 1 for v in rep3["modules"].values())


def test_deltas_outside_linear_weights_left_out_or_saved_whole(tmp_path):
    base, tuned = save_pair(tmp_path, sv=[0.5, 0.2], norm=0.1)
    rep = extract_lora(base, tuned, tmp_path / "lora", rank=2)
    left = {x["tensor"]: x for x in rep["left_out"]}
    assert set(left) == {"model.norm.weight"} | {
        f"model.layers.{i}.{n}.weight" for i in (0, 1) for n in ("input_layernorm", "post_attention_layernorm")
    }
    assert all(
        math.isclose(x["relative_change"], 0.1, rel_tol=1e-3) and x["module_kind"] == "LlamaRMSNorm"
        for x in left.values()
    )
    without = compare_logits(base, tuned, tmp_path / "lora")
    rep2 = extract_lora(base, tuned, tmp_path / "lora_norms", rank=2, save_modules=["*norm*"])
    assert rep2["left_out"] == [] and len(rep2["saved_whole"]) == 5
    cfg = json.loads((tmp_path / "lora_norms" / "adapter_config.json").read_text())
    assert sorted(cfg["modules_to_save"]) == sorted(rep2["saved_whole"])
    with_norms = compare_logits(base, tuned, tmp_path / "lora_norms")
    assert without["mean_kl"] > 1e-4 and with_norms["mean_kl"] < 1e-10 and with_norms["max_abs_logit_diff"] < 1e-4


def test_gpt2_conv1d_layers(tmp_path):
    base, tuned = save_pair(tmp_path, sv=[0.5, 0.2], kind="gpt2")
    rep = extract_lora(base, tuned, tmp_path / "lora", rank=2)
    assert len(rep["modules"]) == 8 and all(m["relative_error"] < 1e-5 for m in rep["modules"].values())
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    c = compare_logits(base, tuned, tmp_path / "lora")
    assert c["max_abs_logit_diff"] < 1e-4 and c["mean_kl_base"] > 1e-4


def test_cli_and_refusals(tmp_path, capsys):
    from lifelong.cli import main
    from lifelong.testing import tiny_llama

    base, tuned = save_pair(tmp_path, sv=[1.0, 0.3])
    texts = tmp_path / "texts.txt"
    texts.write_text("hello world\n\nthe cat sat on the mat\n")
    args = ["extract-lora", "--base", str(base), "--tuned", str(tuned), "--out", str(tmp_path / "x")]
    assert main(args + ["--energy", "0.99", "--modules", "*self_attn*", "--compare", "--texts", str(texts)]) == 0
    out = capsys.readouterr().out
    assert "8 modules, rank 2-2" in out and "mean KL(tuned || base+adapter)" in out
    rep = json.loads((tmp_path / "x" / "extract_report.json").read_text())
    assert rep["logits"]["texts"] == 2 and rep["logits"]["max_abs_logit_diff"] > 0.01  # the MLPs left out
    assert set(rep["modules"]) == {f"model.layers.{i}.self_attn.{p}_proj" for i in (0, 1) for p in "qkvo"}
    assert (tmp_path / "x" / "tokenizer.json").exists()
    assert main(args + ["--rank", "2"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args[:-1] + [str(tmp_path / "y"), "--modules", "*attention*"]) == 2
    assert (
        "--modules '*attention*' matches no linear layer (their names look like 'model.layers.0"
        in capsys.readouterr().err
    )
    assert main(args[:-1] + [str(tmp_path / "y"), "--energy", "1.5"]) == 2
    assert "--energy 1.5" in capsys.readouterr().err
    assert main(["extract-lora", "--base", str(base), "--tuned", str(base), "--out", str(tmp_path / "y")]) == 2
    assert "nothing to extract" in capsys.readouterr().err
    tiny_llama(seed=0, intermediate_size=96).save_pretrained(tmp_path / "wide")
    with pytest.raises(
        ValueError, match=r"tensor 'model\.layers\.0\.mlp\.down_proj\.weight': shape \[64, 128\] in base but \[64, 96\]"
    ):
        extract_lora(base, tmp_path / "wide", tmp_path / "y")
    assert not (tmp_path / "y").exists() and not list(tmp_path.glob(".y*"))  # nothing half-written
