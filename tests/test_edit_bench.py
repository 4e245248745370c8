"""The sequential-editing benchmark (`lifelong edit-bench`) on the session's tiny fact model: the batched
scoring equals the per-request metrics, overrides and inputs give located errors, the report draws the
curves, and (slow tier) 1,000 sequential GRACE edits keep locality and general ability while sequential
ROME's old edits and known facts decay."""

import json
import random

import pytest
import torch

from lifelong.cli import main
from lifelong.editing import build_editor, load_requests
from lifelong.editing.metrics import predictions, request_metrics
from lifelong.editing.sequential_bench import batched_metrics, general_chunks, known_facts, perplexity, split_overrides
from lifelong.report.edit_curves import render
from lifelong.testing import FACT_TEMPLATES, OBJECTS, fact_requests


def synthetic_requests(facts, n, seed=0):
    """`n` distinct requests on the tiny-facts vocabulary: subjects of two (then three) known names, whose
    last name's city is the old answer; one paraphrase; one known fact as the neighbour."""
    rng, names, seen, rows = random.Random(seed), list(facts), set(), []
    while len(rows) < n:
        subject = " ".join(rng.sample(names, 2 if len(seen) < 900 else 3))
        if subject in seen:
            continue
        seen.add(subject)
        true, other = facts[subject.split()[-1]], rng.choice(names)
        rows.append(
            {
                "prompt": FACT_TEMPLATES[0],
                "subject": subject,
                "target_new": rng.choice([o for o in OBJECTS if o != true]),
                "target_true": true,
                "paraphrases": [FACT_TEMPLATES[1]],
                "neighborhood": [{"prompt": FACT_TEMPLATES[0].replace("{}", other), "target": facts[other]}],
                "id": f"s{len(rows)}",
            }
        )
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def known_rows(facts):
    return [{"prompt": t.replace("{}", s), "target": o} for s, o in facts.items() for t in FACT_TEMPLATES]


def test_batched_metrics_equal_the_per_request_metrics(fact_setup):
    model, tok = fact_setup.load(), fact_setup.tok
    reqs = load_requests(fact_requests(fact_setup.facts, list(fact_setup.facts)[:3]))
    reqs += load_requests(synthetic_requests(fact_setup.facts, 3))
    build_editor("grace", dict(layer=3, eps_init=0.05)).edit(model, tok, reqs[:4])
    with torch.no_grad():
        pre = predictions(fact_setup.load(), tok, reqs)
        one, batched = request_metrics(model, tok, reqs, pre), batched_metrics(model, tok, reqs, pre, batch_size=5)
    assert [sorted(m) for m in one] == [sorted(m) for m in batched]
    assert all(a[k] == pytest.approx(b[k], abs=1e-6) for a, b in zip(one, batched) for k in a)
    assert {m["efficacy[top1]"] for m in batched[:4]} == {100.0}  # the edits are there


def test_general_ability_inputs(tmp_path, fact_setup):
    tok = fact_setup.tok
    chunks = general_chunks(fact_setup.corpus, tok, max_tokens=500, length=32)
    assert 500 <= sum(map(len, chunks)) < 532 and max(map(len, chunks)) <= 32
    assert 1.0 < perplexity(fact_setup.load(), tok, chunks) < 4  # the model was trained on these facts
    p = write_jsonl(tmp_path / "known.jsonl", [{"prompt": "The home of Kalo", "target": "Rome"}, {"text": "x"}])
    with pytest.raises(ValueError, match=r"known.jsonl line 2: a known fact is \{prompt, target\}"):
        known_facts(str(p))
    req = fact_requests(fact_setup.facts, list(fact_setup.facts)[:1])[0]
    assert len(known_facts(str(write_jsonl(p, [req])))) == 3  # the prompt and its two paraphrases
    with pytest.raises(ValueError, match="line 1: field 'text' is missing"):
        general_chunks(str(p), tok)


def test_overrides_name_their_method_and_bad_input_fails_before_loading(tmp_path, fact_setup, capsys):
    assert split_overrides(["rome", "grace"], ["rome.layer=1", "grace.stats.x=2"]) == {
        "rome": ["layer=1"],
        "grace": ["stats.x=2"],
    }
    with pytest.raises(ValueError, match=r"override 'layer=1': prefix it with the method it is for, one of rome"):
        split_overrides(["rome"], ["layer=1"])
    req = write_jsonl(tmp_path / "e.jsonl", synthetic_requests(fact_setup.facts, 2))
    base = ["edit-bench", str(req), "--model", str(tmp_path / "no-model"), "--every", "1", "--quiet"]
    for extra, words in [
        (["--methods", "grace", "grace.colour=1", "--out", str(tmp_path / "a")], "grace.colour: unknown parameter"),
        (["--methods", "grace,grace", "--out", str(tmp_path / "b")], "names a method twice"),
        (["--methods", "nope", "--out", str(tmp_path / "c")], "nope"),
    ]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
        assert not (tmp_path / extra[-1]).exists()


def test_report_draws_a_curve_per_method_and_the_last_points():
    def point(n, eff):
        m = {"efficacy[top1]": eff, "generalization[top1]": 50.0, "locality[top1]": 90.0}
        return {
            "edits": n,
            "all": m,
            "recent": m,
            "first": m,
            "general": {"perplexity": 2.0 + n / 100},
            "not_converged": 1,
            "seconds": 1.0,
        }

    base = {"general": {"perplexity": 2.0}}
    curves = {
        "requests_file": "e.jsonl",
        "requests": 20,
        "model": "m",
        "every": 10,
        "window": 10,
        "group": 1,
        "methods": {
            "grace": {"params": {}, "finished": True, "baseline": base, "points": [point(10, 99.0), point(20, 97.5)]},
            "rome": {"params": {}, "finished": False, "baseline": base, "points": [point(10, 80.0)]},
        },
    }
    page = render(curves)
    assert page.count("<svg") == 2  # the edit metrics (top1) and general ability
    assert "<td>grace</td><td>20</td><td>97.5</td>" in page and "<td>rome</td><td>10 (unfinished)</td>" in page
    assert "2.00 → 2.20" in page


@pytest.mark.slow
def test_a_thousand_sequential_edits_grace_keeps_locality_rome_decays(tmp_path, fact_setup, capsys):
    facts = fact_setup.facts
    req = write_jsonl(tmp_path / "edits.jsonl", synthetic_requests(facts, 1000))
    known = write_jsonl(tmp_path / "known.jsonl", known_rows(facts))
    out = tmp_path / "bench"
    common = ["--model", fact_setup.path, "--general", fact_setup.corpus, "--general-tokens", "3000"]
    args = ["edit-bench", str(req), *common, "--known", str(known), "--quiet"]
    assert (
        main([*args, "--methods", "grace", "--every", "100", "--out", str(out), "grace.layer=3", "grace.eps_init=0.05"])
        == 0
    )
    assert "grace | 1000 |" in capsys.readouterr().out
    curves = json.loads((out / "curves.json").read_text())
    grace = curves["methods"]["grace"]
    pts, base = grace["points"], grace["baseline"]["general"]
    assert [p["edits"] for p in pts] == list(range(100, 1001, 100))  # 1000 / K points
    assert grace["finished"] and "<svg" in (out / "report.html").read_text()
    # measured: efficacy 100 -> 99, generalization 71 -> 39 (radii shrink as keys crowd in: GRACE's known
    # weakness), neighbours and known facts kept at 100, perplexity unchanged (2.15)
    for p in pts:
        assert p["all"]["efficacy[top1]"] >= 90 and p["recent"]["efficacy[top1]"] >= 90
        assert p["all"]["locality[top1]"] >= 99 and p["general"]["known_facts[top1]"] == base["known_facts[top1]"]
        assert p["general"]["perplexity"] == pytest.approx(base["perplexity"], rel=0.01)
    assert pts[-1]["all"]["generalization[top1]"] < pts[0]["all"]["generalization[top1]"] - 15
    rome = tmp_path / "rome"
    params = ["rome.layer=0", "rome.n_prefixes=0", "rome.v_steps=10", f"rome.stats.corpus.path={fact_setup.corpus}"]
    assert main([*args, "--methods", "rome", "--every", "20", "--limit", "60", "--out", str(rome), *params]) == 0
    r = json.loads((rome / "curves.json").read_text())["methods"]["rome"]
    first, last = r["points"][0], r["points"][-1]
    # measured: known facts 100 -> 29, perplexity 2.15 -> 4.5, the first 20 edits' efficacy[top1] 40 -> 10
    assert len(r["points"]) == 3 and last["edits"] == 60
    assert last["general"]["known_facts[top1]"] <= r["baseline"]["general"]["known_facts[top1]"] - 30
    assert last["general"]["perplexity"] > 1.5 * r["baseline"]["general"]["perplexity"]
    assert last["first"]["efficacy[top1]"] < first["first"]["efficacy[top1]"]
