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


def test_report_matrix_is_an_accessible_table(runs):
    """The matrix is a real table: one scoped header per column and row, every cell's number equals
    results.json's value as shown, its CI in a tooltip and in hidden text, and text contrast >= 4.5:1."""
    import json
    from html.parser import HTMLParser

    from lifelong.report.html import contrast, hex_rgb

    class Matrix(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.depth, self.cells, self.heads, self.cur = 0, [], [], None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "table" and a.get("id") == "matrix-table":
                self.depth = 1
            elif tag == "table" and self.depth:
                self.depth += 1
            if not self.depth:
                return
            if tag == "th":
                self.heads.append(a.get("scope"))
            if tag == "td":
                self.cur = {"style": a.get("style", ""), "title": a.get("title", ""), "text": ""}
            if tag == "span" and self.cur is not None and a.get("class") == "sr-only":
                self.cur["hidden"] = True

        def handle_endtag(self, tag):
            if tag == "table" and self.depth:
                self.depth -= 1
            if tag == "td" and self.cur is not None:
                self.cells.append(self.cur)
                self.cur = None

        def handle_data(self, data):
            if self.cur is not None:
                self.cur["text"] += data

    assert main(["report", str(runs / "naive")]) == 0
    html = (runs / "naive" / "report.html").read_text()
    res = json.loads((runs / "naive" / "results.json").read_text())
    p = Matrix()
    p.feed(html)
    n_rows, n_tasks = len(res["rows"]), len(res["tasks"])
    assert p.heads == ["col"] * (n_tasks + 1) + ["row"] * n_rows
    assert len(p.cells) == n_rows * n_tasks
    for k, c in enumerate(p.cells):
        v = res["matrix"][k // n_tasks][k % n_tasks]
        shown = c["text"].split(" (")[0]
        assert shown == f"{v:,.2f}"
        assert c["title"].startswith("95% CI [") and c.get("hidden") and c["title"] in c["text"]
        style = dict(kv.split(":") for kv in c["style"].split(";"))
        assert contrast(hex_rgb(style["background"]), hex_rgb(style["color"])) >= 4.5
    # colours follow the column's range: the lowest and highest scores of a column differ in background
    col = [p.cells[r * n_tasks]["style"] for r in range(n_rows)]
    vals = [res["matrix"][r][0] for r in range(n_rows)]
    assert col[vals.index(min(vals))] != col[vals.index(max(vals))]


def test_text_colour_meets_wcag_contrast_on_every_background():
    from lifelong.report.html import cell_colour, contrast, hex_rgb, text_colour

    assert contrast((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast((118, 118, 118), (255, 255, 255)) == pytest.approx(4.54, abs=0.01)  # #767676, WCAG's edge grey
    for i in range(101):
        bg = cell_colour(i / 100)
        assert contrast(hex_rgb(bg), hex_rgb(text_colour(bg))) >= 4.5


def test_costs_table_never_cuts_a_name_at_80_columns():
    from io import StringIO

    from rich.console import Console

    from lifelong.report.table import print_costs

    costs = {
        name: {
            "wall_s": 41.2,
            "steps": 12,
            "tokens": 5000,
            "trainable_params": 134515008,
            "peak_memory_mb": 3100.5,
            "disk_mb": 513.4,
            "checkpoint_mb": 513.4,
            "export_mb": 0.0,
            "dropped": 0,
            "rows": 300,
            "truncated": 0,
        }
        for name in ("news_topic", "review_sentiment", "assistant_intent")
    }
    out = StringIO()
    print_costs(costs, Console(file=out, width=80, force_terminal=False))
    text = out.getvalue()
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    for word in ("trainable_params", "peak_memory_mb", "review_sentiment", "assistant_intent"):
        assert word in text
