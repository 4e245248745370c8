"""The geometric merge methods (linear, slerp, nuslerp, multislerp, karcher, model_stock, nearswap): behaviour
tests of each mechanism without mergekit, SLERP's scratch memory counted op by op, and a parity test against
mergekit 0.1.5 on tiny checkpoints (skipped when /tmp/mkvenv/bin/mergekit-yaml is absent)."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import TensorContext
from lifelong.merging.slerp import CHUNK, slerp

CTX = TensorContext(name="w")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def method(name, **params):
    cls = MERGE_METHODS.get(name)
    return cls(cls.Params(**params))


def angle(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double().flatten(), y.double().flatten()
    return math.acos(max(-1.0, min(1.0, float(x @ y / (x.norm() * y.norm())))))


def rotated(u: torch.Tensor, v: torch.Tensor, theta: float) -> torch.Tensor:
    """The unit vector at angle theta from unit u in the plane of u and v."""
    w = v - (v @ u) * u
    w = w / w.norm()
    return math.cos(theta) * u + math.sin(theta) * w


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- linear -------------------------------------------------------------------------------------------
def test_linear_weighted_average_and_unnormalised_sum():
    a, b, c = (torch.randn(5, 4, generator=gen(i)) for i in range(3))
    out = method("linear").merge([a, b, c], [0.2, 0.3, 1.5], None, CTX)
    assert torch.allclose(out, (0.2 * a + 0.3 * b + 1.5 * c) / 2.0, atol=1e-6)
    raw = method("linear", normalize=False).merge([a, b, c], [0.2, 0.3, 1.5], None, CTX)
    assert torch.allclose(raw, 0.2 * a + 0.3 * b + 1.5 * c, atol=1e-6)
    assert MERGE_METHODS.get("linear").base_in_models == "input"  # mergekit averages a listed base like any model
    assert (
        "zero" in method("linear").check_weights([1.0, -1.0])
        and method("linear", normalize=False).check_weights([1.0, -1.0]) is None
    )


# ---- slerp --------------------------------------------------------------------------------------------
def test_slerp_keeps_equal_norms_and_splits_the_angle():
    g = gen(0)
    u = torch.randn(300, generator=g)
    u = u / u.norm()
    v = rotated(u, torch.randn(300, generator=g), 1.1)
    for t in (0.0, 0.25, 0.6, 1.0):
        out = slerp(3 * u, 3 * v, t)
        assert abs(float(out.norm()) - 3.0) < 1e-5  # stays on the sphere of radius 3
        assert abs(angle(out, u) - t * 1.1) < 1e-4 and abs(angle(out, v) - (1 - t) * 1.1) < 1e-4
    # unequal norms: the coefficients are still sin((1-t)W)/sin W and sin(tW)/sin W of the raw tensors
    out = slerp(u, 2 * v, 0.3)
    expected = math.sin(0.7 * 1.1) / math.sin(1.1) * u + math.sin(0.3 * 1.1) / math.sin(1.1) * 2 * v
    assert torch.allclose(out, expected, atol=1e-6)


def test_slerp_goes_from_the_base_to_the_other_model_and_without_base_from_model_0():
    base, other = torch.randn(6, 7, generator=gen(1)), torch.randn(6, 7, generator=gen(2))
    at = lambda t, tensors, b: method("slerp", t=t).merge(tensors, [1.0] * len(tensors), b, CTX)  # noqa: E731
    assert torch.allclose(at(0.0, [other], base), base, atol=1e-6)  # t = 0: the base (mergekit)
    assert torch.allclose(at(1.0, [other], base), other, atol=1e-6)
    assert torch.allclose(at(0.3, [other], base), slerp(base, other, 0.3))
    assert torch.allclose(at(0.0, [other, base], None), other, atol=1e-6)  # no base: from models[0]
    assert torch.allclose(at(0.3, [other, base], None), slerp(other, base, 0.3))
    with pytest.raises(ValueError, match="exactly one other model"):
        at(0.3, [other, other], base)
    with pytest.raises(ValueError, match="exactly 2 models"):
        at(0.3, [other], None)
    with pytest.raises(Exception, match="t"):
        MERGE_METHODS.get("slerp").Params()  # t is required, as in mergekit


def test_slerp_parallel_threshold_and_zero_norm():
    u = torch.tensor([1.0, 0.0, 0.0])
    lin = lambda a, b, t: (1 - t) * a + t * b  # noqa: E731
    # cos = 0.9996 > 0.9995: linear; cos = 0.9990: on the sphere (differs from linear)
    near = torch.tensor([0.9996, math.sqrt(1 - 0.9996**2), 0.0])
    far = torch.tensor([0.9990, math.sqrt(1 - 0.9990**2), 0.0])
    assert torch.equal(slerp(u, 2 * near, 0.4), lin(u, 2 * near, 0.4))
    assert torch.allclose(slerp(u, 2 * u, 0.4), 1.4 * u)
    assert torch.allclose(slerp(u, -u, 0.25), 0.5 * u)  # antiparallel: linear too
    assert not torch.allclose(slerp(u, far, 0.4), lin(u, far, 0.4), atol=1e-6, rtol=0)
    assert abs(float(slerp(u, far, 0.4).norm()) - 1) < 1e-6
    # a zero tensor's norm counts as 1 (mergekit): the dot is 0, so the angle is pi/2
    z = torch.zeros(3)
    assert torch.allclose(slerp(z, u, 0.3), math.sin(0.3 * math.pi / 2) * u)


def test_slerp_over_several_chunks_matches_the_float64_formula():
    g = gen(3)
    n = 2 * CHUNK + 1234  # three chunks, the last partial
    a = torch.randn(n, generator=g)
    b = a + 0.7 * torch.randn(n, generator=g)
    out = slerp(a.reshape(2, -1), b.reshape(2, -1), 0.35)
    assert out.dtype == torch.float32 and out.shape == (2, n // 2)
    A, B = a.double(), b.double()
    w = math.acos(float((A / A.norm()) @ (B / B.norm())))
    ref = math.sin(0.65 * w) / math.sin(w) * A + math.sin(0.35 * w) / math.sin(w) * B
    # float32 norms and dot products (mergekit's arithmetic) put the coefficients within ~1e-5 relative of the
    # float64 ones over 2M elements (measured 2.6e-5 at most on entries up to 5); a chunk missed or counted
    # twice would be off by tens of percent
    assert float((out.flatten().double() - ref).abs().max()) < 1e-4


class FreshAllocations(TorchDispatchMode):
    """Records every tensor an aten op returns whose storage is none of the op's inputs' (a new allocation):
    (op, dtype, bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.allocs: list[tuple[str, torch.dtype, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = {x.untyped_storage().data_ptr() for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)}
        for x in tree_flatten(out)[0]:
            if isinstance(x, torch.Tensor) and x.untyped_storage().data_ptr() not in ins:
                self.allocs.append((str(func), x.dtype, x.untyped_storage().nbytes()))
        return out


def big_allocations(fn, *args) -> list[tuple[str, torch.dtype, int]]:
    with FreshAllocations() as rec:
        fn(*args)
    return [a for a in rec.allocs if a[2] > CHUNK * 4]


def old_slerp(v0: torch.Tensor, v1: torch.Tensor, t: float) -> torch.Tensor:
    """lifelong's former SLERP (float64 copies of both inputs and a float64 output), kept to show the
    allocation count below catches it."""
    a, b = v0.flatten().double(), v1.flatten().double()
    w = float(torch.arccos(torch.clamp((a / a.norm()) @ (b / b.norm()), -1, 1)))
    return (math.sin((1 - t) * w) / math.sin(w) * a + math.sin(t * w) / math.sin(w) * b).reshape(v0.shape).float()


def test_slerp_allocates_the_output_and_chunk_sized_scratch_only():
    n = 3 * CHUNK + 7  # 12.6 MB per float32 tensor; chunks of 4 MiB
    a, b = torch.randn(n, generator=gen(4)), torch.randn(n, generator=gen(5))
    big = big_allocations(slerp, a, b, 0.3)
    # the only allocation larger than one chunk is the float32 output itself; nothing is float64
    assert big == [("aten.empty_like.default", torch.float32, 4 * n)], big
    with FreshAllocations() as rec:
        slerp(a, b, 0.3)
    assert all(dt != torch.float64 or nbytes <= 64 for _, dt, nbytes in rec.allocs)
    assert max(nbytes for _, _, nbytes in rec.allocs if nbytes != 4 * n) <= 4 * CHUNK
    # the measure can fail: the former implementation makes 5 whole-tensor float64 temporaries (8 bytes each)
    old = big_allocations(old_slerp, a, b, 0.3)
    assert sum(1 for _, dt, nbytes in old if dt == torch.float64 and nbytes == 8 * n) >= 4


# ---- nuslerp ------------------------------------------------------------------------------------------
def test_nuslerp_t_from_weights_and_task_vectors():
    base = torch.randn(8, 5, generator=gen(6))
    a, b = base + torch.randn(8, 5, generator=gen(7)), base + torch.randn(8, 5, generator=gen(8))
    m = method("nuslerp")
    assert torch.allclose(m.merge([a, b], [1.0, 3.0], None, CTX), slerp(a, b, 0.75), atol=1e-6)  # t = w1/(w0+w1)
    assert torch.allclose(m.merge([a, b], [2.0, -2.0], None, CTX), slerp(a, b, 0.5), atol=1e-6)  # sum 0: 0.5
    # with a base: SLERP of the task vectors, added back to the base
    with_base = m.merge([a, b], [1.0, 3.0], base, CTX)
    assert torch.allclose(with_base, base + slerp(a - base, b - base, 0.75), atol=1e-5)
    assert not torch.allclose(with_base, slerp(a, b, 0.75), atol=1e-3)
    with pytest.raises(ValueError, match="exactly 2 models"):
        m.merge([a], [1.0], base, CTX)


def test_nuslerp_row_wise_column_wise_and_flattened_differ_as_documented():
    g = gen(9)
    v0, v1 = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    v1[0] = 2 * v0[0]  # row 0 parallel: interpolated linearly in per-row mode
    t = 0.3
    flat = method("nuslerp").merge([v0, v1], [0.7, 0.3], None, CTX)
    rows = method("nuslerp", nuslerp_flatten=False).merge([v0, v1], [0.7, 0.3], None, CTX)
    cols = method("nuslerp", nuslerp_flatten=False, nuslerp_row_wise=True).merge([v0, v1], [0.7, 0.3], None, CTX)
    assert torch.allclose(flat, slerp(v0, v1, t), atol=1e-6)  # one angle for the whole tensor
    for i in range(3):  # default per-vector mode: one angle per row (vectors along the last dimension)
        assert torch.allclose(rows[i], slerp(v0[i], v1[i], t), atol=1e-6)
    assert torch.allclose(rows[0], (1 - t) * v0[0] + t * v1[0], atol=1e-6)
    for j in range(4):  # nuslerp_row_wise: one angle per column (vectors along the first dimension)
        assert torch.allclose(cols[:, j], slerp(v0[:, j], v1[:, j], t), atol=1e-6)
    assert not torch.allclose(flat, rows, atol=1e-3) and not torch.allclose(rows, cols, atol=1e-3)
    # per-row mode keeps every row's norm when rows have equal norms; the flattened mode does not
    u = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=1)
    w = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=1)
    r = method("nuslerp", nuslerp_flatten=False).merge([u, w], [1.0, 1.0], None, CTX)
    assert torch.allclose(r.norm(dim=1), torch.ones(3), atol=1e-6)


# ---- multislerp ---------------------------------------------------------------------------------------
def test_multislerp_of_two_equal_norm_models_at_equal_weights_is_slerp():
    g = gen(10)
    u = torch.randn(50, generator=g)
    u = 2 * u / u.norm()
    v = 2 * rotated(u / 2, torch.randn(50, generator=g), 1.3)
    out = method("multislerp").merge([u, v], [1.0, 1.0], None, CTX)
    assert torch.allclose(out, slerp(u, v, 0.5), atol=1e-6)


def test_multislerp_is_the_normalised_weighted_direction_mean_times_the_mean_norm():
    g = gen(11)
    xs = [torch.randn(40, 3, generator=g) * s for s in (1.0, 2.0, 0.5)]
    w = [0.2, 0.5, 0.3]
    out = method("multislerp").merge(xs, [2.0, 5.0, 3.0], None, CTX)  # normalize_weights: 2/10, 5/10, 3/10
    units = [x / x.norm() for x in xs]
    mean = sum(wi * u for wi, u in zip(w, units))
    ref = sum(wi * float(x.norm()) for wi, x in zip(w, xs)) * mean / mean.norm()
    assert torch.allclose(out, ref, atol=1e-5)  # the tangent-space mean at that point is zero
    # two models at unequal weights: this is not SLERP at t = w1 (mergekit's multislerp, documented)
    a, b = xs[0] / xs[0].norm(), rotated(xs[0].flatten() / xs[0].norm(), xs[1].flatten(), 1.2).reshape(40, 3)
    two = method("multislerp").merge([a, b], [0.8, 0.2], None, CTX)
    assert abs(angle(two, a) - math.atan2(0.2 * math.sin(1.2), 0.8 + 0.2 * math.cos(1.2))) < 1e-5
    assert abs(angle(two, a) - 0.2 * 1.2) > 0.01
    # unnormalised weights scale the norm by their sum
    raw = method("multislerp", normalize_weights=False).merge(xs, [2.0, 5.0, 3.0], None, CTX)
    assert abs(float(raw.norm()) / float(out.norm()) - 10.0) < 1e-4


def test_multislerp_base_antipodes_and_one_model():
    g = gen(12)
    base, a, b = (torch.randn(6, generator=g) for _ in range(3))
    m = method("multislerp")
    out = m.merge([a, b], [1.0, 1.0], base, CTX)
    assert torch.allclose(out - base, m.merge([a - base, b - base], [1.0, 1.0], None, CTX), atol=1e-6)
    assert torch.allclose(m.merge([a, -a], [1.0, 1.0], None, CTX), torch.zeros(6), atol=1e-6)  # linear fallback
    with pytest.raises(ValueError, match="'w'.*weights balance"):
        m.merge([a, -a, a, -a], [1.0, 1.0, 1.0, 1.0], None, CTX)
    assert torch.equal(m.merge([a], [1.0], None, CTX), a)
    assert "sum to 0" in m.check_weights([1.0, -1.0])


# ---- karcher ------------------------------------------------------------------------------------------
def riemannian_gradient(mean: torch.Tensor, xs: list[torch.Tensor]) -> torch.Tensor:
    """sum_i log_m(u_i) / n in float64: zero at the Karcher mean."""
    m = mean.double().flatten() / mean.double().norm()
    g = torch.zeros_like(m)
    for x in xs:
        u = x.double().flatten() / x.double().norm()
        c = float(torch.clamp(m @ u, -1, 1))
        th = math.acos(c)
        if th > 0:
            g += th / math.sin(th) * (u - c * m)
    return g / len(xs)


def test_karcher_of_two_is_slerp_at_half_and_of_many_a_zero_gradient_point():
    g = gen(13)
    u = torch.randn(30, generator=g)
    u = u / u.norm()
    v = rotated(u, torch.randn(30, generator=g), 2.0)
    assert torch.allclose(
        method("karcher").merge([3 * u, 3 * v], [1, 1], None, CTX), slerp(3 * u, 3 * v, 0.5), atol=1e-5
    )
    xs = [torch.randn(20, 10, generator=g) + 1.5 for _ in range(4)]
    out = method("karcher", max_iter=50, tol=1e-7).merge(xs, [1.0] * 4, None, CTX)
    start = sum(x / x.norm() for x in xs)  # the normalised Euclidean mean, where the iteration starts
    assert float(riemannian_gradient(out, xs).norm()) < 1e-5
    assert float(riemannian_gradient(start, xs).norm()) > 1e-3  # ... is not the fixed point
    assert abs(float(out.norm()) - sum(float(x.norm()) for x in xs) / 4) < 1e-4  # scaled by the mean norm


def test_karcher_mean_on_a_circle_is_the_mean_angle_not_the_chord_mean():
    e = lambda a: torch.tensor([math.cos(a), math.sin(a)])  # noqa: E731
    out = method("karcher", max_iter=100, tol=1e-7).merge([e(0.0), e(0.0), e(math.pi / 2)], [1.0] * 3, None, CTX)
    assert abs(math.atan2(float(out[1]), float(out[0])) - math.pi / 6) < 1e-5  # (0 + 0 + 90) / 3 = 30 degrees
    # the normalised chord mean (where it starts, and what multislerp returns) is at atan(1/2) = 26.6 degrees
    ms = method("multislerp").merge([e(0.0), e(0.0), e(math.pi / 2)], [1.0] * 3, None, CTX)
    assert abs(math.atan2(float(ms[1]), float(ms[0])) - math.atan(0.5)) < 1e-5
    # on a 2-sphere the unit-step iteration needs several steps: each one shrinks the gradient, max_iter caps it
    xs = [torch.tensor([1.0, 0, 0]), torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), torch.tensor([0, 0, 1.0])]
    grads = [
        float(riemannian_gradient(method("karcher", max_iter=k, tol=1e-7).merge(xs, [1.0] * 4, None, CTX), xs).norm())
        for k in (0, 1, 2, 3, 50)
    ]
    assert grads[0] > grads[1] > grads[2] > grads[3] > 1e-4 > 1e-6 > grads[4]


def test_karcher_skips_zero_inputs_in_the_direction_and_keeps_them_in_the_norm():
    a = torch.tensor([3.0, 4.0])
    out = method("karcher").merge([a, torch.zeros(2), 2 * a], [1.0] * 3, None, CTX)
    assert torch.allclose(out, (5 + 0 + 10) / 3 * a / 5, atol=1e-6)
    assert torch.equal(method("karcher").merge([torch.zeros(2)] * 2, [1.0] * 2, None, CTX), torch.zeros(2))
    assert MERGE_METHODS.get("karcher").base_in_models == "input"  # mergekit averages the base too


# ---- model_stock --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cos", [0.0, 0.3, 0.8, 1.0])
def test_model_stock_ratio_follows_the_angle_between_deltas(cos):
    g = gen(14)
    base = torch.randn(64, generator=g)
    d1 = torch.randn(64, generator=g)
    d1 = d1 / d1.norm()
    d2 = rotated(d1, torch.randn(64, generator=g), math.acos(cos))
    out = method("model_stock").merge([base + 2 * d1, base + 2 * d2], [1, 1], base, CTX)
    t = 2 * cos / (1 + cos)
    avg = base + d1 + d2
    assert torch.allclose(out, t * avg + (1 - t) * base, atol=1e-5)
    if cos == 0.0:
        assert torch.allclose(out, base, atol=1e-6)  # orthogonal deltas: the base
    if cos == 1.0:
        assert torch.allclose(out, avg, atol=1e-5)  # identical deltas: their average


def test_model_stock_three_models_mean_pair_angle_and_filter_wise_rows():
    g = gen(15)
    base = torch.randn(2, 32, generator=g)
    ds = [torch.randn(2, 32, generator=g) for _ in range(3)]
    ws = [base + d for d in ds]
    out = method("model_stock").merge(ws, [1, 1, 1], base, CTX)
    cos = (
        sum(
            float(torch.nn.functional.cosine_similarity(ds[i].flatten(), ds[j].flatten(), dim=0))
            for i, j in [(0, 1), (0, 2), (1, 2)]
        )
        / 3
    )
    t = 3 * cos / (1 + 2 * cos)
    assert torch.allclose(out, t * sum(ws) / 3 + (1 - t) * base, atol=1e-5)
    # filter_wise: one ratio per row. Row 0 orthogonal deltas keep the base; row 1 identical deltas average.
    d = torch.zeros(2, 4)
    d[0, 0] = 1.0
    e = torch.zeros(2, 4)
    e[0, 1] = 1.0
    d[1] = e[1] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    b = torch.ones(2, 4)
    fw = method("model_stock", filter_wise=True).merge([b + d, b + e], [1, 1], b, CTX)
    assert torch.allclose(fw[0], b[0]) and torch.allclose(fw[1], b[1] + d[1])
    whole = method("model_stock").merge([b + d, b + e], [1, 1], b, CTX)
    assert not torch.allclose(whole, fw)
    with pytest.raises(ValueError, match="at least 2"):
        method("model_stock").merge([b + d], [1], b, CTX)


# ---- nearswap -----------------------------------------------------------------------------------------
def test_nearswap_takes_near_entries_and_moves_far_ones_by_t():
    base = torch.tensor([0.0, 1.0, 2.0, 3.0, -1.0, 5.0])
    other = torch.tensor([0.05, 1.3, 1.95, 3.0, -2.0, 5.08])
    t = 0.1
    out = method("nearswap", t=t).merge([other], [1.0], base, CTX)
    near = (other - base).abs() <= t
    assert torch.equal(near, torch.tensor([True, False, True, True, False, True]))
    assert torch.allclose(out[near], other[near])  # swapped in
    assert torch.allclose(out[~near], base[~near] + t * torch.sign(other - base)[~near])  # moved by t
    assert torch.allclose((out - base).abs(), torch.minimum((other - base).abs(), torch.tensor(t)), atol=1e-7)
    with pytest.raises(ValueError, match="exactly 1 other model"):
        method("nearswap", t=t).merge([other, other], [1.0, 1.0], base, CTX)
    with pytest.raises(ValueError, match="needs base_model"):
        method("nearswap", t=t).merge([other], [1.0], None, CTX)


# ---- through the engine -------------------------------------------------------------------------------
def test_slerp_yaml_runs_from_base_model_to_the_other_model_as_in_mergekit(tmp_path):
    """A mergekit SLERP config (base listed among the two models) through merge_models: t = 0 writes the base,
    t = 1 the other model, whether the base is listed or not; a gradient [0, 1] goes from the base at the first
    layer to the other model at the last; without base_model, models[0] is the t = 0 end."""
    from safetensors.torch import load_file

    from lifelong.merging.engine import MergeConfig, merge_models

    _save_tiny(tmp_path / "base", 0, 0.0)
    _save_tiny(tmp_path / "ft", 1, 0.05)
    sd = lambda p: load_file(p / "model.safetensors")  # noqa: E731
    base, ft = sd(tmp_path / "base"), sd(tmp_path / "ft")
    b, f = str(tmp_path / "base"), str(tmp_path / "ft")

    def run(tag, t, models, base_model):
        cfg = MergeConfig.model_validate(
            {"merge_method": "slerp", "base_model": base_model, "models": [{"model": m} for m in models],
             "parameters": {"t": t}}
        )  # fmt: skip
        return sd(merge_models(cfg, tmp_path / tag, quiet=True))

    for tag, t, models, bm, want in [
        ("listed0", 0.0, [b, f], b, base),
        ("listed0b", 0.0, [f, b], b, base),  # the base's position among the models does not matter
        ("listed1", 1.0, [b, f], b, ft),
        ("unlisted1", 1.0, [f], b, ft),
        ("nobase0", 0.0, [f, b], None, ft),  # lifelong's convention without base_model: from models[0]
    ]:
        out = run(tag, t, models, bm)
        assert all(torch.equal(out[n], want[n]) for n in want), tag
    grad = run("grad", [0.0, 1.0], [b, f], b)
    assert torch.equal(grad["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])
    assert torch.equal(grad["model.layers.1.mlp.up_proj.weight"], ft["model.layers.1.mlp.up_proj.weight"])
    half = run("half", 0.5, [b, f], b)["model.layers.0.mlp.up_proj.weight"]
    x, y = base["model.layers.0.mlp.up_proj.weight"], ft["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(half, slerp(x, y, 0.5))
    with pytest.raises(ValueError, match="exactly one other model"):
        run("three", 0.5, [b, f, str(tmp_path / "ft")], b)


# ---- parity with mergekit -----------------------------------------------------------------------------
MERGEKIT = Path("/tmp/mkvenv/bin/mergekit-yaml")

# method, global parameters, per-model weights (None: none given), layout: how the base appears
# ("listed": base_model and listed first among models, as mergekit configs do; "input": base_model listed last
# with a weight, averaged like a model; "unlisted": base_model not under models; None: no base_model)
PARITY = [
    ("linear", {}, [0.3, 0.5, 0.7], "input"),
    ("slerp", {"t": 0.3}, None, "listed"),
    ("slerp", {"t": [0.0, 0.5, 1.0]}, None, "listed"),  # a gradient over the layers, resolved per tensor
    ("slerp", {"t": 0.7}, None, "unlisted"),
    ("nuslerp", {}, [0.4, 0.8], "listed"),
    ("nuslerp", {"nuslerp_flatten": False, "nuslerp_row_wise": True}, [0.4, 0.8], "listed"),
    ("nuslerp", {"nuslerp_flatten": False}, [0.6, 0.2], None),
    ("multislerp", {}, [0.2, 0.3, 0.5], "listed"),
    ("multislerp", {}, [0.2, 0.3, 0.5], None),
    ("karcher", {}, None, None),
    ("karcher", {"max_iter": 3}, None, "unlisted"),  # mergekit averages the base too
    ("model_stock", {}, None, "listed"),
    ("model_stock", {"filter_wise": True}, None, "listed"),
    ("nearswap", {"t": 0.02}, None, "listed"),
]
N_INPUTS = {"slerp": 1, "nearswap": 1, "nuslerp": 2}  # models besides the base (others: 3)

# runs every config through mergekit's own CLI entry point in one interpreter (one start-up instead of 11)
# and mergekit's slerp kernel on tensors of several chunks (the tiny checkpoints' tensors fit in one)
DRIVER = """
import sys
from safetensors.torch import load_file, save_file
from mergekit import merge_methods
from mergekit.merge_methods.base import TensorGroup
from mergekit.scripts.run_yaml import main
for cfg, out in zip(sys.argv[3::2], sys.argv[4::2]):
    main([cfg, out, "--lazy-unpickle", "--no-cuda", "--quiet"], standalone_mode=False)
big = load_file(sys.argv[1])
group = TensorGroup.from_tensors([big["base"], big["other"]], base_index=0)
(out,) = merge_methods.get("slerp")((group,), parameters={"t": 0.3})
save_file({"slerp": out.contiguous()}, sys.argv[2])
"""


def _save_tiny(path: Path, seed: int, scale: float) -> None:
    from lifelong.testing import tiny_llama, tiny_tokenizer

    model = tiny_llama(seed=0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    model.float().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)


def _config(root: Path, name: str, params: dict, weights, layout) -> dict:
    entries = [{"model": str(root / f"m{i}")} for i in range(N_INPUTS.get(name, 3))]
    for e, w in zip(entries, weights or []):
        e["parameters"] = {"weight": w}
    cfg = {"merge_method": name, "models": entries, "parameters": params, "dtype": "float32"}
    if layout == "listed":
        cfg["base_model"] = str(root / "base")
        cfg["models"] = [{"model": str(root / "base")}] + entries
    elif layout == "unlisted":
        cfg["base_model"] = str(root / "base")
    elif layout == "input":
        cfg["base_model"] = str(root / "base")
        cfg["models"] = entries + [{"model": str(root / "base"), "parameters": {"weight": 0.4}}]
    return cfg


@pytest.fixture(scope="module")
def mergekit_outputs(tmp_path_factory):
    """Tiny float32 llama checkpoints (a base and three models 0.02-randn away) and mergekit's merge of each
    PARITY config: {index: state dict}."""
    import yaml
    from safetensors.torch import load_file, save_file

    if not MERGEKIT.exists():
        pytest.skip("mergekit 0.1.5 is not installed at /tmp/mkvenv")
    root = tmp_path_factory.mktemp("mk")
    _save_tiny(root / "base", 0, 0.0)
    for i in range(3):
        _save_tiny(root / f"m{i}", i + 1, 0.02)
    args = []
    for k, (name, params, weights, layout) in enumerate(PARITY):
        (root / f"cfg{k}.yaml").write_text(yaml.safe_dump(_config(root, name, params, weights, layout)))
        args += [str(root / f"cfg{k}.yaml"), str(root / f"out{k}")]
    g = gen(20)
    big = torch.randn(3, CHUNK + 5, generator=g)
    save_file({"base": big, "other": big + 0.5 * torch.randn(big.shape, generator=g)}, root / "big.safetensors")
    args = [str(root / "big.safetensors"), str(root / "big_out.safetensors")] + args
    python = MERGEKIT.parent / "python"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # as here: same reduction splits
    subprocess.run([str(python), "-c", DRIVER, *args], check=True, capture_output=True, timeout=600, env=env)
    outs = {}
    for k in range(len(PARITY)):
        sd: dict = {}
        for f in sorted((root / f"out{k}").glob("*.safetensors")):
            sd.update(load_file(f))
        outs[k] = sd
    return root, outs


@pytest.mark.parametrize("k", range(len(PARITY)), ids=[f"{p[0]}-{i}" for i, p in enumerate(PARITY)])
def test_equal_to_mergekit_on_tiny_checkpoints(mergekit_outputs, k):
    """The same YAML through `lifelong merge`'s engine and through mergekit-yaml: equal tensor by tensor."""
    from safetensors.torch import load_file

    from lifelong.merging.engine import load_merge_config, merge_models

    root, outs = mergekit_outputs
    name, params, _, layout = PARITY[k]
    ref = outs[k]
    out = merge_models(load_merge_config(root / f"cfg{k}.yaml"), root / f"ours{k}", quiet=True)
    got: dict = {}
    for f in sorted(out.glob("*.safetensors")):
        got.update(load_file(f))
    assert set(got) == set(ref), sorted(set(got) ^ set(ref))
    worst = max(float((got[n] - ref[n]).abs().max()) for n in ref)
    print(f"{name} {params} base {layout}: max abs difference to mergekit {worst:.3g}")
    assert worst <= 1e-7, worst  # measured: 0 for every config (bit for bit) with one thread on both sides


def test_slerp_over_several_chunks_equals_mergekit_bit_for_bit(mergekit_outputs):
    from safetensors.torch import load_file

    root, _ = mergekit_outputs
    big = load_file(root / "big.safetensors")
    want = load_file(root / "big_out.safetensors")["slerp"]
    got = method("slerp", t=0.3).merge([big["other"]], [1.0], big["base"], CTX)
    assert torch.equal(got, want), float((got - want).abs().max())
