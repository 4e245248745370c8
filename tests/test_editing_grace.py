"""Behaviour of the weight-free editors: GRACE (codebook adaptor) and in-context (IKE-like) editing."""

import zlib

import numpy as np
import pytest
import torch

from lifelong.editing import EDITORS, build_editor, load_requests
from lifelong.testing import FACT_TEMPLATES, fact_requests

N_EDITS = 8
EPS = 0.03  # below the nearest other subject's key distance at the middle layer of the tiny fact model


def top1(model, tok, prompt):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1]
    return tok.convert_ids_to_tokens(int(logits.argmax())), logits


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_weights_equal(model, before):
    now = dict(model.named_parameters())
    assert set(now) == set(before)
    assert all(torch.equal(now[n], before[n]) for n in before), "a base weight changed"


def test_registered_as_weight_free():
    assert not EDITORS.get("grace").changes_weights and not EDITORS.get("in_context").changes_weights


def test_grace_codebook_rules():
    from lifelong.editing.grace import place

    keys = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    eps = torch.tensor([1.0, 1.0])
    labels = ["Rome", "Oslo"]
    assert place(keys[:0], eps[:0], [], torch.zeros(2), "Rome", 1.0, 1e-4)[:2] == ("add", -1)
    assert place(keys, eps, labels, torch.tensor([5.0, 0.0]), "Rome", 1.0, 1e-4)[:2] == ("add", -1)
    assert place(keys, eps, labels, torch.tensor([1.5, 0.0]), "Rome", 1.0, 1e-4) == ("expand", 0, 1.5)
    assert place(keys, eps, labels, torch.tensor([1.5, 0.0]), "Lima", 1.0, 1e-4) == ("split", 0, 1.5)
    assert place(keys, eps, labels, torch.tensor([10.0, 0.0]), "Lima", 1.0, 1e-4)[:2] == ("overwrite", 1)


def test_grace_edits_retains_keeps_neighbours_and_undoes_exactly(fact_setup):
    model, tok, facts = fact_setup.load(), fact_setup.tok, fact_setup.facts
    subjects = list(facts)[:N_EDITS]
    requests = load_requests(fact_requests(facts, subjects))
    before = snapshot(model)
    probes = [t.replace("{}", s) for s in facts for t in FACT_TEMPLATES]
    pre = {p: top1(model, tok, p) for p in probes}
    editor = build_editor("grace", {"eps_init": EPS})
    results, efficacy = [], 0
    for r in requests:
        results.append(editor.edit(model, tok, [r]))
        efficacy += top1(model, tok, r.text)[0] == r.target_new
    assert_weights_equal(model, before)
    retained = sum(top1(model, tok, r.text)[0] == r.target_new for r in requests)
    paraphrases = sum(top1(model, tok, p)[0] == r.target_new for r in requests for p in r.paraphrases)
    neighbours = [
        (n["prompt"], n["target"]) for r in requests for n in r.neighborhood if n["prompt"].split()[-1] not in subjects
    ]
    kept = sum(top1(model, tok, p)[0] == t for p, t in neighbours)
    # prompts of subjects never edited miss every key: their logits are the unedited model's, bit for bit
    untouched = [p for p in probes if p.split()[-1] not in subjects]
    exact = sum(torch.equal(top1(model, tok, p)[1], pre[p][1]) for p in untouched)
    print(
        f"\nGRACE efficacy {efficacy}/{N_EDITS}, retention {retained}/{N_EDITS}, paraphrases "
        f"{paraphrases}/{2 * N_EDITS}, neighbours kept {kept}/{len(neighbours)}, untouched exact "
        f"{exact}/{len(untouched)}, entries {results[-1].info['entries']}"
    )
    assert efficacy == retained == N_EDITS
    assert kept == len(neighbours) and exact == len(untouched)
    assert results[-1].info["entries"] == [N_EDITS]
    ids = torch.tensor([tok(requests[0].text)["input_ids"]])  # generation (KV cache) sees the edit too
    gen = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=1,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
    )
    assert tok.convert_ids_to_tokens(int(gen[0, -1])) == requests[0].target_new
    for res in reversed(results):
        res.undo(model)
    assert all(torch.equal(top1(model, tok, p)[1], pre[p][1]) for p in probes)
    assert not hasattr(model, "grace_adaptors")
    assert all(not layer.mlp.down_proj._forward_hooks for layer in model.model.layers)
    assert_weights_equal(model, before)


def test_grace_expand_split_and_overwrite_on_the_model(fact_setup):
    model, tok, facts = fact_setup.load(), fact_setup.tok, fact_setup.facts
    before = snapshot(model)
    subject = list(facts)[0]
    base = load_requests(fact_requests(facts, [subject]))[0]
    para = load_requests([{"prompt": FACT_TEMPLATES[1], "subject": subject, "target_new": base.target_new}])[0]
    editor = build_editor("grace", {"eps_init": EPS})
    first = editor.edit(model, tok, [base])
    second = editor.edit(model, tok, [para])  # same label, key within eps + eps_init: the radius grows
    assert second.info["action"] == ["expand"] and second.info["entries"] == [1]
    assert top1(model, tok, para.text)[0] == top1(model, tok, base.text)[0] == base.target_new
    other = next(o for o in set(facts.values()) if o not in (base.target_new, facts[subject]))
    redo = load_requests([{"prompt": base.prompt, "subject": subject, "target_new": other}])[0]
    third = editor.edit(model, tok, [redo])  # the same key with another label: overwritten
    assert third.info["action"] == ["overwrite"] and top1(model, tok, base.text)[0] == other
    third.undo(model)
    assert top1(model, tok, base.text)[0] == base.target_new
    second.undo(model)
    first.undo(model)
    assert top1(model, tok, base.text)[0] == facts[subject] and not hasattr(model, "grace_adaptors")
    # a wide radius makes nearby subjects with other targets split; every edit prompt still hits its own key
    wide = build_editor("grace", {"eps_init": 0.3})
    requests = load_requests(fact_requests(facts, list(facts)[:16]))
    results = [wide.edit(model, tok, [r]) for r in requests]
    actions = [a for res in results for a in res.info["action"]]
    assert "split" in actions
    assert all(top1(model, tok, r.text)[0] == r.target_new for r in requests)
    for res in reversed(results):
        res.undo(model)
    assert all(top1(model, tok, r.text)[0] == facts[r.subject] for r in requests)
    assert_weights_equal(model, before)


class FakeEmbedder:
    """Bag of words, L2-normalized: enough to check the store, ordering, threshold and undo."""

    def __call__(self, texts):
        rows = []
        for t in texts:
            v = np.zeros(256, np.float32)
            for w in t.lower().replace(".", " ").split():
                v[zlib.crc32(w.encode()) % 256] += 1.0
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows) if rows else np.zeros((0, 256), np.float32)


def test_in_context_store_template_threshold_and_undo():
    from lifelong.editing.in_context import InContext, InContextParams

    rows = [
        {"prompt": "The capital of {} is", "subject": s, "target_new": t}
        for s, t in (("France", "Rome"), ("Peru", "Oslo"), ("Chad", "Lima"))
    ]
    requests = load_requests(rows)
    editor = InContext(InContextParams(k=2, threshold=0.3), embedder=FakeEmbedder())
    model = torch.nn.Linear(2, 2)  # untouched; undo only needs named_parameters
    results = [editor.edit(model, None, [r]) for r in requests]
    shown = results[0].prompt_fn("The capital of Peru is")  # an earlier result sees later facts (live store)
    assert shown.endswith("New fact: The capital of Peru is Oslo.\nThe capital of Peru is")
    assert shown.count("New fact:") == 2
    assert results[-1].prompt_fn("Owls hunt at night") == "Owls hunt at night"  # below the threshold
    results[1].undo(model)
    assert "Peru is Oslo" not in results[-1].prompt_fn("The capital of Peru is")
    for res in (results[2], results[0]):
        res.undo(model)
    assert editor.texts == [] and results[0].prompt_fn("The capital of Peru is") == "The capital of Peru is"


@pytest.mark.slow  # loading all-MiniLM-L6-v2 takes about 10 s
def test_in_context_retrieves_the_fact_for_edit_and_paraphrase(fact_setup):
    model, tok, facts = fact_setup.load(), fact_setup.tok, fact_setup.facts
    before = snapshot(model)
    subjects = list(facts)[:N_EDITS]
    requests = load_requests(fact_requests(facts, subjects))
    editor = build_editor("in_context", {"k": 1})
    results = [editor.edit(model, tok, [r]) for r in requests]
    assert_weights_equal(model, before)
    fn = results[-1].prompt_fn
    fact = {r.subject: f"New fact: {r.text} {r.target_new}." for r in requests}
    edit_hits = sum(fn(r.text) == f"{fact[r.subject]}\n{r.text}" for r in requests)
    para_hits = sum(fn(p) == f"{fact[r.subject]}\n{p}" for r in requests for p in r.paraphrases)
    assert edit_hits == N_EDITS and para_hits == 2 * N_EDITS
    # with a threshold, unrelated text is left alone; the invented names share syllables, so prompts about
    # other invented subjects often pass 0.5 too (reported, not asserted)
    editor.params = editor.params.model_copy(update={"threshold": 0.5})
    assert fn("Owls hunt at night and sleep by day.") == "Owls hunt at night and sleep by day."
    unrelated = [t.replace("{}", s) for s in list(facts)[N_EDITS:] for t in FACT_TEMPLATES]
    unchanged = sum(fn(p) == p for p in unrelated)
    print(
        f"\nin-context (k=1) edit prompts {edit_hits}/{N_EDITS}, paraphrases {para_hits}/{2 * N_EDITS}; "
        f"threshold 0.5: unedited subjects' prompts unchanged {unchanged}/{len(unrelated)}"
    )
    editor.params = editor.params.model_copy(update={"threshold": None})
    for res in reversed(results[1:]):
        res.undo(model)
    assert fact[requests[1].subject] not in fn(requests[1].text)
    assert fn(requests[0].text) == f"{fact[requests[0].subject]}\n{requests[0].text}"
    assert_weights_equal(model, before)
