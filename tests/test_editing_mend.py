"""MEND behaviour on the session's tiny fact model: a trained editor generalises to held-out edits (and the
training is what makes it work), keeps neighbours, undoes exactly, and is saved once and reused."""

import json
import random
import types

import pytest
import torch

from lifelong.editing import EDITORS, build_editor, load_requests
from lifelong.editing.mend import MendEditor, MendParams
from lifelong.testing import fact_requests


def probs(model, tok, text):
    with torch.no_grad():
        return torch.softmax(model(**tok(text, return_tensors="pt")).logits[0, -1], -1)


def tid(tok, word):
    return tok(" " + word, add_special_tokens=False)["input_ids"][0]


@pytest.fixture(scope="module")
def mend(fact_setup, tmp_path_factory):
    """An editor trained on 60 edits (3 random new targets each) of 20 subjects; 16 held-out edits (2 random
    new targets each) of 8 other subjects."""
    root = tmp_path_factory.mktemp("mend")
    facts, tok = fact_setup.facts, fact_setup.tok
    subjects = list(facts)
    random.Random(0).shuffle(subjects)
    train, held = subjects[:20], subjects[20:28]
    rows = [r for s in range(3) for r in fact_requests({x: facts[x] for x in train}, train, seed=s)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = fact_setup.load()
    editor = MendEditor(
        MendParams(editor_path=str(root / "editor"), train_requests=str(root / "train.jsonl"), steps=400, c_loc=0.5)
    )
    editor.editor_for(model, tok)  # trains and saves
    identity = MendEditor(MendParams(editor_path=str(root / "identity"), steps=0), train_requests=rows)
    return types.SimpleNamespace(
        model=model,
        tok=tok,
        editor=editor,
        identity=identity,
        root=root,
        held=load_requests([r for s in (100, 101) for r in fact_requests(facts, held, seed=s)]),
    )


def evaluate(editor, model, tok, requests):
    """Edit each request alone, measure, undo (checking the undo is exact)."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    top1 = rise = kept = n_neigh = 0
    p_new = []
    for r in requests:
        p0 = probs(model, tok, r.text)[tid(tok, r.target_new)].item()
        result = editor.edit(model, tok, [r])
        assert set(result.deltas) == set(editor.names(model))
        pr = probs(model, tok, r.text)
        p_new.append(pr[tid(tok, r.target_new)].item())
        rise += p_new[-1] > p0
        top1 += int(pr.argmax()) == tid(tok, r.target_new)
        for nb in r.neighborhood:
            kept += int(probs(model, tok, nb["prompt"]).argmax()) == tid(tok, nb["target"])
            n_neigh += 1
        result.undo(model)
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # bit for bit
    n = len(requests)
    return {"top1": top1 / n, "rise": rise / n, "p_new": sum(p_new) / n, "kept": kept / n_neigh}


def test_trained_editor_edits_held_out_subjects_and_training_matters(mend):
    trained = evaluate(mend.editor, mend.model, mend.tok, mend.held)
    raw = evaluate(mend.identity, mend.model, mend.tok, mend.held)  # untrained g: one raw gradient step
    # measured here: trained top1 14/16, mean p_new 0.76, neighbours kept 0.86 (69/80); raw gradient top1 0/16,
    # p_new 3e-4 (kept 1.0). Over 5 training seeds (8 edits per draw): top1 0.62-0.88, p_new 0.58-0.75,
    # kept 0.85-0.95; the misses are mostly subjects whose old answer (Lima) is rare among the training edits.
    assert trained["rise"] == 1.0 and trained["top1"] >= 10 / 16 and trained["p_new"] > 0.5, trained
    assert trained["kept"] >= 0.75, trained
    assert raw["top1"] <= 1 / 8 and trained["p_new"] > raw["p_new"] + 0.45, (trained, raw)
    assert mend.identity.trainings == 1 and mend.editor.trainings == 1


def test_saved_editor_is_loaded_without_training(mend):
    path = mend.root / "editor"
    assert sorted(p.name for p in path.iterdir()) == ["editor.json", "editor.safetensors"]
    meta = json.loads((path / "editor.json").read_text())
    assert meta["train_edits"] == 60 and meta["steps"] == 400
    again = build_editor("mend", {"editor_path": str(path)})  # no training requests at all
    assert isinstance(again, MendEditor) and EDITORS.get("mend") is MendEditor
    r = mend.held[0]
    first = mend.editor.edit(mend.model, mend.tok, [r])
    first.undo(mend.model)
    second = again.edit(mend.model, mend.tok, [r])
    second.undo(mend.model)
    assert again.trainings == 0
    assert first.deltas.keys() == second.deltas.keys()
    assert all(torch.equal(first.deltas[n], second.deltas[n]) for n in first.deltas)


def test_default_path_is_keyed_by_model_and_survives_mend_edits(fact_setup, tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path))
    model, tok = fact_setup.load(), fact_setup.tok
    reqs = load_requests(fact_requests(fact_setup.facts, list(fact_setup.facts)[:3]))
    with pytest.raises(ValueError, match="train_requests"):
        MendEditor(MendParams()).edit(model, tok, reqs[:1])
    MendEditor(MendParams(steps=2), train_requests=reqs).edit(model, tok, reqs[:2])  # batched: 2 in one update
    saved = list((tmp_path / "mend").iterdir())
    assert len(saved) == 1 and (saved[0] / "editor.safetensors").is_file()
    later = MendEditor(MendParams())  # the model is edited now, but only in the weights MEND edits
    later.edit(model, tok, reqs[2:])
    assert later.trainings == 0


def test_gpt2_conv1d_layout(tmp_path):
    from lifelong.testing import tiny_gpt2, tiny_tokenizer

    model, tok = tiny_gpt2().eval(), tiny_tokenizer()
    reqs = load_requests(
        [
            {"prompt": "ab {} is", "subject": "cd", "target_new": "ef"},
            {"prompt": "gh {} is", "subject": "ij", "target_new": "kl"},
        ]
    )
    editor = MendEditor(MendParams(editor_path=str(tmp_path / "e"), steps=3, layers=[1]), train_requests=reqs)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = editor.edit(model, tok, reqs[:1])
    (name,) = result.deltas
    assert name == "transformer.h.1.mlp.c_proj.weight" and result.changed_parameters() > 0
    result.undo(model)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
