"""The editors' model-derived defaults on the tiny fact model: the edited layer chosen by causal tracing (or the
depth rule when the model knows too few of the traced facts), MEMIT's lambda scaled to the key width, FT-L's
radius relative to the weights, and every value optimisation's convergence record."""

import math

import pytest
import torch
from test_editing import requests

from lifelong.editing import build_editor
from lifelong.editing import trace as tr
from lifelong.editing.common import capture, default_layer, mean_at_subject, mlp_out
from lifelong.editing.memit import GPTJ_LAMBDA_PER_KEY_DIM
from lifelong.editing.rome import CONVERGED_NLL, resolve_layers


def known(fs, n):
    """Requests whose target_true the fact model knows (it was trained on them)."""
    return requests(fs, list(fs.facts)[:n])


def test_auto_layer_is_traced_once_and_falls_back_when_the_model_knows_too_little(fact_setup, monkeypatch):
    model, tok = fact_setup.load(), fact_setup.tok
    # the shipped common facts (Paris, ...) are unknown to the fact model: the depth rule, and why
    layers, how = resolve_layers(model, tok, "auto", 1, [default_layer(model)])
    assert layers == [default_layer(model)] and how.startswith("depth (the model knows 0 ")
    # over facts it knows, the layer is causal tracing's pick
    facts = known(fact_setup, 8)
    layers, how = resolve_layers(model, tok, "auto", 1, [7], facts=facts)
    assert how == "traced" and layers == [tr.pick_layer(model, tok, facts)]
    wide, how = resolve_layers(model, tok, "auto", 2, [7, 8], facts=facts)
    assert how == "traced" and wide == tr.pick_layers(model, tok, facts, n=2)
    assert resolve_layers(model, tok, 3, 1, [0]) == ([3], "given")
    # an editor traces once per model: later (sequential) edits keep the first choice, even once the
    # edited model would trace differently
    calls = []
    real = tr.trace
    monkeypatch.setattr(tr, "trace", lambda *a, **k: calls.append(1) or real(*a, **k))
    editor = build_editor("rome", {"n_prefixes": 0, "v_steps": 3, "stats": fact_setup.stats})
    for r in known(fact_setup, 2):
        res = editor.edit(model, tok, [r])
        assert res.info["layer_choice"][0].startswith("depth")
    assert len(calls) == 1


def test_memit_default_lambda_keeps_gptj_balance(fact_setup):
    """One layer's MEMIT update realises q / (lambda + q) of the residual at the edited key, q = k^T C^-1 k,
    which is about the key width d for keys drawn like C's: lambda = 15000/16384 * d realises about half, as
    MEMIT's 15000 on GPT-J's 16384-wide keys, where a fixed 15000 on narrow keys realises almost nothing."""
    tok = fact_setup.tok
    req = known(fact_setup, 1)
    shares = {}
    for lam in (None, 15000.0):
        model = fact_setup.load()
        params = dict(
            layers=[0],
            n_prefixes=0,
            v_steps=20,
            clamp_norm_factor=10,
            ridge=0.0,
            stats=fact_setup.stats,
            start_key=False,
        )  # the paper's keys: one per request
        editor = build_editor("memit", dict(params, mom2_update_weight=lam) if lam else params)
        module = mlp_out(model, 0)
        k = mean_at_subject(model, tok, module, req, ["{}"], "input")[0].double()
        with capture(module, "output"):
            before = mean_at_subject(model, tok, module, req, ["{}"], "output")[0]
        res = editor.edit(model, tok, req)
        after = mean_at_subject(model, tok, module, req, ["{}"], "output")[0]
        c = editor.cache.moments(model, tok, [0], editor.params, {})[0].double()
        q = float(k @ torch.linalg.solve(c, k))
        realised = float((after - before).norm()) / res.info["values"][0]["delta_norm"]
        assert realised == pytest.approx(q / (res.info["lambda"] + q), rel=1e-3)  # the update's algebra
        shares[lam] = (realised, q, c.shape[0], res.info["lambda"])
    realised, q, d, lam = shares[None]
    assert lam == pytest.approx(GPTJ_LAMBDA_PER_KEY_DIM * d)
    assert 0.25 < realised < 0.9 and shares[15000.0][0] < 0.1 < realised


def test_ft_l_default_radius_follows_the_weights_and_lands(fact_setup):
    model, tok = fact_setup.load(), fact_setup.tok
    reqs = known(fact_setup, 3)
    name_w = dict(model.named_parameters())
    res = build_editor("ft", {"layer": 0}).edit(model, tok, reqs)
    (name,) = res.deltas
    radius = 0.035 * float(res.originals[name].abs().mean())
    assert res.info["radius"] == pytest.approx(radius)
    assert float(res.deltas[name].abs().max()) <= radius * (1 + 1e-5)
    assert float(res.deltas[name].abs().max()) == pytest.approx(radius, rel=1e-3)  # the ball is used
    assert name in name_w and len(res.info["convergence"]) == 3


def test_rome_records_convergence_per_request(fact_setup):
    model, tok = fact_setup.load(), fact_setup.tok
    reqs = known(fact_setup, 2)
    base = dict(layer=0, n_prefixes=0, stats=fact_setup.stats)
    stuck = build_editor("rome", dict(base, v_steps=1)).edit(model, tok, reqs)
    assert len(stuck.not_converged()) == 2
    c = stuck.info["convergence"][0]
    assert c["threshold"] == pytest.approx(math.log(2)) == pytest.approx(CONVERGED_NLL)
    assert c["loss"] > c["threshold"] and c["subject"] == reqs[0].subject
    model = fact_setup.load()
    done = build_editor("rome", dict(base, v_steps=40, clamp_norm_factor=10)).edit(model, tok, reqs)
    assert not done.not_converged() and all(c["loss"] <= math.log(2) for c in done.info["convergence"])


def test_rome_maps_the_subject_at_the_start_of_a_text_too(fact_setup):
    """With `start_key`, the edit prompt's key and the subject's key at the start of a text (the subject
    alone) both get exactly W k + delta; without it, only the edit prompt's key (ROME's rank-one update)."""
    from lifelong.editing.common import at_subject

    tok = fact_setup.tok
    (req,) = known(fact_setup, 1)
    req.prompt = "Everyone knows that {} lives in"  # the subject mid-text in the edit prompt
    got = {}
    for start in (True, False):
        model = fact_setup.load()
        module = mlp_out(model, 0)
        keys = {
            "prompt": at_subject(model, tok, module, [(req.prompt, req.subject)], "input")[0],
            "start": at_subject(model, tok, module, [("{}", req.subject)], "input")[0],
        }
        w0 = module.weight.detach().clone()
        res = build_editor(
            "rome", dict(layer=0, n_prefixes=2, v_steps=10, start_key=start, stats=fact_setup.stats)
        ).edit(model, tok, [req])
        dw = module.weight.detach() - w0
        delta = torch.tensor(res.info["delta_norm"])
        got[start] = {name: float((dw @ k).norm()) / float(delta) for name, k in keys.items()}
        assert res.info["keys"] == [2 if start else 1]
    assert got[True]["prompt"] == pytest.approx(1, abs=1e-3) and got[True]["start"] == pytest.approx(1, abs=1e-3)
    assert got[False]["prompt"] == pytest.approx(1, abs=1e-3) and abs(got[False]["start"] - 1) > 0.05
