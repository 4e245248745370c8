"""r-ROME, EMMET and AlphaEdit on the tiny fact model (`fact_setup`): each one's mechanism, measured."""

import math

import pytest
import torch

from lifelong.editing import build_editor, load_requests
from lifelong.editing.common import context_templates, layer_module, mean_at_subject, mlp_out, optimize_delta
from lifelong.editing.protocol import run_protocol
from lifelong.testing import fact_requests


def requests(fs, subjects, seed=0):
    return load_requests(fact_requests(fs.facts, subjects, seed=seed))


def rel(a, b):
    return float((a - b).norm() / b.norm())


# ---- r-ROME ------------------------------------------------------------------------------------------
def test_r_rome_maps_the_averaged_key_exactly_where_rome_misses_it(fact_setup):
    """W' k* = v* (r-ROME); ROME's asymmetric form hits W' k = W k + delta for the plain prompt's key k
    instead and misses v* by 1/rome_ratio - 1."""
    fs = fact_setup
    params = dict(layer=0, n_prefixes=5, start_key=False, stats=fs.stats)  # the papers' single-key forms
    (req,) = requests(fs, list(fs.facts)[1:2])
    base = fs.load()
    module = mlp_out(base, 0)
    templates = context_templates(base, fs.tok, 5, 10, 0)
    editor = build_editor("r_rome", params)
    delta, v0, _ = optimize_delta(base, fs.tok, req, module, templates, editor.params)
    k_out0 = mean_at_subject(base, fs.tok, module, [req], ["{}"], "output")[0]

    def outputs(model):
        m = mlp_out(model, 0)
        star = mean_at_subject(model, fs.tok, m, [req], templates, "output")[0]
        plain = mean_at_subject(model, fs.tok, m, [req], ["{}"], "output")[0]
        return star, plain

    rr_model, rome_model = fs.load(), fs.load()
    rr = editor.edit(rr_model, fs.tok, [req])
    assert editor.cache.templates(rr_model, fs.tok, editor.params) == templates
    rome = build_editor("rome", params).edit(rome_model, fs.tok, [req])
    rr_star, _ = outputs(rr_model)
    rome_star, rome_plain = outputs(rome_model)
    assert rel(rr_star, v0 + delta) < 1e-4  # measured 1e-7: W' k* = v*
    assert rel(rome_plain - k_out0, delta) < 1e-4  # ROME: W' k = W k + delta at the plain prompt ...
    ratio = rr.info["rome_ratio"][0]
    assert rel(rome_star - v0, delta) > 0.05  # ... and misses v* (measured: ratio 0.65, 54% off)
    assert abs(rel(rome_star - v0, delta) - abs(1 / ratio - 1)) < 1e-3
    (d_rr,) = rr.deltas.values()
    (d_rome,) = rome.deltas.values()
    assert abs(float(d_rome.norm() / d_rr.norm()) - 1 / ratio) < 1e-3  # same direction C^-1 k*, other scale
    assert rr.not_converged() == [] and rr.info["convergence"][0]["threshold"] == math.log(2)


@pytest.mark.slow
def test_r_rome_updates_stay_smaller_than_rome_over_a_sequence(fact_setup):
    """32 sequential edits on one model each: ROME's denominator k^T C^-1 k* is below r-ROME's k*^T C^-1 k*
    (ratio < 1), so its updates are larger and spikier and the weight drifts further. The tiny model shows no
    disabling edit (the paper's collapse: updates orders of magnitude larger), only this steady excess."""
    fs = fact_setup
    reqs = requests(fs, list(fs.facts))
    runs = {}
    for method in ("rome", "r_rome"):
        model = fs.load()
        w0 = model.model.layers[0].mlp.down_proj.weight.detach().clone()
        editor = build_editor(method, dict(layer=0, n_prefixes=5, stats=fs.stats))
        results = [editor.edit(model, fs.tok, [r]) for r in reqs]
        norms = torch.tensor([float(next(iter(r.deltas.values())).norm()) for r in results])
        drift = float((model.model.layers[0].mlp.down_proj.weight.detach() - w0).norm())
        runs[method] = (norms, drift, results)
    (rome_n, rome_drift, _), (rr_n, rr_drift, rr) = runs["rome"], runs["r_rome"]
    ratios = torch.tensor([r.info["rome_ratio"][0] for r in rr])
    # measured: drift 1917 vs 807, largest update 828 vs 244, ratios 0.43..0.94 (median 0.77)
    assert rome_drift > 1.5 * rr_drift
    assert rome_n.max() > 2 * rr_n.max()
    assert float(ratios.median()) < 0.9 and float(ratios.max()) < 1.0


# ---- EMMET -------------------------------------------------------------------------------------------
def test_emmet_maps_every_edited_key_to_its_value_where_memit_leaves_a_residual(fact_setup):
    fs = fact_setup
    reqs = requests(fs, list(fs.facts)[:8])
    common = dict(n_prefixes=5, stats=fs.stats, clamp_norm_factor=4, v_steps=40)
    base = fs.load()
    templates = context_templates(base, fs.tok, 5, 10, 0)
    p = build_editor("emmet", dict(common, layer=0)).params
    deltas = torch.stack([optimize_delta(base, fs.tok, r, layer_module(base, 0), templates, p)[0] for r in reqs])
    before = mean_at_subject(base, fs.tok, mlp_out(base, 0), reqs, templates, "output")

    def residuals(method, **params):
        model = fs.load()
        res = build_editor(method, dict(common, **params)).edit(model, fs.tok, reqs)
        got = mean_at_subject(model, fs.tok, mlp_out(model, 0), reqs, templates, "output") - before
        return (got - deltas).norm(dim=1) / deltas.norm(dim=1), res

    exact, res = residuals("emmet", layer=0, emmet_lambda=0.0)
    memit, _ = residuals("memit", layers=[0], mom2_update_weight=1.0)  # the same values, least squares
    # measured: EMMET <= 4e-7 (float rounding), MEMIT 4e-3..9e-3 (30%..42% at its default weight, 117 here)
    assert float(exact.max()) < 1e-5 and res.info["constraint_residual"] < 1e-6
    assert float(memit.min()) > 100 * float(exact.max())
    assert len(res.deltas) == 1 and len(res.info["convergence"]) == 8


def test_emmet_batch_lands(fact_setup):
    fs = fact_setup
    editor = build_editor("emmet", dict(layer=0, n_prefixes=5, stats=fs.stats, clamp_norm_factor=4, v_steps=40))
    out = run_protocol(fs.load(), fs.tok, editor, requests(fs, list(fs.facts)[:8]), "sequential", group=8, bootstrap=0)
    s = {k: v["mean"] for k, v in out["summary"].items()}
    # measured (one batch of 8, emmet_lambda 0.1): efficacy 87.5, paraphrases 87.5, neighbours 97.5 (top1);
    # the regularised D leaves a constraint residual of 5e-4
    assert s["efficacy[top1]"] >= 75 and s["generalization[top1]"] >= 75 and s["locality[top1]"] >= 85
    assert 1e-6 < out["results"][0].info["constraint_residual"] < 1e-2


# ---- AlphaEdit ---------------------------------------------------------------------------------------
VALUES = dict(layers=[0, 1], n_prefixes=5, clamp_norm_factor=10, v_steps=40)
"""MEMIT's settings on the fact model (tests/test_editing.py), shared by AlphaEdit and MEMIT below."""
ALPHA = dict(VALUES, l2=0.3)
"""The authors' null-space threshold 2e-2 (here 112 and 117 of 128 dimensions); l2 0.3 instead of their 10:
this model's keys carry trace(C) = E||k||^2 = 30 and l2 = 10 lands no edit (update norms 0.6)."""


def known_facts(fs, model, subjects):
    """Share (%) of the subjects' facts, in all three phrasings, whose answer is still the argmax."""
    from lifelong.testing import FACT_TEMPLATES

    ok = []
    with torch.no_grad():
        for s in subjects:
            for t in FACT_TEMPLATES:
                ids = torch.tensor([fs.tok(t.replace("{}", s))["input_ids"]])
                top = int(model(input_ids=ids).logits[0, -1].argmax())
                ok.append(fs.tok.decode([top]).strip() == fs.facts[s])
    return 100 * sum(ok) / len(ok)


def test_alphaedit_update_lies_in_the_null_space_of_the_preserved_keys(fact_setup):
    from lifelong.editing.alphaedit import null_space_projection
    from lifelong.editing.stats import StatsParams, second_moments

    fs = fact_setup
    reqs = requests(fs, list(fs.facts)[:8])
    cs = second_moments(fs.load(), fs.tok, [0, 1], StatsParams(**fs.stats))
    alpha = build_editor("alphaedit", dict(ALPHA, stats=fs.stats)).edit(fs.load(), fs.tok, reqs)
    memit = build_editor("memit", dict(VALUES, mom2_update_weight=1.0, stats=fs.stats)).edit(fs.load(), fs.tok, reqs)
    assert alpha.info["null_dims"] == {0: 112, 1: 117} and len(alpha.info["convergence"]) == 8

    def outside(d, proj):  # the share of the update acting on the preserved keys' directions
        return float((d - d @ proj).norm() / d.norm())

    def leak(d, c):  # ||Delta K0|| / (||Delta|| ||K0||) over the corpus keys K0 (through C = K0 K0^T / N)
        return float(torch.sqrt(torch.trace(d @ c @ d.T) / torch.trace(c)) / d.norm())

    for name, d_alpha in alpha.deltas.items():
        c = cs[int(name.split(".")[2])].double()
        proj, _ = null_space_projection(c, 2e-2)
        a, m = d_alpha.double(), memit.deltas[name].double()
        # measured: AlphaEdit 1.4e-7 / 2.9e-8 (layers 0 / 1), MEMIT 3.1e-2 / 3.1e-3
        assert outside(a, proj) < 1e-5 and outside(m, proj) > 1e3 * outside(a, proj)
        # so ||Delta K0|| is bounded by the threshold: <= sqrt(2e-2 / trace C) (0.026 here; measured 0.015).
        # MEMIT has no such bound, but on this model its C^-1 weighting puts its update in directions even
        # less used by the corpus (measured leak 2.7e-3 / 6e-4): see docs/editing.md
        assert leak(a, c) <= math.sqrt(2e-2 / float(torch.trace(c)))


@pytest.mark.parametrize(
    "method,params",
    [
        ("alphaedit", dict(ALPHA, n_prefixes=2, v_steps=10)),
        ("r_rome", dict(layer=0, n_prefixes=2, v_steps=10)),
        ("emmet", dict(layer=0, n_prefixes=2, v_steps=10, clamp_norm_factor=4)),
    ],
)
def test_a_resumed_sequential_editor_makes_the_same_update(fact_setup, tmp_path, method, params):
    """Two edits, the editor's state saved and loaded into a new editor: the third edit is bit-identical to an
    uninterrupted run's (prefixes and statistics come from the state, not from the already-edited model)."""
    fs = fact_setup
    reqs = requests(fs, list(fs.facts)[:3])
    params = dict(params, stats=fs.stats)
    straight_model, resumed_model = fs.load(), fs.load()
    straight, first = build_editor(method, params), build_editor(method, params)
    for r in reqs[:2]:
        straight.edit(straight_model, fs.tok, [r])
        first.edit(resumed_model, fs.tok, [r])
    torch.save(first.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert len(state["templates"]) == 3
    resumed = build_editor(method, params)
    resumed.load_state_dict(state, resumed_model)
    a = straight.edit(straight_model, fs.tok, [reqs[2]])
    b = resumed.edit(resumed_model, fs.tok, [reqs[2]])
    assert a.deltas.keys() == b.deltas.keys() and all(torch.equal(a.deltas[n], b.deltas[n]) for n in a.deltas)
    fresh = build_editor(method, params).edit(resumed_model, fs.tok, [reqs[2]])  # no state: other prefixes
    assert not all(torch.equal(fresh.deltas[n], b.deltas[n]) for n in b.deltas)


def test_alphaedit_state_and_threshold_errors(fact_setup):
    fs = fact_setup
    reqs = requests(fs, list(fs.facts)[:1])
    params = dict(ALPHA, n_prefixes=2, v_steps=5, stats=fs.stats)
    editor = build_editor("alphaedit", params)
    model = fs.load()
    editor.edit(model, fs.tok, reqs)
    state = editor.state_dict()
    assert set(state["past"]) == {"0", "1"} and state["edits"] == 1 and state["layers"] == [0, 1]
    assert not any(k.startswith("stats.") for k in state)  # P replaces C
    with pytest.raises(ValueError, match=r"state is for layers \[0, 1\].*edits layers \[1, 2\]"):
        build_editor("alphaedit", dict(params, layers=[1, 2])).load_state_dict(state, fs.load())
    with pytest.raises(ValueError, match="unknown entry 'codebook'"):
        build_editor("alphaedit", params).load_state_dict({"codebook": 1}, fs.load())
    with pytest.raises(ValueError, match="null space is empty.*raise alphaedit.nullspace_threshold"):
        build_editor("alphaedit", dict(params, nullspace_threshold=1e-12)).edit(fs.load(), fs.tok, reqs)


@pytest.mark.slow
def test_alphaedit_sequential_projection_and_past_keys_each_keep_what_they_protect(fact_setup):
    """24 sequential single edits. Without the projection (P = I) the unrelated facts are wiped out; without
    the earlier edits' keys (Kp Kp^T wiped before each call) later edits overwrite the earlier ones."""
    fs = fact_setup
    subjects = list(fs.facts)
    reqs, others = requests(fs, subjects[:24]), subjects[24:]
    from lifelong.editing.metrics import predictions, request_metrics, summarize

    pre = predictions(fs.load(), fs.tok, reqs)

    def run(forget_past=False, **extra):
        model = fs.load()
        editor = build_editor("alphaedit", dict(ALPHA, stats=fs.stats, **extra))
        for r in reqs:
            if forget_past:
                editor.past = {}
            editor.edit(model, fs.tok, [r])
        per = request_metrics(model, fs.tok, reqs, pre, None)
        return summarize(per[:12], 0)["efficacy[top1]"]["mean"], known_facts(fs, model, others)

    full_early, full_known = run()
    _, open_known = run(nullspace_threshold=1e9)  # P = I: every direction is "null"
    no_past_early, _ = run(forget_past=True)
    # measured: the first 12 edits kept 91.7 (full) vs 33.3 (no Kp); known facts 41.7 (full) vs 0 (P = I),
    # 100 before editing. MEMIT on the same 24 edits: first 12 kept 75.0 / 75.0 / 83.3, known facts 29.2 /
    # 41.7 / 79.2 at mom2_update_weight 1 / default (117) / 1000 (docs/editing.md)
    assert full_early >= no_past_early + 30
    assert full_known >= open_known + 25
