"""Temporal knowledge (TemporalWiki's protocol): a tiny model pre-trained on one snapshot of synthetic facts, then
on the diff to the next, prefers the changed facts' new objects over the outdated ones more than before; one
probe file split by `where: {label: ...}` gives one matrix column per group; the `temporal` format's rows and
`where` give located errors; the scorer's preference and generation checks, and its log-likelihoods against
lm-eval-harness's on the same items."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from lifelong.data import check_rows, load_rows
from lifelong.data.sources import Rows

SUBJECTS = ["Kalo", "Mizu", "Reta", "Vone", "Sidu", "Hapo", "Lumi", "Tesa"]
BEFORE = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Delhi", "Quito", "Hanoi"]
AFTER = {"Kalo": "Dakar", "Mizu": "Perth", "Reta": "Bern", "Vone": "Kiev"}  # the changed facts


def snapshot(facts: dict[str, str], time: str, repeat: int) -> list[dict]:
    return [{"text": f"The home of {s} is {o}.", "time": time} for _ in range(repeat) for s, o in facts.items()]


def probes() -> list[dict]:
    rows = []
    for s, old in zip(SUBJECTS, BEFORE):
        if s in AFTER:
            rows.append({"prompt": f"The home of {s} is", "answer": AFTER[s], "outdated": old, "label": "changed"})
        else:
            rows.append({"prompt": f"The home of {s} is", "answer": old, "label": "unchanged"})
    return [{**r, "time": "2"} for r in rows]


def config(tmp_path: Path) -> dict:
    first = dict(zip(SUBJECTS, BEFORE))
    corpus = snapshot(first, "1", 8) + snapshot(AFTER, "2", 16)  # one time-stamped corpus, split by `where`
    probe = {"rows": probes(), "params": {"max_new_tokens": 6}}
    return {
        "name": "temporal",
        "output_dir": str(tmp_path / "runs"),
        "seed": 0,
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "train": {"lr": 3e-3, "batch_size": 8, "max_steps": 40, "max_length": 64},
        "eval": {
            "bootstrap": 0,
            "probes": [
                {**probe, "name": "changed", "where": {"label": "changed"}},
                {**probe, "name": "unchanged", "where": {"label": "unchanged"}},
            ],
        },
        "stages": [
            {"name": "snap1", "kind": "pretrain", "data": {"rows": corpus, "where": {"time": 1}}},
            {"name": "diff2", "kind": "pretrain", "data": {"rows": corpus, "where": {"time": "2"}}},
        ],
    }


def test_after_the_new_snapshot_the_changed_facts_new_objects_win(tmp_path):
    from lifelong.runner import Run
    from lifelong.validation import validate_raw

    run = Run(validate_raw(config(tmp_path)), quiet=True)
    res = run.execute()
    assert [t["name"] for t in res.tasks] == ["changed", "unchanged"]  # one column per label group
    changed = [row[0] for row in res.matrix]  # baseline, after snap1, after diff2
    assert changed[2] >= changed[1] + 50, changed  # the new objects now beat the outdated ones
    assert changed[1] <= 50, changed  # after the first snapshot the then-current (now outdated) objects win
    # the audit records say, item by item, whether the outdated object was preferred
    recs = [
        json.loads(x)
        for x in (run.run_dir / "examples" / "changed" / "diff2.jsonl").read_text().splitlines()
        if x.strip()
    ]
    assert len(recs) == len(AFTER) and all(r["scored_by"] == "preference" for r in recs)
    assert sum(r["prefers_outdated"] for r in recs) < len(AFTER) / 2
    assert all(r["outdated"] and r["label"] == "changed" for r in recs)
    saved = json.loads((run.run_dir / "results.json").read_text())
    also = {e["metric"]: e["rows"] for e in saved["also"]["changed"]}
    assert also["prefers_outdated"]["diff2"] == pytest.approx(100 - changed[2])
    assert also["prefers_outdated"]["snap1"] >= 50


def rows(*rs: dict) -> Rows:
    return Rows(list(rs), [f"probes.jsonl line {k + 1}" for k in range(len(rs))], "probes.jsonl")


def test_temporal_rows_give_located_errors():
    ok = {"prompt": "The home of Kalo is", "answer": "Paris", "label": "unchanged"}
    check_rows(rows(ok, {**ok, "label": "changed", "outdated": "Rome", "answer": ["Dakar", "Dakar city"]}), "temporal")
    for bad, msg in [
        ({**ok, "label": "updated"}, r"line 2: field 'label' must be one of changed, unchanged, new"),
        ({**ok, "outdated": "Rome"}, r"line 2: field 'outdated' is given for a unchanged fact"),
        ({**ok, "label": "changed", "outdated": "Paris"}, r"line 2: \"Paris\" is both in 'answer' and in 'outdated'"),
        ({**ok, "answer": ""}, r"line 2: field 'answer' must be a non-empty string"),
        ({**ok, "time": ["2021"]}, r"line 2: field 'time' must be a string"),
    ]:
        with pytest.raises(ValueError, match=msg):
            check_rows(rows(ok, bad), "temporal")


def test_where_splits_a_probe_file_and_names_a_value_no_row_has(tmp_path):
    from lifelong.config import DataConfig
    from lifelong.validation import ConfigError, load_config

    probe_file = tmp_path / "probes.jsonl"
    probe_file.write_text("".join(json.dumps(r) + "\n" for r in probes()))
    picked = load_rows(DataConfig(path=str(probe_file), where={"label": "changed"}, max_examples=3))
    assert [r["label"] for r in picked.rows] == ["changed"] * 3  # filtered first, then capped
    assert picked.where[0].endswith("probes.jsonl line 1") and picked.where[2].endswith("probes.jsonl line 3")
    cfg = config(tmp_path)
    cfg["eval"]["probes"][1] = {"path": "probes.jsonl", "name": "unchanged", "where": {"label": "unchangd"}}
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError) as e:
        load_config(path, read_data=True)
    text = str(e.value)
    assert f"{path}:" in text and "eval.probes.1" in text
    assert "where: no row has label: unchangd (the rows' values of 'label': changed, unchanged)" in text


def item(prompt: str, answer: str, outdated: list[str] | None = None) -> dict:
    return {
        "prompt": prompt,
        "targets": [answer],
        "outdated": outdated or [],
        "label": "changed" if outdated else "new",
    }


class FakeLM:
    """Generations and log-likelihoods fixed in advance (the scorer's arithmetic without a model)."""

    def __init__(self, gens: list[str], lls: list[list[float]]) -> None:
        from lifelong.data.formats import Formatter
        from lifelong.models.tiny import tiny_tokenizer

        self.fm, self.gens, self.lls = Formatter(tiny_tokenizer(), chat="off"), gens, lls

    def generate(self, ctxs: list, max_new_tokens: int) -> list[str]:
        return self.gens

    def choice_loglikelihoods(self, reqs: list) -> list[list[float]]:
        return self.lls


def test_scorer_prefers_by_likelihood_where_outdated_and_generates_elsewhere():
    from lifelong.eval.scorers.temporal import Temporal, TemporalParams

    items = [
        item("The CEO of A is", "Bo Li", ["Al Ng"]),
        item("The CEO of B is", "Cy Wu", ["Di Xu"]),
        item("X is", "Ev"),
    ]
    lm = FakeLM([" Al Ng, since 2019", "Cy Wu.", "  ev rules\nmore"], [[-3.0, -5.0], [-4.0, -1.0], [-2.0]])
    stats, recs = Temporal().score_details(lm, items)
    # columns: matrix score, generation right, says outdated, prefers outdated
    assert stats.tolist() == [[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0]]
    assert [r["scored_by"] for r in recs] == ["preference", "preference", "generation"]
    assert recs[1]["prefers_outdated"] and recs[1]["loglikelihoods"] == {"Cy Wu": -4.0, "Di Xu": -1.0}
    gen_only, _ = Temporal(TemporalParams(score="generation", match="exact")).score_details(lm, items)
    assert gen_only[:, 0].tolist() == [0, 1, 0]  # "ev rules" is not exactly "Ev"; the prefix match takes it
    assert Temporal.also_aggregate(stats, 2) == pytest.approx(100 / 3)


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval not installed")
def test_log_likelihoods_equal_lm_eval_harness_on_the_same_items():
    """The preference is lm-eval-harness's `loglikelihood` of each object after the prompt: equal to 1e-5 nats
    on a tiny llama (measured: 3.4e-6 at most, float32 sums of about -28; the two batch and pad differently),
    and the same object preferred on every item."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM as LmEvalLM

    from lifelong.data.formats import Formatter
    from lifelong.eval.lm import HFLM
    from lifelong.eval.scorers.temporal import Temporal
    from lifelong.models.tiny import tiny_llama, tiny_tokenizer

    model, tok = tiny_llama(seed=3).eval(), tiny_tokenizer()
    items = [item(r["prompt"], r["answer"], [r["outdated"]] if "outdated" in r else None) for r in probes()]
    _, recs = Temporal().score_details(HFLM(model, Formatter(tok, chat="off"), batch_size=4), items)
    ref = LmEvalLM(pretrained=model, tokenizer=tok, batch_size=4, add_bos_token=True)
    reqs = [
        Instance("loglikelihood", {}, (it["prompt"], " " + o), k)
        for k, it in enumerate(items)
        for o in it["targets"] + it["outdated"]
    ]
    theirs = [ll for ll, _ in ref.loglikelihood(reqs, disable_tqdm=True)]
    ours = [ll for r in recs for ll in r["loglikelihoods"].values()]
    assert len(ours) == len(theirs) == len(items) + len(AFTER)
    assert np.allclose(ours, theirs, rtol=0, atol=1e-5), (ours, theirs)
    pairs = iter(theirs)
    for it, r in zip(items, recs):
        ll = [next(pairs) for _ in it["targets"] + it["outdated"]]
        assert r["prefers_outdated"] == (len(ll) > 1 and ll[1] > ll[0])
