"""Continual pre-training pieces: token cache by content hash, perplexity curriculum."""

import json

import pytest

from lifelong.runner import Run


def test_tokenized_examples_are_cached_by_content(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    import lifelong.stages.base as sb

    calls = []
    real = sb.to_examples
    monkeypatch.setattr(sb, "to_examples", lambda *a, **k: calls.append(1) or real(*a, **k))
    Run(tiny_cfg("naive", n_stages=2, name="c1"), quiet=True)
    assert len(calls) == 2 and len(list((tmp_path / "cache" / "tokens").glob("*.json"))) == 2
    again = Run(tiny_cfg("naive", n_stages=2, name="c2"), quiet=True)
    assert len(calls) == 2  # second run: no re-tokenization
    changed = tiny_cfg("naive", n_stages=2, name="c3")
    changed.stages[0].data.rows[0]["text"] = "t0 zzz?"
    Run(changed, quiet=True)
    assert len(calls) == 3  # changed content: re-tokenized
    assert again.prepared[0] == Run(tiny_cfg("naive", n_stages=2, name="c4"), quiet=True).prepared[0]


def test_perplexity_curriculum_trains_easy_to_hard(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    from lifelong.data.curriculum import example_losses
    from lifelong.train import loop

    seen = []
    real = loop.collate
    monkeypatch.setattr(
        loop, "collate", lambda ex, pad, dev: seen.append([e["input_ids"] for e in ex]) or real(ex, pad, dev)
    )
    cfg = tiny_cfg("naive", n_stages=1, steps=3, name="cur")
    cfg.stages[0].data.order = "curriculum"
    run = Run(cfg, quiet=True)
    init = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.execute()
    trained = [ids for batch in seen[-3:] for ids in batch]  # the last 3 collates are the training steps
    ex = run.prepared[0]
    run.model.load_state_dict(init)
    losses = example_losses(run.model, ex, 0)
    order = sorted(range(len(ex)), key=lambda i: (losses[i], i))
    assert trained == [ex[i]["input_ids"] for i in order[:48]]  # 3 steps x 16, easiest first
    ev = [json.loads(x) for x in (run.run_dir / "events.jsonl").read_text().splitlines()]
    cur = [e for e in ev if e["type"] == "curriculum"][0]
    assert cur["easiest"] <= cur["hardest"]
    assert list((tmp_path / "cache" / "curriculum").glob("*.json"))  # scores cached


def _cpt_cfg(tmp_path, name, strategy="naive", sched="cosine", lr=3e-3, steps=150, same_domain=False):
    from lifelong.testing import tiny_domains
    from lifelong.validation import validate_raw

    d = tiny_domains(n_docs=300)
    if same_domain:
        stages = [
            ("a1", d["alpha"]["train"][:150], d["alpha"]["eval"]),
            ("a2", d["alpha"]["train"][150:], d["alpha"]["eval"]),
        ]
    else:
        stages = [(n, d[n]["train"], d[n]["eval"]) for n in ("alpha", "omega")]
    raw = {
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "strategy": strategy,
        "train": {
            "lr": lr,
            "batch_size": 8,
            "max_steps": steps,
            "max_length": 64,
            "schedule": sched,
            "warmup_steps": 10 if same_domain else 5,
            "cooldown_steps": 20,
            "constant_lr_ratio": 0.1,
        },
        "eval": {"bootstrap": 0, "batch_size": 32, "max_examples": 8 if same_domain else None},
        "stages": [{"name": n, "kind": "pretrain", "data": {"rows": tr}, "eval": {"rows": ev}} for n, tr, ev in stages],
    }
    return validate_raw(raw)


def test_small_replay_removes_most_forgetting_of_the_first_domain(tmp_path):
    naive = Run(_cpt_cfg(tmp_path, "naive"), quiet=True).execute()
    replay = Run(_cpt_cfg(tmp_path, "replay", {"name": "replay", "fraction": 0.05}), quiet=True).execute()
    assert [t["metric"] for t in naive.tasks] == ["perplexity", "perplexity"]
    # perplexity of the first domain after the second stage: naive forgets it, 5% replay keeps it
    assert naive.matrix[2][0] > 10 * naive.matrix[1][0]
    assert replay.matrix[2][0] < naive.matrix[2][0] / 10
    assert replay.matrix[2][1] < 1.1 * naive.matrix[2][1]  # at nearly the same second-domain perplexity
    fm_n, fm_r = naive.metrics["perplexity"]["metrics"]["FM"], replay.metrics["perplexity"]["metrics"]["FM"]
    assert fm_n > 0 and fm_r < fm_n / 10  # forgetting in perplexity terms, direction-aware


def test_rewarming_shows_a_stability_gap_and_infinite_does_not(tmp_path):
    import statistics

    jumps = {}
    for sched in ("cosine", "infinite"):
        run = Run(_cpt_cfg(tmp_path, sched, sched=sched, lr=1e-2, steps=100, same_domain=True), quiet=True)
        run.execute()
        ev = [json.loads(x) for x in (run.run_dir / "events.jsonl").read_text().splitlines()]
        s0 = [e["loss"] for e in ev if e["type"] == "step" and e["stage"] == 0]
        s1 = [e["loss"] for e in ev if e["type"] == "step" and e["stage"] == 1]
        jumps[sched] = statistics.mean(s1[10:30]) - statistics.mean(s0[-10:])
    assert jumps["cosine"] > 0, jumps  # re-warming to the peak lr raises the loss after the boundary
    assert jumps["infinite"] < 0, jumps  # the constant schedule keeps improving across the boundary


def test_mixing_sources_and_llama3_syne_ratio_adaptation(tmp_path):
    from lifelong.testing import tiny_domains
    from lifelong.validation import validate_raw

    d = tiny_domains()
    ev = lambda n: {"rows": d[n]["eval"], "name": n}  # noqa: E731
    raw = {
        "name": "mix",
        "output_dir": str(tmp_path / "runs"),
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "train": {"lr": 3e-3, "batch_size": 8, "max_steps": 60, "max_length": 64},
        "eval": {"bootstrap": 0, "probes": [ev("alpha")]},
        "stages": [
            {
                "name": "s0",
                "kind": "pretrain",
                "mix": [{"rows": d["alpha"]["train"], "weight": 3.0}, {"rows": d["omega"]["train"], "weight": 1.0}],
                "eval": ev("omega"),
            },
            {"name": "s1", "kind": "pretrain", "data": {"rows": d["omega"]["train"][:100]}},
            {
                "name": "s2",
                "kind": "pretrain",
                "mix": [{"rows": d["alpha"]["train"]}, {"rows": d["omega"]["train"]}],
                "adapt_ratios": {"alpha": 0.5, "tasks": ["alpha", "omega"]},
            },
        ],
    }
    run = Run(validate_raw(raw), quiet=True)
    res = run.execute()
    evs = [json.loads(x) for x in (run.run_dir / "events.jsonl").read_text().splitlines()]
    mixes = {e["stage"]: e for e in evs if e["type"] == "mix"}
    n = sum(len(src) for src in run.prepared[0]["sources"])  # packed blocks of both sources
    assert mixes[0]["counts"] == [round(0.75 * n), round(0.25 * n)]  # 3:1
    names = [t["name"] for t in res.tasks]
    a, o = names.index("alpha"), names.index("omega")
    # over stage s1 (omega only) the alpha perplexity rose: alpha gets a larger share in s2
    before, after = res.matrix[1], res.matrix[2]  # after s0 and after s1 (row k + 1 = after stage k)
    drop_alpha = (after[a] - before[a]) / before[a]
    drop_omega = (after[o] - before[o]) / before[o]
    assert drop_alpha > 0
    r = [0.5 * (1 + 0.5 * drop_alpha), 0.5 * (1 + 0.5 * drop_omega)]
    assert mixes[2]["ratios"] == pytest.approx([r[0] / sum(r), r[1] / sum(r)])
    assert mixes[2]["ratios"][0] > 0.5
    assert res.extra["mix"]["s2"]["counts"] == mixes[2]["counts"]


def test_streaming_corpus_is_packed_into_a_cached_memory_map(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    from lifelong.config import DataConfig
    from lifelong.data import Formatter, load_rows, streaming, to_examples
    from lifelong.testing import tiny_domains, tiny_tokenizer
    from lifelong.validation import validate_raw

    docs = tiny_domains(n_docs=300)["alpha"]["train"]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    fm = Formatter(tiny_tokenizer())
    ds = streaming.streamed_blocks(DataConfig(path=str(corpus), streaming=True), fm, 32)
    packed = to_examples(load_rows(DataConfig(path=str(corpus))), "text", DataConfig(path=str(corpus)), fm, 32)
    full = [b for b in packed if len(b["input_ids"]) == 32]
    assert len(ds) == len(full) and [ds[i] for i in range(len(ds))] == full  # same blocks, lazily indexed
    assert isinstance(ds.data, __import__("numpy").memmap)
    # a second run reads the cache: no row is read again
    monkeypatch.setattr(streaming, "iter_rows", lambda cfg: (_ for _ in ()).throw(AssertionError("re-read")))
    again = streaming.streamed_blocks(DataConfig(path=str(corpus), streaming=True), fm, 32)
    assert len(again) == len(ds)
    # bad rows are located
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok ok"}\n{"txt": "oops"}\n')
    monkeypatch.undo()
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"bad\.jsonl line 2: field 'text'"):
        streaming.streamed_blocks(DataConfig(path=str(bad), streaming=True), fm, 8)
    # end to end: a streamed pretrain stage with replay trains and evaluates
    raw = {
        "name": "stream",
        "output_dir": str(tmp_path / "runs"),
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "strategy": {"name": "replay", "fraction": 0.1, "buffer_size": 20},
        "train": {"lr": 3e-3, "batch_size": 8, "max_steps": 5, "max_length": 32},
        "eval": {"bootstrap": 0},
        "stages": [
            {
                "name": "a",
                "kind": "pretrain",
                "data": {"path": str(corpus), "streaming": True},
                "eval": {"rows": docs[:8]},
            },
            {"name": "b", "kind": "pretrain", "data": {"path": str(corpus), "streaming": True}},
        ],
    }
    res = Run(validate_raw(raw), quiet=True).execute()
    assert all(v is not None for v in res.matrix[-1])
    assert res.costs["b"]["replay_buffer_examples"] == 20
