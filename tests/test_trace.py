"""Causal tracing (Meng et al. 2022) on tiny models where the answer is known: the tiny-facts llama (facts
recalled at the subject's last token, which ends the prompt) and ROME edits planted at a chosen layer."""

import contextlib
import json

import pytest
import torch

import lifelong.editing.trace as tr
from lifelong.editing import build_editor, load_requests
from lifelong.editing.trace import GROUPS, group_positions, pick_layer, pick_layers, trace
from lifelong.testing import fact_requests

LAST_SUBJECT = GROUPS.index("last subject token")


def rows(facts, subjects, prompt="The home of {}"):
    return [{"prompt": prompt, "subject": s, "target_true": facts[s]} for s in subjects]


# ---- the mechanism ----------------------------------------------------------------------------------------
def test_corruption_restoration_and_positions_before_the_subject(fact_setup):
    model, tok = fact_setup.load(), fact_setup.tok
    subjects = list(fact_setup.facts)[:6]
    wrong = {"prompt": "The home of {}", "subject": subjects[0], "target_true": "Quito"}
    if fact_setup.facts[subjects[0]] == "Quito":
        wrong["target_true"] = "Lima"
    out = trace(model, tok, rows(fact_setup.facts, subjects) + [wrong], scope="all", window=1, use_cache=False)
    hidden = out["kinds"]["hidden"]
    assert hidden["facts_used"] == 6  # the model knows its facts; the wrong one is skipped, with its answer
    (skip,) = hidden["facts_skipped"]
    assert skip["target"] == wrong["target_true"] and skip["predicted"].strip() == fact_setup.facts[subjects[0]]
    for f in hidden["per_fact"]:
        te = f["p_clean"] - f["p_corrupted"]
        assert f["p_clean"] > 0.9 and f["p_corrupted"] < 0.5 * f["p_clean"]  # noise on the subject hides the fact
        start, last = f["subject_range"]
        assert start == last == len(f["tokens"]) - 1  # one-token subject ending the prompt
        # the clean state of the last subject token at the first layer carries everything: total recovery
        assert f["effects"][f["positions"].index(last)][0] == pytest.approx(te, abs=1e-5)
    for kind in ("hidden", "mlp", "attn"):
        for f in out["kinds"][kind]["per_fact"]:
            before = [row for t, row in zip(f["positions"], f["effects"]) if t < f["subject_range"][0]]
            assert len(before) == 4 and max(abs(v) for row in before for v in row) < 1e-6
    # measured: mean total effect 0.93; the MLP at layer 0 restores 0.97 of it (ROME edits layer 0 here)
    assert hidden["total_effect"] > 0.5
    assert hidden["indirect_effect"][LAST_SUBJECT][0] == pytest.approx(hidden["total_effect"], abs=1e-5)


def test_multi_token_subject_groups_and_last_layer_on_gpt2(fact_setup):
    """GPT-2 (Conv1D, tuple outputs), 3-token subjects with text after them: the paper's six groups are
    filled, the final layer's state at the last token decides P(o) (full recovery), and skipping the
    layers before a restoration gives the same numbers as running them."""
    from transformers import AutoModelForCausalLM

    from lifelong.models.tiny import tiny_config

    tok, names = fact_setup.tok, list(fact_setup.facts)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_config("gpt2", vocab_size=len(tok), n_layer=3)).eval()
    facts = []
    for i in range(3):  # facts this random model "knows": its own greedy next word
        f = {"prompt": "The home of {} is a town and", "subject": " ".join(names[3 * i : 3 * i + 3])}
        ids = tok(f["prompt"].replace("{}", f["subject"]))["input_ids"]
        with torch.no_grad():
            f["target_true"] = tok.decode([int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())])
        facts.append(f)
    out = trace(model, tok, facts, ["hidden", "attn"], window=1, samples=3, use_cache=False)
    h = out["kinds"]["hidden"]
    assert h["facts_used"] == 3 and h["counts"][:4] == [3, 3, 3, 3] and all(c > 0 for c in h["counts"])
    for f in h["per_fact"]:
        assert f["subject_range"] == [4, 6] and len(f["tokens"]) == 11
        assert f["effects"][-1][-1] == pytest.approx(f["p_clean"] - f["p_corrupted"], abs=1e-6)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tr, "_skipped", lambda *a: contextlib.nullcontext())
        full = trace(model, tok, facts, ["hidden", "attn"], window=1, samples=3, use_cache=False)
    for kind in ("hidden", "attn"):
        for a, b in zip(out["kinds"][kind]["per_fact"], full["kinds"][kind]["per_fact"]):
            assert torch.allclose(torch.tensor(a["effects"]), torch.tensor(b["effects"]), atol=1e-5)


def test_group_positions_follow_the_paper():
    # "<bos> The Space Needle is in downtown": subject tokens 2-3, then 4 5 6, last token 6
    assert group_positions(2, 3, 7) == [[2], [], [3], [4], [5], [6]]
    assert group_positions(1, 4, 9) == [[1], [2, 3], [4], [5], [6, 7], [8]]
    assert group_positions(4, 4, 5) == [[4], [], [4], [], [], [4]]  # one-token subject ending the prompt


# ---- picking the layer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [1, 3])
def test_planted_rome_edit_is_found_at_its_layer(fact_setup, layer):
    """A ROME edit written into layer L moves the edited facts to new objects; tracing the new facts, the
    MLP indirect effect at the last subject token peaks at L (the facts the model learned peak at 0)."""
    model, tok = fact_setup.load(), fact_setup.tok
    reqs = load_requests(fact_requests(fact_setup.facts, list(fact_setup.facts)[:6]))
    editor = build_editor("rome", dict(layer=layer, n_prefixes=5, stats=fact_setup.stats))
    for r in reqs:
        editor.edit(model, tok, [r])
    planted = [{"prompt": r.prompt, "subject": r.subject, "target_true": r.target_new} for r in reqs]
    res = trace(model, tok, planted, ["mlp"], window=1, scope="last_subject", use_cache=False)["kinds"]["mlp"]
    row = res["indirect_effect"][LAST_SUBJECT]
    # measured (6 edits, 4-5 land): layer 1 -> [0.14, 0.62, 0.00, 0.00]; layer 3 -> [0.20, 0.18, 0.07, 0.75]
    assert res["facts_used"] >= 3 and res["picked_layer"] == layer
    assert row[layer] > 2 * max(v for i, v in enumerate(row) if i != layer)
    assert pick_layer(model, tok, planted, window=1, use_cache=False) == layer
    assert layer in pick_layers(model, tok, planted, n=2, use_cache=False)


def test_pick_layers_returns_a_full_window(fact_setup):
    model, tok = fact_setup.load(), fact_setup.tok
    facts = rows(fact_setup.facts, list(fact_setup.facts)[:4])
    for n in (1, 2, 3, 4):
        got = pick_layers(model, tok, facts, n=n, samples=2, use_cache=False)
        assert len(got) == n and got == list(range(got[0], got[0] + n)) and 0 <= got[0] <= 4 - n
    with pytest.raises(ValueError, match="cannot pick 5 layers: the model has 4"):
        pick_layers(model, tok, facts, n=5)


def test_results_are_cached_by_weights(fact_setup, tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path))
    model, tok = fact_setup.load(), fact_setup.tok
    facts = rows(fact_setup.facts, list(fact_setup.facts)[:4])
    calls = []
    first = trace(model, tok, facts, window=1, samples=3, progress=lambda d, t: calls.append(d))
    assert calls and len(list((tmp_path / "trace").glob("*.json"))) == 3  # one file per kind
    calls.clear()
    again = trace(model, tok, facts, window=1, samples=3, progress=lambda d, t: calls.append(d))
    assert not calls and again == first
    # a layer pick reads the full trace instead of tracing again
    assert tr.pick_layer(model, tok, facts, window=1, samples=3) == first["kinds"]["mlp"]["picked_layer"]
    assert len(list((tmp_path / "trace").glob("*.json"))) == 3
    with torch.no_grad():  # other weights: traced again
        model.model.layers[1].mlp.down_proj.weight.mul_(0.5)
    trace(model, tok, facts, ["mlp"], window=1, samples=3, progress=lambda d, t: calls.append(d))
    assert calls


def test_shipped_facts_and_the_error_when_none_is_known(fact_setup):
    facts = tr.load_facts()
    assert len(facts) >= 30 and all(f.target and "{}" in f.prompt for f in facts)
    with pytest.raises(ValueError, match=r"gets none of the \d+ facts right.*give facts it knows"):
        tr.traced_layer(fact_setup.load(), fact_setup.tok)  # invented names: it knows no real fact


# ---- the command -----------------------------------------------------------------------------------------
def test_cli_trace_writes_json_and_report(fact_setup, tmp_path, monkeypatch, capsys):
    from lifelong.cli import main

    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps(r) + "\n" for r in rows(fact_setup.facts, list(fact_setup.facts)[:5])))
    out = tmp_path / "out"
    argv = ["trace", str(facts), "--model", fact_setup.path, "--out", str(out), "--window", "1", "--samples", "3"]
    assert main(argv) == 0
    data = json.loads((out / "trace.json").read_text())
    assert set(data["kinds"]) == {"hidden", "mlp", "attn"} and data["layers"] == 4
    for r in data["kinds"].values():
        assert len(r["indirect_effect"]) == 6 and len(r["indirect_effect"][LAST_SUBJECT]) == 4
        assert r["facts_used"] == 5 and r["facts_skipped"] == [] and r["total_effect"] > 0.5
    assert data["picked_layer"]["mlp"] == data["kinds"]["mlp"]["picked_layer"]
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 3 and "Picked layers" in page
    assert "mlp: picked layer" in capsys.readouterr().out
    assert main(argv) == 2  # --out is not empty
    assert "not empty" in capsys.readouterr().err

    bad = tmp_path / "bad.jsonl"
    good = json.dumps(rows(fact_setup.facts, list(fact_setup.facts)[:1])[0])
    for row, msg in [
        ({"prompt": "The home of {}", "subject": "Kalo"}, "line 2: field 'target_true' is missing; causal tracing"),
        ({"prompt": "The home of Kalo", "subject": "Kalo", "target_true": "Rome"}, "line 2: field 'prompt' must"),
    ]:
        bad.write_text(good + "\n" + json.dumps(row) + "\n")
        assert main(["trace", str(bad), "--model", fact_setup.path, "--out", str(tmp_path / "o2")]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
