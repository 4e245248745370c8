"""Each strategy does what its paper says on the same synthetic stream, seed and budget as `naive`:
forgetting measurably below naive, plus the method-specific property."""

import pytest
import torch

from lifelong.runner import Run

STEPS, LR = 60, 1e-3


@pytest.fixture(scope="module")
def naive_metrics(tmp_path_factory):
    from lifelong.testing import tiny_run_config
    from lifelong.validation import validate_raw

    raw = tiny_run_config(
        "naive", steps=STEPS, train={"lr": LR}, name="naive", output_dir=str(tmp_path_factory.mktemp("runs"))
    )
    raw["eval"]["bootstrap"] = 0
    return Run(validate_raw(raw), quiet=True).execute().metrics["score"]["metrics"]


def run_strategy(tiny_cfg, spec, name=None):
    cfg = tiny_cfg(spec, steps=STEPS, train={"lr": LR}, name=name or spec["name"])
    cfg.eval.bootstrap = 0
    run = Run(cfg, quiet=True)
    res = run.execute()
    return run, res.metrics["score"]["metrics"]


@pytest.mark.parametrize(
    "spec,margin",
    [
        ({"name": "l2", "weight": 0.05}, 10),
        ({"name": "ewc", "weight": 1e5}, 20),
        ({"name": "ewc", "weight": 1e5, "online": True, "gamma": 0.9}, 15),
        ({"name": "agem", "memory_size": 300, "sample_size": 64}, 20),
    ],
)
def test_forgets_less_than_naive(spec, margin, tiny_cfg, naive_metrics):
    run, m = run_strategy(tiny_cfg, spec)
    assert m["FM"] < naive_metrics["FM"] - margin, (spec, m, naive_metrics)


def test_lwf_forgets_less_than_naive_when_the_new_task_has_new_outputs(tmp_path):
    from lifelong.testing import tiny_run_config
    from lifelong.validation import validate_raw

    fms = {}
    for spec in ("naive", {"name": "lwf", "weight": 30.0, "temperature": 2.0, "positions": "all"}):
        raw = tiny_run_config(
            spec,
            n_stages=2,
            steps=STEPS,
            train={"lr": LR},
            name="naive" if spec == "naive" else "lwf",
            output_dir=str(tmp_path),
        )
        for part in ("data", "eval"):
            st = raw["stages"][1][part]
            st["rows"] = [{"text": r["text"], "label": {"yes": "cat", "no": "dog"}[r["label"]]} for r in st["rows"]]
            st["labels"] = ["cat", "dog"]
        raw["eval"]["bootstrap"] = 0
        res = Run(validate_raw(raw), quiet=True).execute()
        fms[str(spec)] = res.metrics["score"]["metrics"]
        assert res.matrix[2][1] > 90  # the new task is learned either way
    naive, lwf = fms["naive"], fms[str({"name": "lwf", "weight": 30.0, "temperature": 2.0, "positions": "all"})]
    assert lwf["FM"] < naive["FM"] - 10, (naive, lwf)


def test_ewc_fisher_is_mean_squared_per_example_gradient(tiny_cfg):
    from lifelong.strategies.base import StageContext
    from lifelong.strategies.ewc import EWC, EWCParams
    from lifelong.testing import tiny_llama, tiny_tokenizer
    from lifelong.train.loop import collate

    model, tok = tiny_llama(seed=5), tiny_tokenizer()
    examples = [
        {"input_ids": [5, 6, 7, 8], "labels": [-100, 6, 7, 8]},
        {"input_ids": [9, 10, 11], "labels": [-100, -100, 11]},
    ]
    ewc = EWC(EWCParams(fisher_samples=2))
    f = ewc.fisher(StageContext(stage_index=0, stage_name="s", model=model, tokenizer=tok, examples=examples))
    name = "model.layers.0.mlp.down_proj.weight"
    expected = torch.zeros_like(dict(model.named_parameters())[name])
    for e in examples:
        model.zero_grad()
        model(**collate([e], 0, "cpu")).loss.backward()
        expected += dict(model.named_parameters())[name].grad ** 2
    assert torch.allclose(f[name], expected / 2, rtol=1e-5, atol=1e-12)


def test_online_ewc_keeps_one_decayed_fisher(tiny_cfg):
    from lifelong.strategies._anchors import trainable

    run, _ = run_strategy(tiny_cfg, {"name": "ewc", "online": True, "gamma": 0.5, "fisher_samples": 16})
    run2, _ = run_strategy(tiny_cfg, {"name": "ewc", "fisher_samples": 16}, name="ewc-offline")
    for r in (run, run2):  # one Fisher and one anchor per parameter in both modes (offline: the closed form)
        s, final = r.strategy, trainable(r.model)
        assert s.stages == 3 and set(s.fisher_sum) == set(s.anchor) == set(final)
    assert all(torch.equal(run.strategy.anchor[n], p) for n, p in trainable(run.model).items())  # online: latest
    assert run2.strategy.offset > 0  # offline: the F-weighted mean of the 3 anchors (tests/test_ewc_state.py)


def test_agem_update_never_conflicts_with_memory_gradient(tiny_cfg):
    run, _ = run_strategy(tiny_cfg, {"name": "agem", "memory_size": 100, "sample_size": 16})
    s = run.strategy
    assert s.projections > 0  # conflicts happened on this stream
    assert s.last_dot_after is not None and s.last_dot_after >= -1e-6


def test_lwf_penalty_is_zero_when_student_equals_teacher():
    from lifelong.strategies.base import StageContext
    from lifelong.strategies.lwf import LwF, LwFParams
    from lifelong.testing import tiny_llama, tiny_tokenizer
    from lifelong.train.loop import collate

    model = tiny_llama(seed=6)
    s = LwF(LwFParams(positions="all"))
    ctx = StageContext(stage_index=1, stage_name="s", model=model, tokenizer=tiny_tokenizer())
    s.before_stage(ctx)
    batch = collate([{"input_ids": [5, 6, 7, 8], "labels": [-100, 6, 7, 8]}], 0, "cpu")
    out = model(**batch)
    assert float(s.penalty(ctx, batch, out)) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.lm_head.weight.add_(0.05 * torch.randn_like(model.lm_head.weight))
    assert float(s.penalty(ctx, batch, model(**batch))) > 1e-4
    assert sum(p.requires_grad for p in s.teacher.parameters()) == 0


def test_l2_gradient_equals_penalty_gradient():
    from lifelong.strategies.base import StageContext
    from lifelong.strategies.l2 import L2, L2Params
    from lifelong.testing import tiny_llama

    model = tiny_llama(seed=7)
    s = L2(L2Params(weight=0.3))
    ctx = StageContext(stage_index=1, stage_name="s", model=model, tokenizer=None)
    s.before_stage(ctx)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    s.before_step(ctx)
    g = model.lm_head.weight.grad
    assert torch.allclose(g, torch.full_like(g, 0.3 * 0.01), atol=1e-6)


def test_merge_after_stage_forgets_less_and_is_exact_task_arithmetic(tiny_cfg, naive_metrics):
    run, m = run_strategy(tiny_cfg, {"name": "merge_after_stage", "weight": 0.5})
    assert m["FM"] < naive_metrics["FM"] - 15, (m, naive_metrics)
    s = run.strategy
    assert len(s.vectors) == 3
    for name, p in run.model.named_parameters():
        expected = s.base[name] + 0.5 * sum(v[name] for v in s.vectors)
        assert torch.allclose(p.detach(), expected, atol=1e-6)


def test_generative_replay_forgets_less_without_storing_data(tiny_cfg):
    fm = {}
    for spec in ("naive", {"name": "generative_replay", "fraction": 0.3, "max_new_tokens": 24}):
        name = "naive-long" if spec == "naive" else "genreplay"
        cfg = tiny_cfg(spec, steps=120, train={"lr": 2e-3}, name=name)
        cfg.eval.bootstrap = 0
        run = Run(cfg, quiet=True)
        fm[name] = run.execute().metrics["score"]["metrics"]
    assert fm["genreplay"]["FM"] < fm["naive-long"]["FM"] - 15, fm
    assert fm["genreplay"]["AA"] > fm["naive-long"]["AA"] + 5, fm
    s = run.strategy
    assert len(s.pseudo) > 32 and all(e["stage"] in (0, 1) for e in s.pseudo)  # pseudo-examples of stages 0-1
    assert s.cost()["stored_examples"] == 0 and not s.stores_examples
    decoded = run.tokenizer.decode([t for t in s.pseudo[0]["input_ids"]])
    assert decoded.startswith("t") and "?" in decoded  # the model generates its own task examples


def test_replay_and_ewc_compose(tiny_cfg, naive_metrics):
    run, m = run_strategy(
        tiny_cfg,
        [{"name": "replay", "buffer_size": 200, "fraction": 0.3}, {"name": "ewc", "weight": 1e5}],
        name="replay-ewc",
    )
    from lifelong.strategies.base import Compose

    assert isinstance(run.strategy, Compose) and run.strategy.parts[1].stages == 3
    assert run.strategy.parts[0].replayed > 0
    assert m["FM"] < naive_metrics["FM"] - 20, (m, naive_metrics)


def test_sampled_fisher_uses_model_labels_not_data_labels():
    from lifelong.strategies.base import StageContext
    from lifelong.strategies.ewc import EWC, EWCParams
    from lifelong.testing import tiny_llama, tiny_tokenizer

    model, tok = tiny_llama(seed=8), tiny_tokenizer()
    examples = [{"input_ids": [5, 6, 7, 8, 9], "labels": [-100, -100, 7, 8, 9]}] * 8
    ctx = StageContext(stage_index=0, stage_name="s", model=model, tokenizer=tok, examples=examples)
    emp = EWC(EWCParams(fisher_samples=8)).fisher(ctx)
    smp = EWC(EWCParams(fisher_samples=8, fisher="sampled")).fisher(ctx)
    again = EWC(EWCParams(fisher_samples=8, fisher="sampled")).fisher(ctx)
    k = "model.layers.1.mlp.down_proj.weight"
    assert not torch.allclose(emp[k], smp[k])  # a random model rarely samples the data's labels
    assert torch.equal(smp[k], again[k])  # seeded: reproducible


def test_rho1_keeps_the_top_k_tokens_by_excess_loss(tmp_path):
    from lifelong.strategies.base import StageContext
    from lifelong.strategies.rho1 import Rho1, Rho1Params, token_losses
    from lifelong.testing import tiny_llama, tiny_tokenizer
    from lifelong.train.loop import collate

    ref, model, tok = tiny_llama(seed=1), tiny_llama(seed=2), tiny_tokenizer()
    ref.save_pretrained(tmp_path / "ref")
    s = Rho1(Rho1Params(keep=0.5, reference=str(tmp_path / "ref")))
    ctx = StageContext(stage_index=0, stage_name="s", model=model, tokenizer=tok, device="cpu")
    batch = [
        {"input_ids": list(range(5, 17)), "labels": list(range(5, 17))},
        {"input_ids": list(range(20, 29)), "labels": [-100] * 3 + list(range(23, 29))},
    ]
    out = next(s.batches(ctx, iter([batch])))
    t = collate(batch, 0, "cpu")
    with torch.no_grad():
        excess = token_losses(model, t) - token_losses(s.ref, t)
    valid = ~torch.isnan(excess)
    n = int(valid.sum())
    top = set(
        map(tuple, torch.nonzero(valid & (excess >= excess[valid].sort(descending=True).values[n // 2 - 1])).tolist())
    )
    kept = {(r, p - 1) for r, e in enumerate(out) for p in range(1, len(e["labels"])) if e["labels"][p] != -100}
    assert kept == top and len(kept) == n // 2
    assert [e["input_ids"] for e in out] == [e["input_ids"] for e in batch]
    assert s.cost()["rho1_kept_fraction"] == pytest.approx(0.5, abs=0.05)
