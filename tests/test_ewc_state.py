"""Offline EWC keeps its state in closed form (one Fisher sum and one anchor per parameter, whatever the number
of stages) and that is the per-stage sum of Kirkpatrick et al.: same gradient, same penalty up to a constant;
its state round-trips through checkpoints, resumes to the same matrix, and checkpoints of the older per-stage
layout load (folded) to the same gradients."""

import json

import pytest
import torch

from lifelong.runner import Run
from lifelong.strategies._anchors import snapshot, trainable
from lifelong.strategies.base import StageContext
from lifelong.strategies.ewc import EWC, EWCParams
from lifelong.testing import tiny_llama, tiny_run_config, tiny_tokenizer
from lifelong.train.checkpoint import load_tree, save_tree
from lifelong.validation import validate_raw

LAM = 1e4


def stage_examples(k: int) -> list[dict]:
    """Each stage's examples use their own token range, so the stages' Fishers differ and each is zero on the
    embedding rows of tokens it never sees (F_k = 0 on some elements, F = 0 on the rows no stage sees)."""
    lo = 5 + 12 * k
    return [
        {
            "input_ids": [lo + i, lo + i + 1, lo + i + 2, lo + i + 3],
            "labels": [-100, lo + i + 1, lo + i + 2, lo + i + 3],
        }
        for i in range(6)
    ]


def three_stages(params: EWCParams) -> tuple[torch.nn.Module, EWC, list[tuple[dict, dict]]]:
    """A tiny llama through 3 'stages' (weights moved at random between them), EWC's `after_stage` after each;
    returns the model, the strategy and the per-stage (F_k, theta_k) it saw."""
    model, tok = tiny_llama(seed=3, tie_word_embeddings=False), tiny_tokenizer()  # untied: rows with F = 0
    ewc = EWC(params, seed=1)
    terms: list[tuple[dict, dict]] = []
    fisher = ewc.fisher

    def spy(ctx: StageContext) -> dict:
        f = fisher(ctx)
        terms.append(({k: v.clone() for k, v in f.items()}, snapshot(ctx.model)))
        return f

    ewc.fisher = spy  # type: ignore[method-assign]
    gen = torch.Generator().manual_seed(7)
    for k in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        ewc.after_stage(
            StageContext(stage_index=k, stage_name=f"s{k}", model=model, tokenizer=tok, examples=stage_examples(k))
        )
    return model, ewc, terms


def move(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def strategy_grads(model: torch.nn.Module, ewc: EWC) -> dict[str, torch.Tensor]:
    """The gradient `before_step` adds (starting from zero gradients)."""
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    ewc.before_step(StageContext(stage_index=3, stage_name="s3", model=model, tokenizer=None))
    out = {n: p.grad.clone() for n, p in trainable(model).items()}
    model.zero_grad(set_to_none=True)
    return out


def per_stage_penalty(model: torch.nn.Module, terms: list[tuple[dict, dict]]) -> tuple[float, dict[str, torch.Tensor]]:
    """Kirkpatrick et al.'s sum over stages, sum_k (lambda / 2) sum_i F_k,i (theta_i - theta_k,i)^2, and its
    gradient by autograd, in float64."""
    theta = {n: p.detach().double().requires_grad_(True) for n, p in trainable(model).items()}
    total = sum(
        (LAM / 2 * (f[n].double() * (theta[n] - a[n].double()) ** 2).sum() for f, a in terms for n in f),
        torch.zeros((), dtype=torch.float64),
    )
    total.backward()
    return float(total.detach()), {n: t.grad for n, t in theta.items()}


def quadratic(model: torch.nn.Module, ewc: EWC) -> float:
    """The closed form's theta-dependent part, (lambda / 2) sum_i F_i (theta_i - theta*_i)^2, in float64."""
    return sum(
        LAM / 2 * float((ewc.fisher_sum[n].double() * (p.detach().double() - ewc.anchor[n].double()) ** 2).sum())
        for n, p in trainable(model).items()
    )


@pytest.mark.parametrize("normalize", [False, True])
def test_closed_form_gradient_equals_the_per_stage_sum(normalize):
    model, ewc, terms = three_stages(EWCParams(weight=LAM, normalize=normalize, fisher_samples=6))
    assert ewc.stages == 3 and len(terms) == 3
    zero = [int((f["model.embed_tokens.weight"] == 0).all(-1).sum()) for f, _ in terms]
    assert all(z > 0 for z in zero)  # some rows have F_k = 0 in each stage ...
    both = int((ewc.fisher_sum["model.embed_tokens.weight"] == 0).all(-1).sum())
    assert 0 < both < min(zero)  # ... not all the same rows, and some rows with F = 0 in every stage
    for seed in (11, 12, 13):  # at the last anchor, and at random weights away from every anchor
        if seed > 11:
            move(model, seed)
        got = strategy_grads(model, ewc)
        _, ref = per_stage_penalty(model, terms)
        for n, g in got.items():
            scale = float(ref[n].abs().max())
            assert scale > 0 and torch.allclose(g.double(), ref[n], rtol=1e-4, atol=1e-5 * scale), (n, seed)


def test_closed_form_penalty_differs_from_the_per_stage_sum_by_a_constant():
    model, ewc, terms = three_stages(EWCParams(weight=LAM, fisher_samples=6))
    gaps, values = [], []
    for seed in range(20, 26):
        move(model, seed)
        total, _ = per_stage_penalty(model, terms)
        gaps.append(total - quadratic(model, ewc))
        values.append(total)
    assert max(values) - min(values) > 0.1 * max(values)  # the penalties themselves differ a lot
    assert max(gaps) - min(gaps) < 1e-5 * max(values), gaps  # their difference does not
    assert gaps[0] > 0 and gaps[0] == pytest.approx(LAM / 2 * ewc.offset, rel=1e-5)  # and it is the kept c
    assert ewc.penalty_value(model) == pytest.approx(values[-1], rel=1e-5)  # so penalty_value is the sum itself


def state_bytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for part in ("fisher", "anchor") for t in state[part].values())


def test_state_is_two_tensors_per_parameter_whatever_the_number_of_stages():
    model, tok = tiny_llama(seed=3), tiny_tokenizer()
    ewc = EWC(EWCParams(fisher_samples=2))
    sizes = []
    for k in range(4):
        ewc.after_stage(
            StageContext(stage_index=k, stage_name=f"s{k}", model=model, tokenizer=tok, examples=stage_examples(k))
        )
        sizes.append(state_bytes(ewc.state_dict()))
    n = sum(p.numel() for p in trainable(model).values())
    assert sizes == [2 * 4 * n] * 4  # float32 F and theta*: one model copy each, after 1 stage as after 4


def test_state_round_trips_and_old_per_stage_checkpoints_load_to_the_same_gradients(tmp_path):
    model, ewc, terms = three_stages(EWCParams(weight=LAM, fisher_samples=6))
    move(model, 31)
    want = strategy_grads(model, ewc)
    save_tree(ewc.state_dict(), tmp_path, "new")
    save_tree({"terms": [{"fisher": f, "anchor": a} for f, a in terms]}, tmp_path, "old")  # the layout before
    for name in ("new", "old"):
        back = EWC(EWCParams(weight=LAM))
        back.load_state_dict(load_tree(tmp_path, name))
        assert back.stages == 3 and back.offset == ewc.offset, name
        got = strategy_grads(model, back)
        assert all(torch.equal(got[n], want[n]) for n in want), name  # bit for bit: the same fold, same order


def ewc_config(out, name):
    raw = tiny_run_config(
        {"name": "ewc", "weight": LAM, "fisher_samples": 8},
        steps=8,
        train={"lr": 3e-3, "checkpoint_every": 4},
        name=name,
        output_dir=str(out),
    )
    raw["eval"].update(bootstrap=0, max_examples=8)
    return validate_raw(raw)


def crash_in_stage_2(cfg, old_layout: bool):
    """Run until step 6 of stage 2 (after its step-4 checkpoint, which holds 2 folded stages) and stop; with
    `old_layout`, rewrite that checkpoint's strategy state as the per-stage terms the older code kept."""
    run = Run(cfg, quiet=True)
    terms: list[dict] = []
    fisher, step = run.strategy.fisher, run.strategy.before_step

    def spy(ctx):
        f = fisher(ctx)
        terms.append({"fisher": {k: v.clone() for k, v in f.items()}, "anchor": snapshot(ctx.model)})
        return f

    def crash(ctx):
        if ctx.stage_index == 2 and ctx.step == 6:
            raise KeyboardInterrupt
        step(ctx)

    run.strategy.fisher, run.strategy.before_step = spy, crash
    with pytest.raises(KeyboardInterrupt):
        run.execute()
    ck = run.run_dir / "ckpt" / "stage2-step4"
    assert json.loads((ck / "meta.json").read_text())["step"] == 4 and len(terms) == 2
    if old_layout:
        (ck / "strategy.safetensors").unlink()
        save_tree({"terms": terms}, ck, "strategy")


def test_resume_gives_the_same_matrix_and_state_from_new_and_old_checkpoints(tmp_path):
    ref_run = Run(ewc_config(tmp_path / "ref", "ewc"), quiet=True)
    ref = ref_run.execute()
    want = ref_run.strategy.state_dict()
    assert want["stages"] == 3 and want["offset"] > 0
    for old_layout in (False, True):
        cfg = ewc_config(tmp_path / f"old{old_layout}", "ewc")
        crash_in_stage_2(cfg, old_layout)
        again = Run(cfg, resume=True, quiet=True)
        assert again.execute().matrix == ref.matrix, old_layout
        got = again.strategy.state_dict()
        assert got["stages"] == 3 and got["offset"] == pytest.approx(want["offset"], rel=1e-6), old_layout
        for part in ("fisher", "anchor"):
            assert all(torch.equal(got[part][n], want[part][n]) for n in want[part]), (old_layout, part)
