"""Per-stage LoRA and O-LoRA: isolation (no forgetting by construction), frozen earlier adapters, PEFT-format
exports, task-agnostic routing, orthogonality, and resume with the adapter structure rebuilt."""

import json

import pytest
import torch

from lifelong.runner import Run
from lifelong.testing import tiny_pretrained, tiny_run_config
from lifelong.validation import validate_raw


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_pretrained(tmp_path_factory.mktemp("base") / "tiny")


def make(base, out, spec, name, steps=150, lr=1e-2, **kw):
    raw = tiny_run_config(spec, steps=steps, train={"lr": lr}, name=name, output_dir=str(out), **kw)
    raw["model"] = {"path": base}
    raw["eval"]["bootstrap"] = 0
    return validate_raw(raw)


@pytest.fixture(scope="module")
def lora_run(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    run = Run(make(base, out, {"name": "lora", "r": 16, "alpha": 32, "router": "prototype"}, "lora"), quiet=True)
    return run, run.execute()


def test_per_stage_lora_never_changes_earlier_scores(lora_run, base, tmp_path):
    run, res = lora_run
    A = res.matrix
    for j in range(3):
        for i in range(j + 1, 3):
            assert A[i + 1][j] == A[j + 1][j]  # own adapter, frozen: identical scores (task-aware eval)
    m = res.metrics["score"]["metrics"]
    assert m["FM"] == 0 and m["BWT"] == 0
    assert max(A[j + 1][j] - A[0][j] for j in range(3)) > 20  # and it learns
    naive = Run(make(base, tmp_path, "naive", "naive", steps=60, lr=1e-3), quiet=True).execute()
    assert naive.metrics["score"]["metrics"]["FM"] > 10  # the same stream does cause forgetting


def test_adapters_are_exported_in_peft_format_and_stay_frozen(lora_run, base):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run, _ = lora_run
    for k in range(3):
        d = run.run_dir / "adapters" / f"stage{k}"
        assert (d / "adapter_config.json").exists() and (d / "adapter_model.safetensors").exists()
    exported = load_file(str(run.run_dir / "adapters" / "stage0" / "adapter_model.safetensors"))
    live = {n: p for n, p in run.model.named_parameters() if ".stage0." in n}
    assert len(exported) == len(live) > 0
    for n, t in exported.items():  # stage0's adapter, exported after stage 0, is unchanged after stage 2
        match = [p for ln, p in live.items() if ln.replace(".stage0", "") == n]
        assert len(match) == 1 and torch.equal(match[0].detach(), t)
    fresh = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base), str(run.run_dir / "adapters" / "stage1")
    )
    run.model.base_model.enable_adapter_layers()
    run.model.base_model.set_adapter("stage1")
    ids = torch.tensor([[33, 5, 98, 14, 15, 16, 86]])
    with torch.no_grad():
        assert torch.allclose(fresh(ids).logits, run.model(ids).logits, atol=1e-5)


def test_prototype_router_finds_each_tasks_adapter(lora_run):
    from lifelong.strategies.base import StageContext

    run, _ = lora_run
    for task in run.tasks:
        ctx = StageContext(
            stage_index=2,
            stage_name="x",
            model=run.model,
            tokenizer=run.tokenizer,
            task_stage=None,
            task_items=task.items,
            formatter=run.formatter,
        )
        assert run.strategy.route(ctx, task) == f"stage{task.stage}"


def test_resume_rebuilds_adapters_and_recomputes_the_same_row(lora_run):
    run, res = lora_run
    path = run.run_dir / "results.json"
    saved = json.loads(path.read_text())
    last = saved["matrix"][-1]
    saved["matrix"][-1] = [None] * len(last)
    path.write_text(json.dumps(saved))
    again = Run(run.cfg, resume=True, quiet=True)
    out = again.execute()
    assert out.matrix[-1] == last
    assert type(again.model).__name__.startswith("PeftModel")


def test_olora_keeps_new_adapter_orthogonal_and_old_ones_frozen(base, tmp_path):
    overlaps = {}
    for lam in (0.0, 0.5):
        run = Run(
            make(base, tmp_path, {"name": "olora", "lambda1": lam}, f"olora{lam}", steps=40, n_stages=2), quiet=True
        )
        run.execute()
        overlaps[lam] = float(run.strategy.overlap(run.model).detach())
        assert run.strategy.adapters == ["stage0", "stage1"]
        from safetensors.torch import load_file

        exported = load_file(str(run.run_dir / "adapters" / "stage0" / "adapter_model.safetensors"))
        live = {n.replace(".stage0", ""): p for n, p in run.model.named_parameters() if ".stage0." in n}
        assert exported and all(torch.equal(live[n].detach(), t) for n, t in exported.items())  # frozen
        assert set(run.model.base_model.active_adapters) == {"stage0", "stage1"}  # all active at inference
    assert overlaps[0.5] < 0.3 * overlaps[0.0], overlaps


def test_progressive_prompts_isolate_stages_and_learn(base, tmp_path):
    from lifelong.train.loop import collate

    cfg = make(base, tmp_path, {"name": "prompt", "n_tokens": 8}, "prompt", steps=60, lr=3e-2)
    run = Run(cfg, quiet=True)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    res = run.execute()
    A = res.matrix
    for j in range(3):
        for i in range(j + 1, 3):
            assert A[i + 1][j] == A[j + 1][j]  # [P_j..P_1] unchanged by later stages
    model = run.model
    assert len(model.prompts) == 3 and not any(p.requires_grad for p in model.parameters())
    for n, p in model.base.named_parameters():
        assert torch.equal(p, before[n])  # base frozen
    # the stage-0 prompt learned: lower loss on stage 0's data than the prompt it started from
    ex = run.prepared[0]
    batch = collate(ex[:64], 0, "cpu")
    model.active = 1
    with torch.no_grad():
        trained = float(model(**batch).loss)
        model.prompts[0].data.copy_(run.strategy._new_prompt(model, 0))
        initial = float(model(**batch).loss)
    assert trained < initial - 0.01, (trained, initial)


def test_lora_moe_starts_as_base_freezes_old_experts_and_balances(base, tmp_path):
    from transformers import AutoModelForCausalLM

    from lifelong.strategies.base import StageContext
    from lifelong.strategies.lora_moe import LoRAMoE, LoRAMoEParams, moe_layers
    from lifelong.testing import tiny_tokenizer
    from lifelong.train.loop import collate

    ref = AutoModelForCausalLM.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    s = LoRAMoE(LoRAMoEParams(n_experts=2))
    model = s.wrap_model(StageContext(stage_index=0, stage_name="a", model=model, tokenizer=tiny_tokenizer()))
    ids = torch.tensor([[33, 5, 98, 14, 15, 16, 86]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-6)  # B = 0: function unchanged
    assert len(moe_layers(model)) == 2 * 3  # gate, up, down in each of 2 layers (module map)

    cvs, runs = {}, {}
    for bal in (0.0, 2.0):
        run = Run(
            make(
                base, tmp_path, {"name": "lora_moe", "n_experts": 2, "balance": bal}, f"moe{bal}", steps=60, n_stages=2
            ),
            quiet=True,
        )
        run.execute()
        batch = collate(run.prepared[1][:64], 0, "cpu")
        with torch.no_grad():
            run.model(**batch)
        cvs[bal], runs[bal] = run.strategy.importance_cv(run.model), run
    assert cvs[2.0] < 0.5 * cvs[0.0], cvs  # the balance term spreads the router's gates over experts
    layers = moe_layers(runs[0.0].model)
    assert all(len(m.A) == 4 and m.router.shape[0] == 4 for m in layers)  # 2 experts per stage, 2 stages
    assert not any(m.A[0].requires_grad or m.B[1].requires_grad for m in layers)  # stage-0 experts frozen
    assert any(float(m.B[2].abs().sum()) > 0 for m in layers)  # stage-1 experts trained
