"""The task-vector family with mergekit 0.1.5's semantics (task_arithmetic, ties, dare_ties, dare_linear,
breadcrumbs, breadcrumbs_ties, della, della_linear, sce): behaviour tests of each mechanism, mergekit's outputs
on small tensors hard-coded, and a parity test against mergekit itself on tiny checkpoints (skipped when
/tmp/mkvenv/bin/mergekit-yaml is absent)."""

import math
import subprocess
from pathlib import Path

import pytest
import torch

from lifelong.merging import MERGE_METHODS
from lifelong.merging import sparsify as sp
from lifelong.merging.base import TensorContext

torch.set_num_threads(1)

GTA = [
    "task_arithmetic",
    "ties",
    "dare_ties",
    "dare_linear",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
]
RANDOM = {"dare_ties", "dare_linear", "della", "della_linear"}


def method(name, **params):
    cls = MERGE_METHODS.get(name)
    return cls(cls.Params(**params))


def ctx_for(*per_model, name="w", seed=0):
    """A TensorContext with each model's resolved per-model parameters (as the engine fills it)."""
    return TensorContext(name=name, seed=seed, model_params=[dict(p) for p in per_model])


# tied magnitudes everywhere: |x| in {0, 0.25, 0.5}, 40 entries (torch's unstable sort orders ties neither by
# index nor by reverse index at this size)
X = (((torch.arange(40) * 7) % 5) - 2).float() / 4


# ---- defaults and declarations --------------------------------------------------------------------------
def test_mergekit_defaults_and_declared_parameters():
    expect = {  # method: (normalize, rescale, per-model parameters with defaults)
        "task_arithmetic": (False, False, {"weight": 1.0, "density": 1.0}),
        "ties": (True, False, {"weight": 1.0, "density": 1.0}),
        "dare_ties": (False, True, {"weight": 1.0, "density": 1.0}),
        "dare_linear": (False, True, {"weight": 1.0, "density": 1.0}),
        "breadcrumbs": (False, False, {"weight": 1.0, "density": 1.0, "gamma": 0.01}),
        "breadcrumbs_ties": (False, False, {"weight": 1.0, "density": 1.0, "gamma": 0.01}),
        "della": (True, True, {"weight": 1.0, "density": 1.0, "epsilon": 0.15}),
        "della_linear": (False, True, {"weight": 1.0, "density": 1.0, "epsilon": 0.15}),
    }
    for name, (normalize, rescale, per_model) in expect.items():
        cls = MERGE_METHODS.get(name)
        p = cls.Params()
        assert (p.normalize, p.rescale, p.lambda_, p.int8_mask) == (normalize, rescale, 1.0, False), name
        assert cls.model_params == per_model, name
        assert cls.uses_base and cls.base_in_models == "base", name
        assert cls.Params(**{"lambda": 0.5}).lambda_ == 0.5
    sce = MERGE_METHODS.get("sce")
    assert sce.Params().select_topk == 1.0 and sce.uses_base and sce.base_in_models == "base"


def test_no_models_besides_the_base_gives_the_base():
    base = torch.randn(3, 4)
    for name in GTA + ["sce"]:
        assert torch.equal(method(name).merge([], [], base, ctx_for()), base), name


# ---- magnitude (TIES trim) --------------------------------------------------------------------------------
def test_magnitude_keeps_exactly_k_of_the_largest():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g)
    for density in (0.013, 0.1, 0.29, 0.5, 0.999):
        kept = sp.magnitude(x, density) != 0
        k = max(1, int(density * 1000))
        assert int(kept.sum()) == k
        assert float(x[kept].abs().min()) > float(x[~kept].abs().max())
    assert int((sp.magnitude(x, 1e-9) != 0).sum()) == 1  # at least one entry
    assert torch.equal(sp.magnitude(x, 1.0), x) and torch.equal(sp.magnitude(x, 0.0), torch.zeros(1000))
    # 0.29 * 100 = 28.999999999999996 in floating point: int() gives 28 (mergekit), round() would give 29
    assert int((sp.magnitude(torch.randn(100, generator=g), 0.29) != 0).sum()) == 28


def test_magnitude_ties_broken_as_mergekit():
    kept = (sp.magnitude(X, 0.3) != 0).nonzero().flatten().tolist()
    # mergekit 0.1.5 (torch 2.13): magnitude(X, 0.3) keeps these 12 of the 16 entries of |x| = 0.5
    assert kept == [7, 10, 12, 15, 17, 20, 22, 25, 27, 30, 32, 35]
    lowest_index_first = [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27]
    assert kept != lowest_index_first  # a stable sort would not match mergekit here


def test_l1_rescale_and_imposed_mask():
    x = torch.tensor([1.0, -2.0, 3.0, -4.0])
    m = torch.tensor([True, False, True, False])
    # masked [1, 0, 3, 0] times ||x||_1 / ||masked||_1 = 10 / 4
    assert torch.equal(sp.bernoulli(x, 0.5, rescale=True, mask=m), torch.tensor([2.5, 0.0, 7.5, 0.0]))
    assert torch.equal(sp.bernoulli(x, 0.5, rescale=False, mask=m), torch.tensor([1.0, 0.0, 3.0, 0.0]))
    assert torch.equal(sp.magnitude(x, 0.5, rescale=True, mask=m), torch.tensor([2.5, 0.0, 7.5, 0.0]))
    assert torch.equal(sp.della_magprune(x, 0.5, 0.1, rescale=True, mask=m), torch.tensor([2.5, 0.0, 7.5, 0.0]))
    # norms below 1e-7 are not rescaled
    tiny = torch.tensor([1e-9, 1e-9])
    assert torch.equal(sp.apply_mask(tiny, torch.tensor([True, False]), True), torch.tensor([1e-9, 0.0]))


# ---- random drop (DARE) ---------------------------------------------------------------------------------
def test_dare_drop_keeps_density_and_the_l1_norm():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 100, generator=g)
    n = x.numel()
    for density in (0.1, 0.5, 0.9):
        out = sp.bernoulli(x, density, rescale=True, seed=0, name="t", index=0)
        kept = float((out != 0).float().mean())
        assert abs(kept - density) < 5 * math.sqrt(density * (1 - density) / n)
        assert math.isclose(float(out.abs().sum()), float(x.abs().sum()), rel_tol=1e-5)
        # survivors are scaled by one common factor, ||x||_1 / ||kept||_1 (near 1/density, not exactly it)
        keep = out != 0
        ratio = out[keep] / x[keep]
        want = float(x.abs().sum() / x[keep].abs().sum())
        assert torch.allclose(ratio, torch.full_like(ratio, want), rtol=1e-5) and abs(want * density - 1) < 0.06
    no_rescale = sp.bernoulli(x, 0.5, rescale=False, seed=0, name="t", index=0)
    assert torch.equal(no_rescale[no_rescale != 0], x[no_rescale != 0])


def test_random_masks_are_seeded_by_seed_name_and_index_not_by_global_state():
    base = torch.zeros(50, 40)
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(50, 40, generator=g), torch.randn(50, 40, generator=g)
    for name in RANDOM:
        m = method(name)
        c = ctx_for({"density": 0.5}, {"density": 0.5}, name="layer.w")
        torch.manual_seed(1)
        first = m.merge([a, b], [1.0, 1.0], base, c)
        m.merge([b, a], [1.0, 1.0], base, ctx_for({"density": 0.5}, {"density": 0.5}, name="other"))
        torch.manual_seed(2)
        again = m.merge([a, b], [1.0, 1.0], base, c)
        assert torch.equal(first, again), name  # same (seed, name, index): same masks, whatever came before
        other_seed = m.merge(
            [a, b], [1.0, 1.0], base, ctx_for({"density": 0.5}, {"density": 0.5}, name="layer.w", seed=1)
        )
        assert not torch.equal(first, other_seed), name
    k0 = sp.random_keep_mask(torch.Size([1000]), 0.5, 0, "w", 0)
    assert not torch.equal(k0, sp.random_keep_mask(torch.Size([1000]), 0.5, 0, "w", 1))  # per model index


# ---- breadcrumbs --------------------------------------------------------------------------------------------
def test_breadcrumbs_drops_the_top_gamma_and_the_small_tail():
    x = torch.randperm(100, generator=torch.Generator().manual_seed(3)).float() - 49.5  # distinct magnitudes
    rank = x.abs().argsort().argsort()  # 0 = smallest
    kept = sp.magnitude_outliers(x, density=0.2, gamma=0.05) != 0
    assert torch.equal(kept, (rank >= 75) & (rank < 95))  # 20 kept, the top 5 and the bottom 75 dropped
    # density + gamma > 1: the outlier cut shrinks so that int(density n) entries stay
    kept = sp.magnitude_outliers(x, density=0.9, gamma=0.2) != 0
    assert torch.equal(kept, rank < 90)
    assert torch.equal(sp.magnitude_outliers(x, 1.0, 0.5), x)  # density 1: nothing removed (mergekit)
    # ties broken as mergekit's ascending sort: mergekit 0.1.5 keeps these indices of X (density 0.3, gamma 0.1)
    assert (sp.magnitude_outliers(X, 0.3, 0.1) != 0).nonzero().flatten().tolist() == [
        0, 2, 5, 7, 10, 17, 25, 27, 30, 32, 35, 37
    ]  # fmt: skip


# ---- DELLA --------------------------------------------------------------------------------------------------
def test_della_keep_probability_rises_with_magnitude_rank_and_averages_density():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(64, 200, generator=g)
    p = sp.della_probs(x, density=0.4, epsilon=0.15)
    rank = x.abs().argsort(dim=1).argsort(dim=1).float()  # per row, 0 = smallest
    assert torch.allclose(p, 0.25 + 0.3 * rank / 199, atol=1e-6)  # density - eps .. density + eps
    assert torch.allclose(p.mean(1), torch.full((64,), 0.4), atol=1e-6)
    # empirically: the top decile of each row survives more often than the bottom one; overall ~density
    kept = torch.stack([sp.della_magprune(x, 0.4, 0.15, seed=s, name="w") != 0 for s in range(20)]).float()
    low, high = kept[:, rank < 20].mean(), kept[:, rank >= 180].mean()
    assert float(low) < 0.3 < 0.5 < float(high)
    assert abs(float(kept.mean()) - 0.4) < 0.01
    out = sp.della_magprune(x, 0.4, 0.15, rescale=True, seed=0, name="w")
    assert math.isclose(float(out.abs().sum()), float(x.abs().sum()), rel_tol=1e-5)
    v = torch.randn(300, generator=g)  # a vector is one row
    assert torch.allclose(sp.della_probs(v, 0.5, 0.1).sort().values, torch.linspace(0.4, 0.6, 300), atol=1e-6)


def test_della_refuses_probabilities_outside_0_1_naming_tensor_and_model():
    base, a = torch.zeros(10, 10), torch.randn(10, 10)
    with pytest.raises(ValueError, match=r"tensor 'layer.w', input model 1 .*density=0.9, epsilon=0.15"):
        method("della").merge([a, a], [1.0, 1.0], base, ctx_for({"density": 0.5}, {"density": 0.9}, name="layer.w"))
    assert MERGE_METHODS.get("della").check_model_params({"density": 0.1, "epsilon": 0.15}) is not None
    assert MERGE_METHODS.get("della").check_model_params({"density": 0.5, "epsilon": 0.15}) is None
    assert "density=1.5" in MERGE_METHODS.get("ties").check_model_params({"density": 1.5, "weight": 1.0})
    assert "gamma=-0.1" in MERGE_METHODS.get("breadcrumbs").check_model_params({"gamma": -0.1})


# ---- sign consensus and the divisor -------------------------------------------------------------------------
def test_consensus_drops_disagreeing_signs_and_normalize_divides_by_agreeing_weights():
    base = torch.zeros(4)
    a = torch.tensor([1.0, 2.0, -1.0, 0.0])
    b = torch.tensor([3.0, -1.0, 1.0, 2.0])
    c = torch.tensor([-1.0, -2.0, 0.0, -2.0])
    w = [1.0, 2.0, 1.0]
    # weighted: a [1, 2, -1, 0]; b [6, -2, 2, 4]; c [-1, -2, 0, -2]; sums [6, -2, 1, 2] -> signs + - + +
    # e0: a, b agree: (1 + 6) / (1 + 2); e1: b, c: (-2 - 2) / (2 + 1); e2: b: 2 / 2; e3: b: 4 / 2
    out = method("ties").merge([a, b, c], w, base, ctx_for())
    assert torch.allclose(out, torch.tensor([7 / 3, -4 / 3, 1.0, 2.0]))
    # normalize false: the sums of the agreeing weighted entries
    raw = method("ties", normalize=False).merge([a, b, c], w, base, ctx_for())
    assert torch.equal(raw, torch.tensor([7.0, -4.0, 2.0, 4.0]))
    # sign: frequency elects by the count of signs: e0 (+,+,-) +; e1 (+,-,-) -; e2 (-,+,0) tie -> +
    freq = method("ties", sign="frequency").merge([a, b, c], w, base, ctx_for())
    assert torch.allclose(freq, torch.tensor([7 / 3, -4 / 3, 1.0, 2.0]))
    # a zero sum elects + (mergekit): the positive entries are merged
    tie = method("ties").merge([torch.tensor([1.0]), torch.tensor([-1.0])], [1.0, 1.0], torch.zeros(1), ctx_for())
    assert torch.equal(tie, torch.tensor([1.0]))
    # average: count divides by the number of agreeing entries (lifelong's earlier ties)
    count = method("ties", average="count").merge([a, b, c], w, base, ctx_for())
    assert torch.allclose(count, torch.tensor([7 / 2, -4 / 2, 2.0, 4.0]))
    # without consensus (task arithmetic, normalize): divided by the sum of all weights; lambda scales
    ta = method("task_arithmetic", normalize=True, **{"lambda": 0.5})
    assert torch.allclose(ta.merge([a + 1, b + 1, c + 1], w, base + 1, ctx_for()), 1 + 0.5 * (a + 2 * b + c) / 4)
    # a zero weight sum counts as 1 (mergekit's guard)
    zero = method("task_arithmetic", normalize=True).merge([a, b], [1.0, -1.0], base, ctx_for())
    assert torch.equal(zero, a - b)


def test_per_model_density_and_weight_come_from_ctx_model_params():
    base = torch.zeros(16)
    a = torch.cat([torch.arange(1.0, 9.0), torch.zeros(8)])  # model 0 lives on entries 0..7
    b = torch.cat([torch.zeros(8), -torch.arange(1.0, 9.0)])  # model 1 on entries 8..15
    ctx = ctx_for({"weight": 2.0, "density": 0.25}, {"weight": 0.5, "density": 0.5})
    out = method("ties", normalize=False).merge([a, b], [2.0, 0.5], base, ctx)
    # model 0 keeps its 4 largest (16 * 0.25), model 1 its 8 non-zeros (16 * 0.5); each weighted by its own weight
    want = torch.cat([torch.zeros(4), 2 * torch.arange(5.0, 9.0), -0.5 * torch.arange(1.0, 9.0)])
    assert torch.equal(out, want)
    swapped = ctx_for({"weight": 2.0, "density": 0.5}, {"weight": 0.5, "density": 0.25})
    out2 = method("ties", normalize=False).merge([a, b], [2.0, 0.5], base, swapped)
    assert int((out2[:8] != 0).sum()) == 8 and int((out2[8:] != 0).sum()) == 4
    # breadcrumbs: per-model gamma
    x = torch.arange(1.0, 101.0)
    c = ctx_for({"density": 0.5, "gamma": 0.0}, {"density": 0.5, "gamma": 0.1})
    o = method("breadcrumbs").merge([x, x], [1.0, 0.0], torch.zeros(100), c)
    assert torch.equal(o != 0, x > 50)  # model 0 (weight 1, gamma 0): its top half
    o = method("breadcrumbs").merge([x, x], [0.0, 1.0], torch.zeros(100), c)
    assert torch.equal(o != 0, (x > 40) & (x <= 90))  # model 1: top 10 dropped, 50 kept below them


def test_ties_breadcrumbs_ties_and_sce_equal_mergekit_hard_coded():
    base = torch.zeros(40)
    a, b, c = X, torch.roll(X, 3) * 2, -torch.roll(X, 7) + 0.125
    ctx = ctx_for(
        {"weight": 1.0, "density": 0.3, "gamma": 0.1},
        {"weight": 0.5, "density": 0.5, "gamma": 0.05},
        {"weight": 2.0, "density": 0.6, "gamma": 0.2},
    )
    w = [1.0, 0.5, 2.0]
    # outputs of mergekit 0.1.5's merge_group on these tensors (every trim here cuts through tied magnitudes)
    ta, tb, tc = 0.625, 0.5833333134651184, 0.5714285969734192
    ties = [0.5, 0.0, ta, -1.0, -0.375] + [0.5, 0.0, tb, -1.0, -0.375] * 4 + [0.5, 0.0, tc, -1.0, -0.375]
    ties += [0.5, -0.5, tc, -1.0, -0.375] + [0.5, -0.5, ta, -1.0, -0.375]
    assert torch.equal(method("ties").merge([a, b, c], w, base, ctx), torch.tensor(ties))
    bt = [0.25, -0.0625, 0.25, -0.5, -0.1875] + [0.25, -0.1, 0.25, -0.5, -0.1875] * 2
    bt += [0.25, 0.0, 0.25, 0.0, -0.1875] + [0.1875, 0.0, 0.0, -0.5, -0.1875] + [0.25, 0.0, 0.25, -0.5, -0.1875] * 2
    bt += [0.25, -0.0625, 0.25, -0.5, -0.1875]
    got = method("breadcrumbs_ties", normalize=True, **{"lambda": 0.5}).merge([a, b, c], w, base, ctx)
    assert torch.equal(got, torch.tensor(bt))
    s1, s2, s3 = 0.9364035129547119, -0.8899999856948853, -0.3749999701976776
    sce = [s1, 0.0, 0.0, s2, 0.0] * 4 + [s1, 0.0, 0.0, s2, s3] * 4
    assert torch.equal(method("sce", select_topk=0.5).merge([a, b, c], w, base, ctx), torch.tensor(sce))


# ---- SCE ------------------------------------------------------------------------------------------------------
def test_sce_selects_high_variance_weights_by_squared_mass_and_erases_minority_signs():
    base = torch.zeros(6)
    a = torch.tensor([1.0, 1.0, 1.0, 0.1, 2.0, -1.0])
    b = torch.tensor([3.0, 3.0, 1.0, 0.1, 2.0, -5.0])
    # select_topk 0.5: variances [1, 1, 0, 0, 0, 4] -> 3 non-zero, k = int(1.5) = 1: only entry 5 survives
    sel = method("sce", select_topk=0.5).merge([a, b], [1.0, 1.0], base, ctx_for())
    assert torch.equal(sel != 0, torch.tensor([False] * 5 + [True]))
    # weights: mean squares 8.01/6 and 48.01/6 -> c = 8.01/56.02, 48.01/56.02; same signs everywhere:
    # every entry is (c_a a + c_b b) / (c_a + c_b)
    ca, cb = 8.01 / 56.02, 48.01 / 56.02
    out = method("sce").merge([a, b], [1.0, 1.0], base, ctx_for())
    assert torch.allclose(out, (ca * a + cb * b) / (ca + cb), atol=1e-6)
    assert float(out[0]) > 2.5  # pulled toward the model with more squared mass (not the plain mean 2)
    # erase: the elected sign is the sum's; the minority's entries are dropped
    c = torch.tensor([-9.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    out = method("sce").merge([a, c], [1.0, 1.0], base, ctx_for())
    assert math.isclose(float(out[0]), -9.0, rel_tol=1e-6)  # sum -8: only c agrees
    # the per-model weight is not used (mergekit's sce has none)
    assert torch.equal(
        method("sce").merge([a, b], [5.0, 0.1], base, ctx_for()), method("sce").merge([a, b], [1, 1], base, ctx_for())
    )


# ---- chunking, lifelong's earlier conventions, dare -------------------------------------------------------
def test_chunked_combine_equals_one_chunk(monkeypatch):
    g = torch.Generator().manual_seed(5)
    base = torch.randn(70, 30, generator=g)
    ts = [base + torch.randn(70, 30, generator=g) for _ in range(3)]
    ctx = ctx_for(*[{"density": d, "gamma": 0.05, "epsilon": 0.1} for d in (0.3, 0.5, 0.7)])
    whole = {n: method(n).merge(ts, [1.0, 0.5, 2.0], base, ctx) for n in GTA + ["sce"]}
    monkeypatch.setattr(sp, "CHUNK", 128)
    import lifelong.merging.sce as sce_mod

    monkeypatch.setattr(sce_mod, "CHUNK", 128)
    for n in GTA + ["sce"]:
        assert torch.equal(method(n).merge(ts, [1.0, 0.5, 2.0], base, ctx), whole[n]), n


def test_lifelong_ties_conventions_under_explicit_options():
    base = torch.zeros(6)
    a = torch.tensor([3.0, -1.0, 0.5, 2.0, -4.0, 0.1])
    b = torch.tensor([-2.0, -3.0, 0.2, 1.0, 5.0, 0.0])
    c = torch.tensor([1.0, 2.0, -0.4, -6.0, -1.0, 0.3])
    ctx = ctx_for(*[{"density": 0.5}] * 3)
    # threshold rule: c's |1| is tied at the 3rd place: both kept (4 survivors); topk keeps exactly 3
    legacy = method("ties", trim_rule="threshold", average="count")
    assert torch.allclose(legacy.merge([a, b, c], [1, 1, 1], base, ctx), torch.tensor([2.0, -3.0, 0.0, -6.0, 5.0, 0.0]))
    kept_threshold = legacy.sparsify(2, c, 1.0, ctx, None) != 0
    kept_topk = method("ties").sparsify(2, c, 1.0, ctx, None) != 0
    assert int(kept_threshold.sum()) == 4 and int(kept_topk.sum()) == 3
    # with weights != 1, average: count gives sum(w tau) / count (weights not normalised)
    w = [2.0, 1.0, 1.0]
    got = method("ties", average="count").merge([a, b, c], w, base, ctx_for(*[{"density": 1.0}] * 3))
    # e0: 6 - 2 + 1 = 5 > 0 -> (6 + 1) / 2
    assert math.isclose(float(got[0]), 3.5)
    # trim: global uses the engine's per-model thresholds on |w tau|
    glob = method("ties", trim="global", normalize=False)
    assert glob.global_fractions([{"density": 0.3}, {"density": 0.6}]) == [0.3, 0.6]
    assert method("ties").global_fractions([{"density": 0.3}]) is None
    tctx = TensorContext(name="w", threshold=[2.5, 2.5, 2.5], model_params=[{"density": 0.3}] * 3)
    assert torch.equal(glob.merge([a, b, c], [1, 1, 1], base, tctx), torch.tensor([3.0, -3.0, 0.0, -6.0, 5.0, 0.0]))


def test_lifelong_dare_keeps_its_exact_rescale():
    base = torch.zeros(4000)
    a = torch.randn(4000, generator=torch.Generator().manual_seed(6))
    out = method("dare", p=0.75).merge([a], [1.0], base, TensorContext(name="w", seed=0))
    kept = out != 0
    assert torch.allclose(out[kept], a[kept] * 4)  # exactly 1/(1-p), not the L1 norm
    assert not math.isclose(float(out.abs().sum()), float(a.abs().sum()), rel_tol=1e-6)
    dl = method("dare_linear").merge([a], [1.0], base, ctx_for({"density": 0.25}))
    assert math.isclose(float(dl.abs().sum()), float(a.abs().sum()), rel_tol=1e-5)


# ---- parity with mergekit (skipped without /tmp/mkvenv) ----------------------------------------------------
MERGEKIT = Path("/tmp/mkvenv/bin/mergekit-yaml")
PER_MODEL = [  # three models besides the base
    {"weight": 1.0, "density": 0.3, "gamma": 0.02, "epsilon": 0.1},
    {"weight": 0.6, "density": 0.5, "gamma": 0.05, "epsilon": 0.15},
    {"weight": 1.5, "density": 0.7, "gamma": 0.01, "epsilon": 0.2},
]
PARITY = [  # name, global parameters, number of models (1: for the per-tensor statistics of random methods)
    ("task_arithmetic", {"lambda": 0.7}, 3),
    ("task_arithmetic", {"normalize": True}, 3),
    ("ties", {}, 3),
    ("ties", {"rescale": True, "lambda": 0.9}, 3),
    ("breadcrumbs", {}, 3),
    ("breadcrumbs_ties", {"normalize": True}, 3),
    ("sce", {"select_topk": 0.4}, 3),
    ("sce", {}, 3),
    ("dare_ties", {}, 3),
    ("dare_linear", {}, 3),
    ("della", {}, 3),
    ("della_linear", {}, 3),
    ("dare_linear", {}, 1),
    ("della_linear", {}, 1),
]
SCE_KEYS = {"select_topk"}
MK_DRIVER = """
import sys, torch
torch.set_num_threads(1)
from mergekit.scripts.run_yaml import main
for cfg, out in zip(sys.argv[1::2], sys.argv[2::2]):
    main([cfg, out, "--lazy-unpickle", "--no-cuda", "--quiet", "--random-seed", "0"], standalone_mode=False)
"""
# mergekit's method on in-memory tensors, with torch.bernoulli recorded: the masks to impose on ours
MK_MASKS = """
import sys, torch
torch.set_num_threads(1)
from mergekit.merge_methods import registry
from mergekit.merge_methods.base import TensorGroup
jobs, out = torch.load(sys.argv[1]), {}
real = torch.bernoulli
for key, job in jobs.items():
    masks = []
    def recording(p, *a, **k):
        m = real(p, *a, **k)
        masks.append(m.bool())
        return m
    torch.bernoulli = recording
    ids = list(range(1, len(job["tensors"]) + 1))
    group = TensorGroup.from_tensors([job["base"], *job["tensors"]], base_index=0, name="w")
    per = {k: dict(zip(ids, v)) for k, v in job["per_model"].items()}
    res = registry.get(job["method"]).merge_group(group, **job["globals"], **per)
    out[key] = (res, masks)
torch.bernoulli = real
torch.save(out, sys.argv[2])
"""


def _save_tiny(path: Path, seed: int, quantum: float) -> None:
    from lifelong.testing import tiny_llama, tiny_tokenizer

    model = tiny_llama(seed=0)
    if seed:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                d = 0.05 * torch.randn(p.shape, generator=g)
                p.add_(torch.round(d / quantum) * quantum if quantum else d)  # quantised: tied magnitudes
    model.float().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)


def _per_model(name: str, i: int) -> dict:
    keys = set(MERGE_METHODS.get(name).model_params) if name != "sce" else set()
    return {k: v for k, v in PER_MODEL[i].items() if k in keys}


@pytest.fixture(scope="module")
def mergekit_parity(tmp_path_factory):
    import yaml
    from safetensors.torch import load_file

    if not MERGEKIT.exists():
        pytest.skip("mergekit 0.1.5 is not installed at /tmp/mkvenv")
    root = tmp_path_factory.mktemp("gta")
    _save_tiny(root / "base", 0, 0.0)
    for i, q in enumerate([1 / 256, 0.0, 1 / 128]):
        _save_tiny(root / f"m{i}", i + 1, q)
    args = []
    for k, (name, params, n) in enumerate(PARITY):
        models = [{"model": str(root / "base")}]  # listed among the models, as mergekit configs do
        models += [{"model": str(root / f"m{i}"), "parameters": _per_model(name, i)} for i in range(n)]
        cfg = {"merge_method": name, "base_model": str(root / "base"), "models": models, "dtype": "float32"}
        cfg["parameters"] = params
        (root / f"c{k}.yaml").write_text(yaml.safe_dump(cfg))
        args += [str(root / f"c{k}.yaml"), str(root / f"o{k}")]
    python = str(MERGEKIT.parent / "python")
    subprocess.run([python, "-c", MK_DRIVER, *args], check=True, capture_output=True, timeout=600)
    sds = {m: load_file(root / m / "model.safetensors") for m in ["base", "m0", "m1", "m2"]}
    outs = {k: load_file(root / f"o{k}" / "model.safetensors") for k in range(len(PARITY))}
    # ours through the engine, on the same YAML files
    from lifelong.merging.engine import load_merge_config, merge_models

    engine = {}
    for k in range(len(PARITY)):
        merge_models(load_merge_config(root / f"c{k}.yaml"), root / f"e{k}", quiet=True)
        engine[k] = load_file(root / f"e{k}" / "model.safetensors")
    # mask-imposed jobs: every random method on every float tensor of the checkpoints
    jobs = {}
    for k, (name, params, n) in enumerate(PARITY):
        if name in RANDOM and n == 3:
            cls = MERGE_METHODS.get(name)
            full = {"int8_mask": False, "normalize": cls.Params().normalize, "rescale": True, "lambda": 1.0}
            for t in sds["base"]:
                per = {key: [PER_MODEL[i][key] for i in range(3)] for key in cls.model_params}
                jobs[(k, t)] = {
                    "method": name,
                    "base": sds["base"][t],
                    "tensors": [sds[f"m{i}"][t] for i in range(3)],
                    "globals": {**full, **params},
                    "per_model": per,
                }
    torch.save(jobs, root / "jobs.pt")
    subprocess.run([python, "-c", MK_MASKS, str(root / "jobs.pt"), str(root / "masked.pt")], check=True, timeout=600)
    return sds, outs, engine, torch.load(root / "masked.pt")


def _ours(name, params, n, sds, t, masks=None):
    m = method(name, **params)
    ctx = ctx_for(*[_per_model(name, i) for i in range(n)], name=t)
    ws = [PER_MODEL[i]["weight"] if name != "sce" else 1.0 for i in range(n)]
    ts = [sds[f"m{i}"][t] for i in range(n)]
    if masks is not None:
        return m.merge(ts, ws, sds["base"][t], ctx, masks=masks)
    return m.merge(ts, ws, sds["base"][t], ctx)


@pytest.mark.parametrize("k", range(len(PARITY)), ids=[f"{p[0]}-{i}" for i, p in enumerate(PARITY)])
def test_parity_with_mergekit_on_tiny_checkpoints(mergekit_parity, k):
    sds, outs, engine, masked = mergekit_parity
    name, params, n = PARITY[k]
    ref = outs[k]
    worst = 0.0
    for t, base in sds["base"].items():
        ours = _ours(name, params, n, sds, t)
        if name not in RANDOM:
            worst = max(worst, float((ours - ref[t]).abs().max()), float((engine[k][t] - ref[t]).abs().max()))
            continue
        if n == 1:  # one model: out - base is the sparsified, rescaled delta of each tool
            delta = sds["m0"][t] - base
            density = PER_MODEL[0]["density"]
            numel = delta.numel()
            for out in (ours, engine[k][t], ref[t]):
                kept = float(((out - base) != 0).float().mean())
                assert abs(kept - density) < 5 * math.sqrt(density * (1 - density) / numel) + 1 / numel, (t, kept)
                assert math.isclose(float((out - base).abs().sum()), float(delta.abs().sum()), rel_tol=1e-4), t
        else:  # mergekit's own masks imposed on ours: the same output
            res, mk_masks = masked[(k, t)]
            got = _ours(name, params, n, sds, t, masks=[m.reshape(base.shape) for m in mk_masks])
            worst = max(worst, float((got - res).abs().max()))
            assert ours.shape == ref[t].shape and bool(torch.isfinite(ours).all())
    assert worst == 0.0, f"{name}: max abs difference {worst:.3g}"
