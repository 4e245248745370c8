"""Report and compare from small saved run directories under tests/data/ (no training)."""

import re
import shutil
from pathlib import Path

import pytest

from lifelong.cli import main

DATA = Path(__file__).parent / "data" / "runs"


@pytest.fixture
def runs(tmp_path):
    for d in DATA.iterdir():
        shutil.copytree(d, tmp_path / d.name)
    return tmp_path


def test_report_has_every_section(runs, capsys):
    assert main(["report", str(runs / "naive")]) == 0
    html = (runs / "naive" / "report.html").read_text()
    for section in ("matrix", "metrics", "curves", "training", "costs", "config", "environment"):
        assert f'id="{section}"' in html, section
    assert html.count("<svg") >= 3  # heatmap, curves, training
    # self-contained: no external stylesheet, script, image or font
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html)
    assert "<script src" not in html and "<link" not in html
    for m in ("AA", "AIA", "FM", "BWT", "FWT"):
        assert f"<td>{m}</td>" in html
    assert "BWT and FM divide by" in html  # the convention is stated
    assert "replay_buffer_examples" not in html and "trainable_params" in html
    assert "torch" in html and "device" in html


def test_report_of_an_unfinished_run_says_so(runs):
    import json

    p = runs / "naive" / "results.json"
    d = json.loads(p.read_text())
    d["matrix"][-1] = [None] * len(d["matrix"][-1])
    d["metrics"] = {}
    p.write_text(json.dumps(d))
    assert main(["report", str(runs / "naive")]) == 0
    html = (runs / "naive" / "report.html").read_text()
    assert "has not finished" in html and "Metrics appear when the run has finished" in html


def test_compare_same_stream(runs, capsys):
    out = runs / "cmp.html"
    assert main(["compare", str(runs / "naive"), str(runs / "replay"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "naive" in text and "replay" in text and "FM" in text
    html = out.read_text()
    assert 'id="tradeoff"' in html and "Pareto front" in html and html.count("<svg") == 2  # + the paired forest plot
    assert 'id="paired"' in html and "replay - naive: metrics" in text


def test_compare_refuses_different_streams(runs, capsys):
    assert main(["compare", str(runs / "naive"), str(runs / "other")]) == 2
    err = capsys.readouterr().err
    assert "different stream" in err and "stages" in err


def test_show_reports_progress_of_an_unfinished_run(runs, capsys):
    ev = runs / "naive" / "events.jsonl"
    lines = [l for l in ev.read_text().splitlines() if '"end"' not in l]
    ev.write_text("\n".join(lines) + '\n{"type": "step", "stage": 1, "step": 3, "loss": 0.5, "lr": 0.001}\n{"trunc')
    assert main(["show", str(runs / "naive")]) == 0
    assert "stage 1 step 4" in capsys.readouterr().out


def test_tensorboard_tracker_receives_losses_and_scores(tiny_cfg):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lifelong.runner import Run

    cfg = tiny_cfg("naive", n_stages=2, steps=3, name="tb")
    cfg.trackers = ["tensorboard"]
    run = Run(cfg, quiet=True)
    run.execute()
    files = list((run.run_dir / "trackers").rglob("events.out.tfevents.*"))
    assert files
    tags = set()
    for f in files:
        acc = EventAccumulator(str(f.parent))
        acc.Reload()
        tags |= set(acc.Tags().get("scalars", []))
    assert {"train/loss", "train/lr", "eval/task0", "eval/task1"} <= tags
    assert any(t.startswith("metrics/score/") for t in tags)
