"""Progress outside training (issue 23 item 3): a live bar on a terminal that reaches its total, one summary
line per phase with the count when not on a terminal, nothing when quiet; evaluation advanced in chunks gives
the per-example statistics and records of one call."""

from __future__ import annotations

import re
from io import StringIO

import numpy as np
import pytest
import torch
from rich.console import Console

from lifelong.data import Formatter
from lifelong.eval.lm import HFLM
from lifelong.eval.scorers import SCORERS
from lifelong.progress import Bar, chunk_size, progress, scored_in_chunks, summary_line
from lifelong.testing import tiny_llama, tiny_tokenizer


def _console(terminal: bool) -> tuple[Console, StringIO]:
    out = StringIO()
    return Console(file=out, force_terminal=terminal, width=100), out


def test_not_a_terminal_prints_one_summary_line_per_phase_with_the_count():
    console, out = _console(False)
    with progress(40, "eval task0", console=console) as bar:
        for _ in range(8):
            bar.advance(5)
    with progress(3, "merge ties", console=console, unit="tensors") as bar:
        bar.advance(3)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"eval task0: 40 items in \d+\.\d s \(([\d,.]+|inf) items/s\)", lines[0]), lines[0]
    assert lines[1].startswith("merge ties: 3 tensors in ") and lines[1].endswith(" tensors/s)")
    assert summary_line("x", 10, 2.0) == "x: 10 items in 2.0 s (5.0 items/s)"


@pytest.mark.parametrize("terminal", [False, True])
def test_quiet_prints_nothing(terminal):
    console, out = _console(terminal)
    with progress(12, "eval task0", quiet=True, console=console) as bar:
        bar.advance(12)
    assert bar.completed == 12 and bar.progress is None
    assert out.getvalue() == ""


def test_a_terminal_bar_advances_to_its_total():
    console, out = _console(True)
    with progress(30, "index memory", console=console) as bar:
        assert bar.progress is not None and bar.task is not None
        for _ in range(3):
            bar.advance(10)
        task = bar.progress.tasks[0]
        assert task.completed == 30 == task.total and task.finished
    assert "index memory" in out.getvalue() and "30/30" in out.getvalue()


def test_chunk_size_is_whole_batches_and_bounds_the_updates():
    assert chunk_size(10, 8) == 32
    assert chunk_size(1000, 4) == 40  # 25 updates
    assert chunk_size(0, 0) == 4


CASES = [  # (scorer, params, items): records with positions, one scorer that leaves requests out
    ("choice", {}, [{"prompt": f"q{i} ab", "options": ["cd", "e f", "ab"], "answer": i % 3} for i in range(11)]),
    ("perplexity", {}, [{"text": "ab cde " * (1 + i % 4)} for i in range(9)]),
    (
        "edit",
        {"metric": "locality", "variant": "cf_prob"},
        [
            {
                "prompt": "The capital of {} is",
                "subject": f"s{i}",
                "target_new": "ab",
                "target_true": "cd",
                "neighborhood": [{"prompt": "bca is", "target": "fed"}] if i % 3 else [],
            }
            for i in range(10)
        ],
    ),
]


@pytest.mark.parametrize("name,params,items", CASES, ids=[c[0] for c in CASES])
def test_chunked_scoring_equals_one_call_per_example(name, params, items):
    torch.manual_seed(0)
    lm = HFLM(tiny_llama(seed=3).eval(), Formatter(tiny_tokenizer()), batch_size=2)
    cls = SCORERS.get(name)
    scorer = cls(cls.Params(**params))
    whole, whole_recs = scorer.score_details(lm, items)
    bar = Bar(len(items))
    parts, recs = scored_in_chunks(lambda xs: scorer.score_details(lm, xs), items, bar, chunk=4)
    assert bar.completed == len(items)
    assert parts.shape == whole.shape
    np.testing.assert_allclose(parts, whole, atol=1e-5, rtol=0)  # batch composition only: same items per row
    assert whole_recs is not None and recs is not None and len(recs) == len(whole_recs)
    assert [r["index"] for r in recs] == [r["index"] for r in whole_recs]
    assert float(scorer.aggregate(parts)) == pytest.approx(float(scorer.aggregate(whole)), abs=1e-4)


def test_a_merge_prints_one_line_with_its_tensor_count(tmp_path):
    from lifelong.merging.engine import MergeConfig, ModelEntry, merge_models
    from lifelong.merging.st_io import LazyModel

    for name, seed in (("a", 0), ("b", 1)):
        m = tiny_llama(seed=seed)
        m.save_pretrained(tmp_path / name)
        tiny_tokenizer().save_pretrained(tmp_path / name)
    cfg = MergeConfig(merge_method="linear", models=[ModelEntry(model=str(tmp_path / n)) for n in ("a", "b")], seed=0)
    console, out = _console(False)
    merge_models(cfg, tmp_path / "m", console=console)
    n = len(LazyModel(str(tmp_path / "a")).names())
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"merge linear: {n} tensors in "), lines
    console, out = _console(False)
    merge_models(cfg, tmp_path / "m2", quiet=True, console=console)
    assert out.getvalue() == ""


class _Encoder:
    """A sentence-transformers stand-in: a fixed vector per text, and the calls it received."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, texts: list[str], **kw: object) -> np.ndarray:
        self.calls.append(len(texts))
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float64)


def test_memory_embedding_advances_per_batch_and_equals_one_call():
    from lifelong.memory.embed import Embedder

    def embedder() -> Embedder:
        e = Embedder.__new__(Embedder)  # no model download: the encoder is the stand-in above
        e.name, e.model, e.batch_size, e.cache = "stub", _Encoder(), 4, {}
        return e

    texts = [f"doc {'a' * i}" for i in range(10)] + ["doc "]  # one repeat: embedded once
    plain = embedder()(texts)
    e = embedder()
    console, out = _console(True)
    with progress(len(texts), "memory m: embed", console=console) as bar:
        vecs = e(texts, bar)
        task = bar.progress.tasks[0] if bar.progress is not None else None
    np.testing.assert_array_equal(vecs, plain)
    assert e.model.calls == [4, 4, 2]  # 10 distinct texts in batches of 4
    assert task is not None and task.completed == len(texts) == task.total


def _leaves_out(xs: list[dict]) -> tuple[np.ndarray, list[dict]]:
    """A scorer like `edit`: a row (and record) only for items that have what it needs; none at all refused."""
    kept = [n for n, x in enumerate(xs) if x["keep"]]
    if not kept:
        raise ValueError("no item has what the metric needs")
    return np.array([[float(len(xs[n]["text"]))] for n in kept]), [{"index": n, "text": xs[n]["text"]} for n in kept]


def test_chunks_put_rows_of_a_scorer_that_leaves_items_out_back_in_order():
    items = [{"text": "x" * (7 * i % 11 + 1), "keep": i % 3 != 1} for i in range(12)]
    whole, whole_recs = _leaves_out(items)
    for chunk in (1, 3, 5, 12):
        bar = Bar(len(items))
        stats, recs = scored_in_chunks(_leaves_out, items, bar, chunk)
        np.testing.assert_array_equal(stats, whole)
        assert recs == whole_recs and bar.completed == len(items)
    with pytest.raises(ValueError, match="no item"):  # refused as a whole: the same error as one call
        scored_in_chunks(_leaves_out, [{"text": "ab", "keep": False}] * 3, Bar(3), 1)
