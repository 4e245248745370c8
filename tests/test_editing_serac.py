"""Behaviour of SERAC: an edit memory, a trained scope classifier (real all-MiniLM-L6-v2 embeddings) and the
base model conditioned on the retrieved edit as counterfactual model; out-of-scope inputs reach the base
model unchanged.

The base model: a tiny llama trained here on the 32 synthetic facts (3 phrasings) and to follow a stated fact
("The home of X Rome . The residence of X" -> Rome), as an instruction-tuned model follows its context;
the session's fact model never saw a fact in its context and ignores one.
"""

import io
import json
import random

import pytest
import torch

from lifelong.editing import EDITORS, load_requests
from lifelong.editing.protocol import run_protocol
from lifelong.testing import FACT_TEMPLATES, OBJECTS, fact_requests, tiny_facts

CF = {"fact_template": "{} .", "separator": " "}
"""The tiny model's format of a stated fact before the question (its vocabulary has no "New fact:")."""


@pytest.fixture(scope="module")
def embedder():
    from lifelong.memory.embed import Embedder

    return Embedder()


@pytest.fixture(scope="module")
def reader():
    """A 2-layer llama that knows every fact and answers from a fact stated before the question (about 10 s)."""
    from transformers import AutoModelForCausalLM

    from lifelong.models.tiny import tiny_config

    facts, tok = tiny_facts()
    rng = random.Random(0)

    def phrase(s):
        return rng.choice(FACT_TEMPLATES).replace("{}", s)

    def item():
        s = rng.choice(list(facts))
        if rng.random() < 0.5:
            return phrase(s), facts[s]
        new = rng.choice([o for o in OBJECTS if o != facts[s]])
        return f"{phrase(s)} {new} . {phrase(s)}", new

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=len(tok), num_hidden_layers=2))
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        for _ in range(150):  # the answer token's loss only
            enc = [tok(p)["input_ids"] + [tok.convert_tokens_to_ids(a)] for p, a in (item() for _ in range(64))]
            width = max(map(len, enc))
            ids = torch.tensor([e + [tok.pad_token_id] * (width - len(e)) for e in enc])
            labels = torch.full_like(ids, -100)
            for r, e in enumerate(enc):
                labels[r, len(e) - 1] = e[-1]
            model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), labels=labels).loss.backward()
            opt.step()
            opt.zero_grad()
    return facts, tok, model.eval()


def top1(model, tok, prompt):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1]
    return tok.convert_ids_to_tokens(int(logits.argmax())), logits


def serac(embedder, **params):
    from lifelong.editing.serac import Serac, SeracParams

    return Serac(SeracParams(**params), embedder=embedder)


def routing_accuracy(decide, edited, unedited):
    """Share of right decisions: every edited request's prompt and paraphrases in scope of its own edit, every
    unedited subject's prompt (all phrasings) out of scope of all edits."""
    inside = [(p, r) for r in edited for p in [r.text, *r.paraphrases]]
    outside = [t.replace("{}", s) for s in unedited for t in FACT_TEMPLATES]
    right = sum(decide(p) == r.subject for p, r in inside) + sum(decide(p) is None for p in outside)
    return right / (len(inside) + len(outside))


def test_registered_as_weight_free():
    assert not EDITORS.get("serac").changes_weights


@pytest.fixture(scope="module")
def scope_file(tmp_path_factory):
    """Training requests for the scope classifier: the first 16 subjects (never edited below)."""
    facts, _ = tiny_facts()
    path = tmp_path_factory.mktemp("serac") / "scope.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in fact_requests(facts, list(facts)[:16])))
    return str(path)


def test_scope_classifier_is_trained_and_beats_the_cosine_rule(scope_file, embedder):
    facts, _ = tiny_facts()
    subjects = list(facts)
    edited = load_requests(fact_requests(facts, subjects[16:24]))  # subjects the classifier never saw
    figures = {}
    for name, params in (("in-domain", {"train": scope_file}), ("built-in", {})):
        editor = serac(embedder, **params)
        result = editor.edit(torch.nn.Linear(1, 1), None, edited)
        m = result.info["scope"][0]
        assert m["heldout_pairs"] > 0 and m["train_pairs"] > m["heldout_pairs"]

        def trained(p, editor=editor):
            prob, j = editor.scope(p)
            return editor.subjects[j] if prob >= 0.5 else None

        def cosine(p, editor=editor):  # the untrained rule: the most similar edit descriptor, if cosine >= 0.5
            v = embedder([p])[0]
            sims = [float(v @ f) for f in editor.fact_vecs]
            j = max(range(len(sims)), key=sims.__getitem__)
            return editor.subjects[j] if sims[j] >= 0.5 else None

        acc, base = (routing_accuracy(f, edited, subjects[24:]) for f in (trained, cosine))
        figures[name] = (m, acc, base)
        print(
            f"\nSERAC scope classifier, {name} ({m['train_pairs']} pairs): held-out pairs "
            f"{m['heldout_accuracy']:.3f} vs cosine>=0.5 {m['cosine_accuracy']:.3f} (tuned cosine "
            f"{m['tuned_cosine_accuracy']:.3f}); routing on unseen subjects {acc:.3f} vs cosine>=0.5 {base:.3f}"
        )
    m, acc, base = figures["in-domain"]
    assert m["source"] == scope_file and figures["built-in"][0]["source"] == "built-in"
    assert m["heldout_accuracy"] >= m["cosine_accuracy"] and m["heldout_accuracy"] >= 0.95  # measured 1.0, 0.955
    assert acc > base and acc >= 0.9  # measured 0.938 vs 0.854
    m, acc, base = figures["built-in"]  # trained on real-world facts, applied to invented names
    assert m["heldout_accuracy"] >= m["cosine_accuracy"] and acc > base  # measured 1.0 vs 0.958; routing 0.938 vs 0.854


def test_serac_answers_in_scope_with_the_edit_and_the_rest_exactly_as_the_base_model(reader, embedder, scope_file):
    facts, tok, model = reader
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    subjects = list(facts)
    requests = load_requests(fact_requests(facts, subjects[16:22]))
    probes = [t.replace("{}", s) for s in subjects for t in FACT_TEMPLATES]
    pre = {p: top1(model, tok, p)[1] for p in probes}
    editor = serac(embedder, train=scope_file, **CF)
    out = run_protocol(model, tok, editor, requests, "sequential", bootstrap=0, quiet=True)
    s = {k: v["mean"] for k, v in out["summary"].items()}
    fn = out["results"][-1].prompt_fn
    edited = {r.subject for r in requests}
    outside = [p for p in probes if p.split()[-1] not in edited]
    to_base = [p for p in outside if fn(p) == p]
    exact = sum(torch.equal(top1(model, tok, p)[1], pre[p]) for p in to_base)
    print(
        f"\nSERAC 6 edits: efficacy {s['efficacy[top1]']:.0f}, generalization {s['generalization[top1]']:.0f}, "
        f"locality {s['locality[top1]']:.0f} (top1); unedited subjects' prompts to the base model "
        f"{len(to_base)}/{len(outside)}, bit-exact {exact}"
    )
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    # in scope: the counterfactual input carries the request's own edit, and the answer is the new target
    for r in requests:
        for p in [r.text, *r.paraphrases]:
            assert fn(p) == f"{r.text} {r.target_new} . {p}"
    assert s["efficacy[top1]"] == 100 and s["generalization[top1]"] == 100
    # out of scope: the prompt reaches the base model unchanged, so its answer is the base model's, bit for bit
    assert exact == len(to_base) >= len(outside) - 4  # measured 76/78
    for res in reversed(out["results"]):
        res.undo(model)
    assert editor.facts == [] and all(fn(p) == p for p in probes)


def test_serac_state_resumes_the_memory_and_the_classifier(embedder):
    facts, _ = tiny_facts()
    requests = load_requests(fact_requests(facts, list(facts)[:4]))
    editor = serac(embedder, **CF)
    editor.edit(torch.nn.Linear(1, 1), None, requests)
    buf = io.BytesIO()
    torch.save(editor.state_dict(), buf)
    buf.seek(0)
    again = serac(embedder, **CF)
    again.load_state_dict(torch.load(buf, weights_only=True), None)
    prompts = [t.replace("{}", s) for s in list(facts)[:8] for t in FACT_TEMPLATES]
    assert [again.rewrite(p) for p in prompts] == [editor.rewrite(p) for p in prompts]
    assert again.metrics == editor.metrics
    with pytest.raises(ValueError, match="missing"):
        again.load_state_dict({"facts": []}, None)


def test_scope_training_data_errors_say_what_to_give(tmp_path, embedder):
    facts, _ = tiny_facts()
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps(fact_requests(facts, list(facts)[:1])[0]) + "\n")
    with pytest.raises(ValueError, match=r"at least 2 training requests .* has 1\); give more in `train`"):
        serac(embedder, train=str(one)).edit(torch.nn.Linear(1, 1), None, load_requests([one_row(facts)]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "The home of", "subject": "Kalo", "target_new": "Rome"}\n')
    with pytest.raises(ValueError, match=f"{bad} line 1"):
        serac(embedder, train=str(bad)).edit(torch.nn.Linear(1, 1), None, load_requests([one_row(facts)]))


def one_row(facts):
    return fact_requests(facts, list(facts)[1:2])[0]
