"""Continual pre-training pieces: token cache by content hash, perplexity curriculum."""
import json

import pytest
import torch

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
    monkeypatch.setattr(loop, "collate", lambda ex, pad, dev: seen.append([e["input_ids"] for e in ex]) or real(ex, pad, dev))
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
