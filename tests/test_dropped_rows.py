"""Nothing dropped silently (issue 23 item 2): rows longer than max_length are cut or dropped by
`data.truncate`, counted per stage in the event log and the costs, and warned about naming the first row;
eval items longer than the model's context are fitted and counted the same way."""

import json
import re

import pytest

from lifelong.config import DataConfig, EvalTaskConfig
from lifelong.data import Formatter, Rows, load_rows, to_examples
from lifelong.data.formats import to_preference_examples
from lifelong.data.lengths import TruncationWarning, fit_sequence
from lifelong.strategies.replay import Replay
from lifelong.testing import tiny_tokenizer

MAX = 32
LONG = "t0 " + "abcdef" * 4 + "abc"  # 30 prompt tokens: with the response (" yes" + EOS, 5 tokens) over MAX


def _rows(tmp_path, n=10, long_at=(3, 7), long=LONG):
    """A jsonl training file of `n` short prompt-response rows; rows `long_at` (0-based) are longer than MAX."""
    rows = [
        {"prompt": long if k in long_at else f"t0 {'abcdef'[k % 6]}b?", "response": "yes" if k % 2 else "no"}
        for k in range(n)
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def _cfg(tmp_path, truncate, path, strategy="naive", stage=None):
    from lifelong.validation import validate_raw

    eval_rows = [{"prompt": "t0 ab?", "response": "yes"}] * 4
    return validate_raw(
        {
            "name": f"drop-{truncate}",
            "output_dir": str(tmp_path / "runs"),
            "torch_threads": 1,
            "model": {"tiny": "llama"},
            "strategy": strategy,
            "train": {"lr": 1e-3, "batch_size": 4, "max_steps": 1, "max_length": MAX},
            "eval": {"batch_size": 8, "bootstrap": 0},
            "stages": [
                {
                    "name": "s0",
                    "kind": "instruct",
                    "data": {"path": str(path), "truncate": truncate},
                    "eval": {"rows": eval_rows, "scorer": "exact_match", "params": {"max_new_tokens": 2}},
                    **(stage or {}),
                }
            ],
        }
    )


def _fm():
    return Formatter(tiny_tokenizer())


def test_left_keeps_the_response_and_cuts_the_start_of_the_prompt(tmp_path):
    path, rows = _rows(tmp_path, long="t0 " + "abcdef" * 10)  # the prompt alone is longer than MAX
    fm = _fm()
    out = {
        m: to_examples(
            load_rows(DataConfig(path=str(path))), "prompt_response", DataConfig(path=str(path), truncate=m), fm, MAX
        )
        for m in ("left", "right", "drop")
    }
    full_p, full_q = fm.prompt_ids(rows[3]["prompt"]), fm.response_ids(rows[3]["response"])
    left = out["left"][3]
    assert len(left["input_ids"]) == MAX
    assert [t for t in left["labels"] if t != -100] == full_q  # the whole response, EOS included
    assert left["input_ids"] == (full_p + full_q)[-MAX:]  # what is cut is the start of the prompt
    assert (out["left"].lengths.truncated, out["left"].lengths.dropped, len(out["left"])) == (2, 0, 10)
    # the prompt alone fills max_length: cutting the end leaves no response token, so the rows are dropped
    assert (out["right"].lengths.dropped, len(out["right"])) == (2, 8)
    assert (out["drop"].lengths.dropped, len(out["drop"])) == (2, 8)
    assert out["left"].lengths.first == out["right"].lengths.first == f"{path} line 4"
    assert [e for k, e in enumerate(out["left"]) if k not in (3, 7)] == list(out["drop"]) == list(out["right"])


def test_left_keeps_bos_then_cuts_the_end_of_a_response_longer_than_the_limit():
    bos, prompt, resp = 1, [1, 10, 11, 12, 13], [20, 21, 22, 23, 24, 25, 26]
    ids, labels = prompt + resp, [-100] * len(prompt) + resp
    kept, outcome = fit_sequence(ids, labels, 9, "left", bos)
    assert outcome == "truncated" and kept == ([1, 13] + resp, [-100, -100] + resp)
    kept, _ = fit_sequence(ids, labels, 8, "left", bos)  # the prompt gives way completely first
    assert kept == ([1] + resp, [-100] + resp)
    kept, outcome = fit_sequence(ids, labels, 6, "left", bos)  # then the response loses its end
    assert outcome == "truncated" and kept == ([1] + resp[:5], [-100] + resp[:5])
    assert fit_sequence(ids, labels, 12, "drop", bos) == ((ids, labels), None)
    assert fit_sequence(ids, labels, 11, "drop", bos) == (None, "dropped")
    assert fit_sequence(ids, labels, 5, "right", bos) == (None, "dropped")  # no response token left


def test_preference_pairs_share_the_cut_prompt():
    fm = _fm()
    prompt = "abcdefghij" * 3
    rows = Rows(
        [
            {"prompt": prompt, "chosen": "yes it is", "rejected": "no"},
            {"prompt": "ab", "chosen": "yes", "rejected": "no"},
        ],
        ["p.jsonl line 1", "p.jsonl line 2"],
        "p.jsonl",
    )
    ex = to_preference_examples(rows, DataConfig(rows=[{}], truncate="left"), fm, MAX)
    assert (ex.lengths.truncated, ex.lengths.dropped, ex.lengths.first) == (1, 0, "p.jsonl line 1")
    p, qc, qr = fm.prompt_ids(prompt), fm.response_ids("yes it is"), fm.response_ids("no")
    cut = len(p) + len(qc) - MAX  # as much as the longer response needs, from the prompt's start, on both sides
    assert ex[0]["chosen_ids"] == p[cut:] + qc and ex[0]["rejected_ids"] == p[cut:] + qr
    assert ex[0]["chosen_labels"] == [-100] * (len(p) - cut) + qc
    dropped = to_preference_examples(rows, DataConfig(rows=[{}], truncate="drop"), fm, MAX)
    assert len(dropped) == 1 and dropped.lengths.dropped == 1


@pytest.mark.parametrize("truncate", ["drop", "left", "right"])
def test_a_stage_counts_cut_and_dropped_rows_in_events_costs_and_a_warning(tmp_path, monkeypatch, truncate):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    from lifelong.runner import Run

    path, _ = _rows(tmp_path)  # rows 4 and 8 (1-based lines) have 33 prompt tokens + 5 response tokens
    with pytest.warns(TruncationWarning, match=re.escape(f"the first is {path} line 4")):
        run = Run(_cfg(tmp_path, truncate, path), quiet=True)
    res = run.execute()
    events = [json.loads(x) for x in (run.run_dir / "events.jsonl").read_text().splitlines()]
    data = [e for e in events if e["type"] == "data"]
    want = {"rows": 10, "truncated": 0 if truncate == "drop" else 2, "dropped": 2 if truncate == "drop" else 0}
    assert len(data) == 1 and data[0]["stage"] == 0 and data[0]["first"] == f"{path} line 4"
    assert {k: data[0][k] for k in want} == want and data[0]["truncate"] == truncate
    assert {k: res.costs["s0"][k] for k in want} == want
    saved = json.loads((run.run_dir / "results.json").read_text())["costs"]["s0"]
    assert {k: saved[k] for k in want} == want
    assert len(run.prepared[0]) == 10 - want["dropped"]


def test_a_preference_stage_counts_its_pairs(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    from lifelong.runner import Run

    pairs = [{"prompt": LONG if k == 2 else f"t0 {'abcdef'[k]}b?", "chosen": "yes", "rejected": "no"} for k in range(6)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    stage = {"kind": "preference", "eval": {"rows": pairs[:2]}, "preference": {"beta": 0.1}}
    with pytest.warns(TruncationWarning, match=re.escape(f"the first is {path} line 3")):
        run = Run(_cfg(tmp_path, "drop", path, stage=stage), quiet=True)
    res = run.execute()
    events = [json.loads(x) for x in (run.run_dir / "events.jsonl").read_text().splitlines()]
    data = [e for e in events if e["type"] == "data"]
    assert [(e["rows"], e["truncated"], e["dropped"], e["first"]) for e in data] == [(6, 0, 1, f"{path} line 3")]
    assert (res.costs["s0"]["rows"], res.costs["s0"]["dropped"]) == (6, 1) and len(run.prepared[0]) == 5


def test_replay_buffer_holds_exactly_the_kept_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    from lifelong.runner import Run

    path, _ = _rows(tmp_path)
    with pytest.warns(TruncationWarning):
        run = Run(_cfg(tmp_path, "drop", path, strategy={"name": "replay", "buffer_size": 100}), quiet=True)
    run.execute()
    assert isinstance(run.strategy, Replay)
    assert len(run.strategy.buffer) == 10 - 2
    assert sorted(e["input_ids"] for e in run.strategy.buffer) == sorted(e["input_ids"] for e in run.prepared[0])


def test_the_warning_names_file_and_row_on_the_console_and_the_cache_key_holds_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    from rich.console import Console

    from lifelong.runner import Run

    path, _ = _rows(tmp_path)
    console = Console(record=True, width=400)
    left = Run(_cfg(tmp_path, "left", path), quiet=False, console=console)
    text = console.export_text()
    assert "warning: stage 0 (s0): 2 of 10 rows are longer than train.max_length=32" in text
    assert f"the first is {path} line 4" in text
    cfg = _cfg(tmp_path, "drop", path)
    cfg.name = "drop-after-left"
    with pytest.warns(TruncationWarning):
        dropped = Run(cfg, quiet=True)  # same rows, same cache: the setting is part of the key
    assert len(left.prepared[0]) == 10 and len(dropped.prepared[0]) == 8


def test_eval_items_longer_than_the_context_are_fitted_and_counted(tmp_path):
    import math

    from lifelong.eval.lm import HFLM
    from lifelong.eval.tasks import build_task, eval_context, lengths_message
    from lifelong.testing import tiny_gpt2

    ctx = 48
    model = tiny_gpt2(n_positions=ctx).eval()
    fm = _fm()
    assert eval_context(model) == ctx
    items = [
        {"prompt": ("t0 abc " * 12 if k in (1, 4) else "t0 ab?"), "options": ["no", "yes"], "answer": 1}
        for k in range(6)
    ]
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    task = build_task(EvalTaskConfig(path=str(path)), "e", 0, None, None, "stages.0.eval", fm, ctx)
    assert task.lengths is not None and task.lengths.truncated == 2 and task.lengths.first == f"{path} line 2"
    assert len(task.items) == 6
    cut = task.items[1]["prompt"]
    assert items[1]["prompt"].endswith(cut) and len(cut) < len(items[1]["prompt"])  # the start gave way
    assert len(fm.prompt_ids(cut)) + max(len(fm.response_ids(o, eos=False)) for o in ("no", "yes")) <= ctx
    msg = lengths_message(task)
    assert msg is not None and f"the first is {path} line 2" in msg and "stages.0.eval.truncate" in msg
    stats = task.scorer.score(HFLM(model, fm, max_length=ctx), task.items)  # no position beyond the model's
    assert len(stats) == 6 and all(math.isfinite(float(v)) for v in stats.ravel())
    dropped = build_task(EvalTaskConfig(path=str(path), truncate="drop"), "e", 0, None, None, "x", fm, ctx)
    assert len(dropped.items) == 4 and dropped.lengths is not None and dropped.lengths.dropped == 2
    docs = build_task(EvalTaskConfig(rows=[{"text": "abcdef " * 20}]), "d", 0, None, None, "y", fm, ctx)
    assert docs.lengths is not None and docs.lengths.truncated == 1
    assert ("abcdef " * 20).startswith(docs.items[0]["text"])  # a document keeps its start: every token is scored
    assert 1 + len(fm.tok(docs.items[0]["text"], add_special_tokens=False)["input_ids"]) <= ctx
