"""Edit request sets in their published layouts: `counterfact` (ROME's counterfact.json) and `zsre` (MEND's
zsre_mend_eval.json, as ROME and MEMIT read it) become edit stages and probes; fixtures in tests/data/benchmarks/
are in the exact upstream layouts. The scores are the papers' definitions, checked against a direct
implementation of ROME's `summarize.py` (CounterFact) and `eval_utils_zsre.py` (zsRE) on a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from lifelong.configio import ConfigError
from lifelong.data.formats import Formatter
from lifelong.eval.lm import HFLM
from lifelong.eval.scorers import SCORERS
from lifelong.testing import tiny_llama, tiny_tokenizer
from lifelong.validation import load_config

DATA = Path(__file__).parent / "data" / "benchmarks"
CF = json.loads((DATA / "counterfact" / "counterfact.json").read_text())
ZS = json.loads((DATA / "zsre" / "zsre_mend_eval.json").read_text())


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))


def _load(tmp_path: Path, bench: dict, **top: Any):
    raw = {"name": "e", "model": {"tiny": "llama"}, "output_dir": str(tmp_path / "runs"), "benchmark": bench, **top}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_counterfact_records_become_requests_stages_and_probes(tmp_path):
    cfg = _load(tmp_path, {"name": "counterfact", "path": str(DATA / "counterfact"), "method": "ft"})
    assert [s.name for s in cfg.stages] == ["edits"] and cfg.stages[0].kind == "edit"
    assert cfg.stages[0].edit.method == "ft"
    rows = _rows(cfg.stages[0].data.path)
    assert len(rows) == len(CF)
    rec, row = CF[0], rows[0]
    rw = rec["requested_rewrite"]
    assert row == {
        "prompt": rw["prompt"],
        "subject": rw["subject"],
        "target_new": rw["target_new"]["str"],
        "target_true": rw["target_true"]["str"],
        "paraphrases": rec["paraphrase_prompts"],
        "neighborhood": rec["neighborhood_prompts"],
        "generation": rec["generation_prompts"],
        "id": str(rec["case_id"]),
    }
    ev = cfg.stages[0].eval
    assert (
        ev.name == "efficacy_score"
        and ev.scorer == "edit"
        and ev.params == {"metric": "efficacy", "variant": "cf_prob"}
    )
    names = [(p.name, p.params["metric"], p.params["variant"]) for p in cfg.eval.probes]
    assert names == [("paraphrase_score", "generalization", "cf_prob"), ("neighborhood_score", "locality", "cf_prob")]


def test_sequential_stages_split_the_first_requests(tmp_path):
    own = {"name": "mine", "path": str(DATA / "counterfact" / "counterfact.json"), "scorer": "edit"}
    bench = {"name": "counterfact", "path": str(DATA / "counterfact"), "requests": 5, "stages": 2, "group": 1}
    cfg = _load(tmp_path, bench, eval={"probes": [own]})
    parts = [_rows(s.data.path) for s in cfg.stages]
    assert [len(p) for p in parts] == [2, 3]  # the first 5 records, in order
    assert [r["id"] for p in parts for r in p] == ["0", "1", "2", "3", "4"]
    assert [s.eval.name for s in cfg.stages] == ["efficacy_score_1", "efficacy_score_2"]
    assert cfg.stages[1].edit.group == 1
    assert [p.name for p in cfg.eval.probes] == ["mine", "paraphrase_score", "neighborhood_score"]  # own first
    assert len(_rows(cfg.eval.probes[1].path)) == 5
    sampled = _load(tmp_path, {**bench, "pick": "sample", "seed": 3})
    ids = [r["id"] for s in sampled.stages for r in _rows(s.data.path)]
    assert len(ids) == 5 and ids == sorted(ids, key=int)  # drawn with the seed, kept in file order
    assert ids == [
        r["id"] for s in _load(tmp_path, {**bench, "pick": "sample", "seed": 3}).stages for r in _rows(s.data.path)
    ]


def test_zsre_records_as_rome_builds_them(tmp_path):
    with pytest.warns(UserWarning, match=r"1 of 6 records .* left out: the question does not name its subject"):
        cfg = _load(tmp_path, {"name": "zsre", "path": str(DATA / "zsre" / "zsre_mend_eval.json")})
    rows = _rows(cfg.stages[0].data.path)
    assert [r["id"] for r in rows] == ["0", "1", "2", "4", "5"]  # record 3 does not name "Mona Lisa"
    rec, row = ZS[0], rows[0]
    assert row["prompt"] == rec["src"].replace(rec["subject"], "{}") == "What university did {} attend?"
    assert row["target_new"] == rec["answers"][0] and "target_true" not in row
    assert row["paraphrases"] == [rec["rephrase"]]
    assert row["neighborhood"] == [{"prompt": rec["loc"] + "?", "target": rec["loc_ans"]}]
    assert rows[2]["subject"] == "River Thames" and rows[2]["prompt"] == "Which sea does the {} flow into?"
    assert [t.name for t in [cfg.stages[0].eval, *cfg.eval.probes]] == ["edit_accuracy", "generalization", "locality"]
    assert {t.params["variant"] for t in [cfg.stages[0].eval, *cfg.eval.probes]} == {"top1"}
    with pytest.warns(UserWarning):
        alt = _load(tmp_path, {"name": "zsre", "path": str(DATA / "zsre"), "target": "alt"})
    assert _rows(alt.stages[0].data.path)[0]["target_new"] == ZS[0]["alt"]


# ---- the papers' metrics, computed directly ----------------------------------------------------------------
def _target_ids(tok, target: str) -> list[int]:
    return tok(" " + target, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def _mean_nll(model, tok, prompt: str, target: str) -> float:
    """ROME's `test_batch_prediction`: the mean negative log-probability of the target's tokens after the prompt."""
    p, t = tok(prompt)["input_ids"], _target_ids(tok, target)
    logp = model(torch.tensor([p + t])).logits[0, len(p) - 1 : -1].float().log_softmax(-1)
    return float(-logp.gather(1, torch.tensor(t)[:, None]).mean())


@torch.no_grad()
def _token_hits(model, tok, prompt: str, target: str) -> list[bool]:
    """ROME's `eval_utils_zsre`: for each target token, the prompt plus the decoded tokens before it, and whether
    the model's argmax at the last position is that token."""
    t = _target_ids(tok, target)
    hits = []
    for i in range(len(t)):
        ids = tok(prompt + tok.decode(t[:i]))["input_ids"]
        hits.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()) == t[i])
    return hits


def test_counterfact_scores_are_romes(tmp_path):
    """ES / PS / NS and their magnitudes, as ROME's summarize.py computes them from per-prompt mean NLLs."""
    cfg = _load(tmp_path, {"name": "counterfact", "path": str(DATA / "counterfact")})
    model, tok = tiny_llama(seed=7).eval(), tiny_tokenizer()
    lm = HFLM(model, Formatter(tok), batch_size=4)
    items = _rows(cfg.stages[0].data.path)
    for metric in ("efficacy", "generalization", "locality"):
        scorer = SCORERS.get("edit")(SCORERS.get("edit").Params(metric=metric, variant="cf_prob"))
        assert scorer.also_reported() == ("magnitude[cf_prob]",)
        stats, _ = scorer.score_details(lm, items)
        for n, rec in enumerate(CF):
            rw, subj = rec["requested_rewrite"], rec["requested_rewrite"]["subject"]
            new, true = rw["target_new"]["str"], rw["target_true"]["str"]
            prompts = {
                "efficacy": [rw["prompt"].format(subj)],
                "generalization": rec["paraphrase_prompts"],
                "locality": rec["neighborhood_prompts"],
            }[metric]
            nll = [(_mean_nll(model, tok, q, new), _mean_nll(model, tok, q, true)) for q in prompts]
            if metric == "locality":  # the neighbour keeps its true object: NLL(true) < NLL(new)
                success = np.mean([t < w for w, t in nll])
                diff = np.mean([math.exp(-t) - math.exp(-w) for w, t in nll])
            else:
                success = np.mean([t > w for w, t in nll])
                diff = np.mean([math.exp(-w) - math.exp(-t) for w, t in nll])
            assert stats[n, 0] == pytest.approx(success), (metric, n)
            assert stats[n, 1] == pytest.approx(diff, rel=1e-4, abs=1e-9), (metric, n)


def test_zsre_scores_are_romes(tmp_path):
    with pytest.warns(UserWarning):
        cfg = _load(tmp_path, {"name": "zsre", "path": str(DATA / "zsre")})
    model, tok = tiny_llama(seed=8).eval(), tiny_tokenizer()
    lm = HFLM(model, Formatter(tok), batch_size=4)
    items = _rows(cfg.stages[0].data.path)
    kept = [ZS[int(r["id"])] for r in items]
    for metric in ("efficacy", "generalization", "locality"):
        stats, _ = SCORERS.get("edit")(SCORERS.get("edit").Params(metric=metric, variant="top1")).score_details(
            lm, items
        )
        for n, rec in enumerate(kept):
            prompt, target = {
                "efficacy": (rec["src"], rec["answers"][0]),
                "generalization": (rec["rephrase"], rec["answers"][0]),
                "locality": (rec["loc"] + "?", rec["loc_ans"]),
            }[metric]
            assert stats[n, 0] == pytest.approx(np.mean(_token_hits(model, tok, prompt, target))), (metric, n)


def test_counterfact_stream_on_a_tiny_model(tmp_path):
    """Two sequential FT-L edit stages: each stage's efficacy rises when its edits are made; the paraphrase and
    neighbourhood probes are scored after every stage, the magnitudes kept beside."""
    from lifelong.runner import run

    bench = {
        "name": "counterfact",
        "path": str(DATA / "counterfact"),
        "requests": 4,
        "stages": 2,
        "method": "ft",
        "edit_params": {"steps": 40, "lr": 0.05, "norm_constraint": 0.05},
    }
    cfg = _load(tmp_path, bench, torch_threads=1, eval={"bootstrap": 50})
    run(cfg, quiet=True)
    res = json.loads((tmp_path / "runs" / "e" / "results.json").read_text())
    names = [t["name"] for t in res["tasks"]]
    assert names == ["efficacy_score_1", "efficacy_score_2", "paraphrase_score", "neighborhood_score"]
    m = res["matrix"]
    assert m[1][0] == 100 and m[1][0] > m[0][0]  # stage 1's edits land
    assert m[2][1] == 100 and m[2][1] > m[1][1]  # stage 2's edits land, at stage 2
    assert res["also"]["paraphrase_score"]["metric"] == "magnitude[cf_prob]"
    assert set(res["also"]["paraphrase_score"]["rows"]) == {"baseline", "edits_1", "edits_2"}


def _error(tmp_path: Path, bench: dict) -> str:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, bench)
    return str(e.value)


def test_located_errors(tmp_path, monkeypatch):
    msg = _error(tmp_path, {"name": "counterfact", "path": str(tmp_path)})
    assert "benchmark.path: no file" in msg and "counterfact.json" in msg
    bad = [dict(CF[0], requested_rewrite={k: v for k, v in CF[0]["requested_rewrite"].items() if k != "subject"})]
    (tmp_path / "counterfact.json").write_text(json.dumps(bad))
    msg = _error(tmp_path, {"name": "counterfact", "path": str(tmp_path)})
    assert "record 0: no field 'requested_rewrite.subject'" in msg and "run.yaml:" in msg
    same = [dict(CF[0], requested_rewrite={**CF[0]["requested_rewrite"], "target_new": {"str": "French"}})]
    (tmp_path / "counterfact.json").write_text(json.dumps(same))
    assert "target_new equals target_true" in _error(tmp_path, {"name": "counterfact", "path": str(tmp_path)})
    msg = _error(tmp_path, {"name": "counterfact", "path": str(DATA / "counterfact"), "requests": 2, "stages": 3})
    assert "benchmark.stages: 3 stages for 2 requests" in msg
    msg = _error(tmp_path, {"name": "counterfact", "path": str(DATA / "counterfact"), "order": 1})
    assert "benchmark.order: counterfact has no tasks or splits" in msg
    msg = _error(tmp_path, {"name": "zsre"})  # tests run offline: the release cannot be fetched
    assert "benchmark.path: no `path` or `hub`" in msg and "zsre_mend_eval.json" in msg


def test_hub_repo_holding_the_release_file(tmp_path, monkeypatch):
    """`hub: org/name` downloads the release's file from a dataset repo (faked here; the call is huggingface_hub's)."""
    import huggingface_hub

    asked = {}

    def fake(repo_id: str, filename: str, repo_type: str) -> str:
        asked.update(repo=repo_id, file=filename, type=repo_type)
        return str(DATA / "counterfact" / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    cfg = _load(tmp_path, {"name": "counterfact", "hub": "org/cf", "requests": 2})
    assert asked == {"repo": "org/cf", "file": "counterfact.json", "type": "dataset"}
    assert [r["id"] for r in _rows(cfg.stages[0].data.path)] == ["0", "1"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "benchmark.hub: cannot download org/cf: the hub is offline" in _error(
        tmp_path, {"name": "counterfact", "hub": "org/cf"}
    )
