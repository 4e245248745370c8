"""Knowledge editing on a tiny llama trained in the session on synthetic facts (`fact_setup`)."""

import json

import pytest
import torch

from lifelong.data.edit_requests import subject_position
from lifelong.editing import build_editor, edit, load_requests, parse_request
from lifelong.editing.metrics import harmonic, ngram_entropy, summarize
from lifelong.editing.protocol import run_protocol
from lifelong.testing import fact_requests

ROME = dict(layer=0, n_prefixes=5)  # measured on the fact model: see docs/editing.md


def requests(fs, subjects, seed=0):
    return load_requests(fact_requests(fs.facts, subjects, seed=seed))


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def same(model, snap):
    return all(torch.equal(p, snap[n]) for n, p in model.named_parameters())


# ---- request format ---------------------------------------------------------------------------------
def test_request_errors_name_the_line_and_field(tmp_path, fact_setup):
    good = fact_requests(fact_setup.facts, list(fact_setup.facts)[:1])[0]
    bad = [dict(good, prompt="The home of Kalo"), dict(good, target_new="  "), dict(good, colour="red")]
    path = tmp_path / "edits.jsonl"
    for row, msg in zip(bad, ["must contain exactly one {}", "'target_new' must be a non-empty", "unknown field"]):
        path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
        with pytest.raises(ValueError, match=msg) as e:
            load_requests(path)
        assert f"{path} line 2" in str(e.value)
    with pytest.raises(ValueError, match="write it as 'The home of {}'"):
        parse_request(dict(good, prompt=f"The home of {good['subject']}"))


def test_subject_merged_with_following_text_is_an_error():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "The": 1, "home": 2, "of": 3, "Kalo": 4}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")
    ids, pos = subject_position(tok, "The home of {} today", "Kalo")
    assert ids[pos] == 4
    with pytest.raises(ValueError, match="splits subject 'Kalo'.*no token ends the subject"):
        subject_position(tok, "The home of {}'s", "Kalo", "edits.jsonl line 3")


# ---- ROME --------------------------------------------------------------------------------------------
def test_rome_edits_generalize_and_keep_neighbours(fact_setup):
    model = fact_setup.load()
    subjects = list(fact_setup.facts)[:6]
    editor = build_editor("rome", dict(ROME, stats=fact_setup.stats))
    out = run_protocol(model, fact_setup.tok, editor, requests(fact_setup, subjects), "rollback", bootstrap=0)
    s = {k: v["mean"] for k, v in out["summary"].items()}
    # measured: efficacy 100, generalization 100 (both variants), neighbours keep their answer 97 (top1)
    assert s["efficacy[top1]"] >= 80 and s["efficacy[cf_prob]"] >= 80
    assert s["generalization[top1]"] >= 75
    assert s["locality[top1]"] >= 80


def test_rome_undo_is_bit_exact_and_deltas_are_rank_one(fact_setup):
    model = fact_setup.load()
    before = snapshot(model)
    reqs = requests(fact_setup, list(fact_setup.facts)[6:9])
    editor = build_editor("rome", dict(ROME, stats=fact_setup.stats))
    results = [editor.edit(model, fact_setup.tok, [r]) for r in reqs]
    assert not same(model, before)
    for res in results:
        (delta,) = res.deltas.values()
        sv = torch.linalg.svdvals(delta.double())
        assert sv[1] < 1e-5 * sv[0]  # rank one up to float32 rounding
    for res in reversed(results):
        res.undo(model)
    assert same(model, before)
    with pytest.raises(ValueError, match="already undone"):
        results[0].undo(model)


def test_key_statistics_are_cached_on_disk(fact_setup, tmp_path, monkeypatch):
    from lifelong.editing.stats import StatsParams, second_moments

    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path))
    model = fact_setup.load()
    p = StatsParams(**fact_setup.stats)
    log1, log2, log3 = {}, {}, {}
    c1 = second_moments(model, fact_setup.tok, [0], p, log1)[0]
    c2 = second_moments(model, fact_setup.tok, [0], p, log2)[0]
    assert log1["computed"] == 1 and log2 == dict(log2, hits=1, computed=0)
    assert torch.equal(c1, c2) and len(list((tmp_path / "edit_stats").glob("*.safetensors"))) == 1
    with torch.no_grad():  # another model (an earlier layer changed): its own statistics
        model.model.embed_tokens.weight[5] += 1.0
    second_moments(model, fact_setup.tok, [0], p, log3)
    assert log3["computed"] == 1
    assert torch.allclose(c1, c1.T) and torch.linalg.eigvalsh(c1.double()).min() > -1e-5


def test_rome_on_gpt2_conv1d_hits_the_value_exactly():
    """GPT-2 stores (in, out); the update must still give W' k = W k + delta at the edit prompt."""
    from lifelong.editing.common import capture, mlp_out
    from lifelong.editing.rome import RomeParams
    from lifelong.testing import tiny_gpt2, tiny_tokenizer

    tok, model = tiny_tokenizer(), tiny_gpt2(n_layer=2).eval()
    req = parse_request({"prompt": "{} lives in", "subject": "abc", "target_new": "Rome", "target_true": "Oslo"})
    ids, pos = subject_position(tok, req.prompt, req.subject)
    module = mlp_out(model, 0)
    x = torch.tensor([ids])
    with capture(module, "output") as seen:
        model(input_ids=x)
    before = seen[0][0, pos].clone()
    rows = [{"text": "some text about things " * 3}] * 40
    params = dict(layer=0, n_prefixes=2, v_steps=5, stats={"corpus": {"rows": rows}, "tokens": 2000})
    res = edit(model, tok, [req], "rome", **params)
    with capture(module, "output") as seen:
        model(input_ids=x)
    (name,) = res.deltas
    assert name == "transformer.h.0.mlp.c_proj.weight" and res.deltas[name].shape == module.weight.shape
    assert RomeParams().layer == "auto" and res.info["layer"] == [0]
    got = seen[0][0, pos] - before
    assert got.norm() > 0 and torch.allclose(got.norm(), torch.tensor(res.info["delta_norm"][0]), rtol=1e-3)


# ---- MEMIT and FT-L ----------------------------------------------------------------------------------
def test_memit_batch_edits_win_while_neighbours_keep(fact_setup):
    model = fact_setup.load()
    subjects = list(fact_setup.facts)[:6]
    editor = build_editor(
        "memit",
        dict(
            layers=[0, 1],
            mom2_update_weight=20.0,
            clamp_norm_factor=10,
            v_steps=40,
            n_prefixes=5,
            stats=fact_setup.stats,
        ),
    )
    out = run_protocol(
        model, fact_setup.tok, editor, requests(fact_setup, subjects), "sequential", group=6, bootstrap=0
    )
    s = {k: v["mean"] for k, v in out["summary"].items()}
    # measured, one batch of 6 with the start-of-text keys (the default): efficacy 100, paraphrases 100,
    # neighbours 96.7 (top1); with lambda 1 locality fell to 70, and the paper's keys alone (start_key false,
    # lambda 1) gave 83 / 83 / 100
    assert s["efficacy[top1]"] >= 90 and s["generalization[top1]"] >= 90
    assert s["locality[top1]"] >= 85
    assert set(out["results"][0].deltas) == {
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
    }


def test_ft_l_stays_inside_its_norm_ball(fact_setup):
    model = fact_setup.load()
    reqs = requests(fact_setup, list(fact_setup.facts)[:2])
    from lifelong.editing.metrics import score_targets

    before = score_targets(model, fact_setup.tok, [(r.text, r.target_new) for r in reqs])
    res = edit(model, fact_setup.tok, reqs, "ft", layer=1, norm_constraint=0.02, lr=0.01, steps=20)
    after = score_targets(model, fact_setup.tok, [(r.text, r.target_new) for r in reqs])
    (d,) = res.deltas.values()
    assert float(d.abs().max()) <= 0.02 + 1e-6
    assert all(a["logp"] > b["logp"] + 1.0 for a, b in zip(after, before))


# ---- metrics and protocols ---------------------------------------------------------------------------
def test_metric_helpers():
    assert ngram_entropy("a a a a a a") == 0.0
    assert ngram_entropy("a b c d e f g") > ngram_entropy("a b a b a b a")
    assert harmonic([100.0, 50.0, 100.0]) == pytest.approx(75.0)
    assert harmonic([10.0, None, 5.0]) is None
    s = summarize([{"efficacy[top1]": 100.0, "generalization[top1]": 50.0, "locality[top1]": 100.0}] * 3, 100)
    assert s["score[top1]"]["mean"] == pytest.approx(75.0) and "score[cf_prob]" not in s


def test_sequential_protocol_rescoring_and_undo(fact_setup):
    model = fact_setup.load()
    before = snapshot(model)
    reqs = requests(fact_setup, list(fact_setup.facts)[10:14])
    editor = build_editor("rome", dict(ROME, stats=fact_setup.stats))
    out = run_protocol(model, fact_setup.tok, editor, reqs, "sequential", every=2, bootstrap=0)
    assert [r["edits"] for r in out["retention"]] == [2, 4]
    assert all("efficacy[top1]" in r for r in out["retention"])
    assert len(out["per_request"]) == 4 and len(out["results"]) == 4
    for res in reversed(out["results"]):
        res.undo(model)
    assert same(model, before)


def test_cli_edit_writes_model_deltas_and_metrics(fact_setup, tmp_path, capsys):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from lifelong.cli import main

    path = tmp_path / "edits.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in fact_requests(fact_setup.facts, list(fact_setup.facts)[:2])))
    out = tmp_path / "out"
    args = [
        str(path),
        "--model",
        fact_setup.path,
        "--method",
        "rome",
        "--out",
        str(out),
        "layer=0",
        "n_prefixes=5",
        f"stats.corpus.path={fact_setup.corpus}",
        "stats.tokens=20000",
    ]
    assert main(["edit"] + args) == 0
    assert "efficacy[top1]" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["efficacy[top1]"]["mean"] >= 50
    assert len((out / "per_request.jsonl").read_text().splitlines()) == 2
    edited = AutoModelForCausalLM.from_pretrained(str(out / "model"))
    base = fact_setup.load()
    deltas = load_file(str(out / "deltas.safetensors"))
    for name, p in base.named_parameters():
        want = dict(edited.named_parameters())[name]
        assert torch.allclose(p + deltas[name], want, atol=1e-6) if name in deltas else torch.equal(p, want)
    assert metrics["model_written"] and "No model written" not in (out / "metrics.md").read_text()
    assert main(["edit"] + args) == 2  # never overwrites
    assert "holds a finished edit run" in capsys.readouterr().err
    assert (
        main(
            ["edit", str(path), "--model", fact_setup.path, "--method", "rome", "--out", str(tmp_path / "o2"), "layr=0"]
        )
        == 2
    )
    assert "rome.layr: unknown parameter" in capsys.readouterr().err
    assert main(["edit"] + args[:6] + [str(tmp_path / "o3")] + args[7:] + ["--protocol", "rollback"]) == 0
    assert not (tmp_path / "o3" / "model").exists()
    assert "undone after scoring (rollback)" in (tmp_path / "o3" / "metrics.md").read_text()


def test_statistics_corpus_offline_error_says_what_to_do(monkeypatch):
    from lifelong.editing.stats import StatsParams, _texts

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="set `stats.corpus.path` to a local text file"):
        next(_texts(StatsParams().corpus))
    rows = {"corpus": {"rows": [{"text": "a b"}, {"text": " "}, {"text": "c"}]}}
    assert list(_texts(StatsParams(**rows).corpus)) == ["a b", "c"]


def test_memit_start_key_carries_the_edit_to_the_subject_at_the_start_of_a_text(fact_setup):
    """MEMIT fits each key averaged over prefixes (the subject mid-text); `start_key` also fits the subject's
    key at the start of a text, the key of every prompt that opens with the subject (the edit prompt here),
    with the same delta on that prompt's own hidden state. With it, the hidden state at the last edited layer
    for the subject alone reaches its target far more fully, and the averaged targets are still reached."""
    subjects = list(fact_setup.facts)[:6]
    base = dict(layers=[0, 1], clamp_norm_factor=10, v_steps=40, n_prefixes=5, stats=fact_setup.stats)
    got = {}
    for start_key in (False, True):
        model = fact_setup.load()
        editor = build_editor("memit", dict(base, start_key=start_key))
        res = editor.edit(model, fact_setup.tok, requests(fact_setup, subjects))
        got[start_key] = (res.info["realised"], res.info["realised_start"])
    (avg_off, start_off), (avg_on, start_on) = got[False], got[True]
    # measured: at the start of a text 0.97-0.99 with the key, -1.67 to -0.24 without (the update moved
    # those hidden states away from their targets); averaged 0.89-0.99 either way
    assert min(start_on) > 0.9 and max(start_off) < 0.5
    assert min(avg_on) > 0.8 and min(avg_off) > 0.8
