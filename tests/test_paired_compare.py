"""Paired comparison of runs (`lifelong compare`, `api.compare`, `eval/compare_stats.py`) on synthetic per-example
statistics: no model, no training."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import yaml

from lifelong.eval.compare_stats import NOT_DISTINGUISHABLE, RunData, paired_compare, seed_groups
from lifelong.eval.metrics import score_ci
from lifelong.eval.results import Results

ROWS = ["baseline", "task0", "task1"]

Stats = Callable[[int, int], np.ndarray]
"""(row, task) -> per-example statistics (n, k) of that cell."""


def make_run(
    name: str,
    stats: Stats,
    *,
    n_tasks: int = 2,
    strategy: str = "naive",
    seed: int = 0,
    lr: float = 1e-3,
    scorers: Optional[list[str]] = None,
) -> RunData:
    """A finished run of a stream of `n_tasks` stages (one eval task each), built through `Results` as a real run
    saves it, with its metrics and their (unpaired) bootstrap CIs."""
    scorers = scorers or ["choice"] * n_tasks
    tasks = [
        {
            "name": f"task{j}",
            "metric": "perplexity" if s == "perplexity" else "accuracy",
            "higher_is_better": s != "perplexity",
            "stage": j,
            "scorer": s,
        }
        for j, s in enumerate(scorers)
    ]
    res = Results(name, ROWS[: n_tasks + 1], tasks)
    res.extra["strategy"] = [strategy]
    for r in range(n_tasks + 1):
        for j in range(n_tasks):
            res.set_cell(r, j, stats(r, j))
    res.compute_metrics(n_boot=500, seed=0)
    cfg = {
        "name": name,
        "seed": seed,
        "strategy": [{"name": strategy}],
        "train": {"lr": lr},
        "stages": [
            {"name": f"task{j}", "eval": {"path": f"task{j}.jsonl", "scorer": s}} for j, s in enumerate(scorers)
        ],
    }
    return RunData(name, json.loads(json.dumps(res.to_dict())), json.loads(json.dumps(res.stats)), cfg, name)


def save(run: RunData, root: Path) -> Path:
    d = root / run.name
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(run.results))
    (d / "per_example.json").write_text(json.dumps(run.per_example))
    (d / "config.yaml").write_text(yaml.safe_dump(run.config))
    return d


def base_scores(n: int, seed: int = 0) -> np.ndarray:
    """Per-item, per-cell statistics in [0, 1] (e.g. the probability of the right option), items differing a lot
    in difficulty: shape (rows, tasks, n)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0.1, 0.8, size=(1, 2, n))
    return np.clip(difficulty + rng.normal(0, 0.03, size=(3, 2, n)), 0, 1)


def test_paired_ci_sees_what_unpaired_intervals_miss():
    """Run B is better than A on every item of every cell by a small margin (2-4 points): each run's own 95%
    intervals overlap, the paired CI excludes 0 and the permutation test puts p at its floor."""
    n = 60
    a = base_scores(n)
    lift = np.random.default_rng(1).uniform(0.02, 0.04, size=a.shape)
    run_a = make_run("a", lambda r, j: a[r, j][:, None])
    run_b = make_run("b", lambda r, j: (a[r, j] + lift[r, j])[:, None], strategy="replay")
    out = paired_compare([run_a, run_b], n_boot=1000, n_perm=500)
    aa = out["comparisons"][0]["metrics"]["score"]["metrics"]["AA"]
    ci_a, ci_b = (r.results["metrics"]["score"]["ci95"]["AA"] for r in (run_a, run_b))
    assert ci_b[0] < ci_a[1]  # the unpaired intervals overlap: they cannot tell the runs apart
    assert 2 < aa["difference"] < 4 and aa["ci"][0] > 1.5 and aa["verdict"] == "better"
    assert aa["p"] == pytest.approx(1 / 501)
    agg = lambda s: 100 * s[..., 0].mean(-1)  # noqa: E731
    for cell in out["comparisons"][0]["cells"]:
        r, j = ROWS.index(cell["row"]), int(cell["task"][-1])
        own_a, own_b = score_ci(a[r, j][:, None], agg), score_ci((a[r, j] + lift[r, j])[:, None], agg)
        assert own_a is not None and own_b is not None and own_b[0] < own_a[1]  # overlap, cell by cell
        assert cell["ci"][0] > 0 and cell["verdict"] == "better" and cell["p"] < 0.01
    # BWT and FM are differences of cells: B's margin is the same before and after, so nothing to see there
    assert out["comparisons"][0]["metrics"]["score"]["metrics"]["FM"]["verdict"] == NOT_DISTINGUISHABLE


def test_identical_runs_differ_by_zero_with_p_one():
    a = base_scores(30)
    ppl = np.random.default_rng(2).uniform(1, 4, size=(3, 30))
    stats = lambda r, j: a[r, j][:, None] if j == 0 else np.stack([ppl[r] * 7, np.full(30, 7.0)], -1)  # noqa: E731
    runs = [make_run(name, stats, strategy=name, scorers=["choice", "perplexity"]) for name in ("x", "y")]
    out = paired_compare(runs, n_boot=200, n_perm=200)
    comp = out["comparisons"][0]
    assert set(comp["metrics"]) == {"score", "perplexity"}  # every group, each in its own unit
    assert comp["metrics"]["perplexity"]["unit"] == "nats/token"
    entries = [e for g in comp["metrics"].values() for e in g["metrics"].values()] + comp["cells"]
    assert len(comp["cells"]) == 6 and len(entries) > 6
    for e in entries:
        assert e["difference"] == 0 and e["ci"] == [0.0, 0.0] and e["p"] == 1.0
        assert e["verdict"] == NOT_DISTINGUISHABLE


def test_point_differences_are_the_runs_reported_metrics():
    a, b = base_scores(40, seed=3), base_scores(40, seed=4)
    runs = [make_run("a", lambda r, j: a[r, j][:, None]), make_run("b", lambda r, j: b[r, j][:, None], lr=1e-4)]
    out = paired_compare(runs, reference=1, n_boot=100, n_perm=100)
    assert out["reference"] == "b" and out["comparisons"][0]["run"] == "a"
    for m, e in out["comparisons"][0]["metrics"]["score"]["metrics"].items():
        ma, mb = (r.results["metrics"]["score"]["metrics"][m] for r in runs)
        assert e["run"] == pytest.approx(ma) and e["reference"] == pytest.approx(mb)
        assert e["difference"] == pytest.approx(ma - mb)


def one_cell_runs(x: np.ndarray, y: np.ndarray) -> list[RunData]:
    """A one-stage stream whose final cell is a plain mean (x: the reference's per-item values, y: the run's)."""
    return [
        make_run(name, lambda r, j, v=v: v[:, None] / 100, n_tasks=1, strategy=name)
        for name, v in (("ref", x), ("run", y))
    ]


def test_p_value_agrees_with_scipy_paired_permutation_test():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    x = rng.uniform(20, 80, 40)
    y = x + rng.normal(1.5, 6, 40)  # a mean difference of the size where p is neither tiny nor 1
    out = paired_compare(one_cell_runs(x, y), n_boot=10, n_perm=6000, seed=1)
    cell = next(c for c in out["comparisons"][0]["cells"] if c["row"] == "task0")
    ref = stats.permutation_test(
        (y, x),
        lambda a, b, axis: np.mean(a - b, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=9999,
        alternative="two-sided",
        random_state=0,
    )
    assert 0.02 < ref.pvalue < 0.6  # the test is informative only away from the extremes
    assert cell["p"] == pytest.approx(ref.pvalue, abs=0.03)
    aa = out["comparisons"][0]["metrics"]["score"]["metrics"]["AA"]  # one stage: AA is that cell
    assert aa["p"] == pytest.approx(cell["p"]) and aa["difference"] == pytest.approx(np.mean(y - x))


def test_ci_agrees_with_scipy_paired_bootstrap():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(6)
    x = rng.uniform(20, 80, 50)
    y = x + rng.normal(3, 5, 50)
    out = paired_compare(one_cell_runs(x, y), n_boot=4000, n_perm=10)
    cell = next(c for c in out["comparisons"][0]["cells"] if c["row"] == "task0")
    ref = stats.bootstrap(
        (y, x),
        lambda a, b, axis: np.mean(a - b, axis=axis),
        paired=True,
        method="percentile",
        n_resamples=4000,
        random_state=0,
    ).confidence_interval
    width = ref.high - ref.low
    assert cell["ci"] == pytest.approx([ref.low, ref.high], abs=0.1 * width)


def test_seeds_are_pooled_and_their_spread_widens_the_ci():
    """Three seeds of B whose margins over A differ (1, 6, 11 points): pooled, the CI covers seed variance; each
    seed alone has a narrow item-only CI around its own margin."""
    a = base_scores(50)
    runs = [make_run("a", lambda r, j: a[r, j][:, None])]
    for s, lift in enumerate((0.01, 0.06, 0.11)):
        runs.append(make_run(f"b-s{s}", lambda r, j, m=lift: (a[r, j] + m)[:, None], strategy="replay", seed=s))
    runs.append(make_run("b-lr", lambda r, j: a[r, j][:, None], strategy="replay", lr=1e-5))
    assert seed_groups(runs) == [[0], [1, 2, 3], [4]]  # a different lr is another configuration, not a seed
    pooled = paired_compare(runs, n_boot=1000, n_perm=100)
    assert [c["run"] for c in pooled["comparisons"]] == ["b-s0 + b-s1 + b-s2", "b-lr"]
    assert pooled["configurations"][1]["seeds"] == [0, 1, 2]
    aa = pooled["comparisons"][0]["metrics"]["score"]["metrics"]["AA"]
    assert aa["difference"] == pytest.approx(6.0, abs=0.01)
    per_run = paired_compare(runs, n_boot=1000, n_perm=100, pool_seeds=False)
    singles = [c["metrics"]["score"]["metrics"]["AA"] for c in per_run["comparisons"][:3]]
    assert [round(e["difference"]) for e in singles] == [1, 6, 11]
    widest = max(e["ci"][1] - e["ci"][0] for e in singles)
    assert aa["ci"][1] - aa["ci"][0] > 5 * widest and aa["ci"][0] < 6 - 3 and aa["ci"][1] > 6 + 3


def test_runs_on_different_items_are_refused():
    a, b = base_scores(30), base_scores(31)
    runs = [make_run("a", lambda r, j: a[r, j][:, None]), make_run("b", lambda r, j: b[r, j][:, None], lr=0.1)]
    with pytest.raises(ValueError, match=r"b/per_example.json: task 'task0' row 'baseline' has 31 items.*same eval"):
        paired_compare(runs)


def test_cli_says_not_distinguishable_and_writes_the_forest_plot(tmp_path, capsys):
    from lifelong.cli import main

    a = base_scores(40)
    noise = np.random.default_rng(7).normal(0, 0.05, size=a.shape)
    save(make_run("naive", lambda r, j: a[r, j][:, None]), tmp_path)
    save(make_run("wobbly", lambda r, j: np.clip(a[r, j] + noise[r, j], 0, 1)[:, None], strategy="ewc"), tmp_path)
    save(make_run("lifted", lambda r, j: (a[r, j] + 0.05)[:, None], strategy="replay"), tmp_path)
    out = tmp_path / "cmp.html"
    dirs = [str(tmp_path / n) for n in ("wobbly", "naive", "lifted")]
    assert (
        main(["compare", *dirs, "--reference", "naive", "--out", str(out), "--n-boot", "300", "--n-perm", "300"]) == 0
    )
    text = capsys.readouterr().out
    wobbly = text[text.index("wobbly - naive: metrics") : text.index("wobbly - naive: matrix cells")]
    lifted = text[text.index("lifted - naive: metrics") : text.index("lifted - naive: matrix cells")]
    assert re.search(r"AA .* not distinguishable", wobbly) and "better" not in wobbly
    assert re.search(r"AA .* better", lifted)
    html = out.read_text()
    assert 'id="paired"' in html and html.count("<svg") == 2  # the forest plot beside the trade-off scatter
    assert "<caption>Metrics: wobbly minus naive</caption>" in html and NOT_DISTINGUISHABLE in html
    assert main(["compare", *dirs, "--reference", "nobody", "--out", str(out)]) == 2
    assert "reference 'nobody' is not one of the compared runs" in capsys.readouterr().err


def test_terminal_comparison_fits_80_columns_with_whole_names(tmp_path):
    from rich.console import Console

    from lifelong.report.compare import paired
    from lifelong.report.html import load_run
    from lifelong.report.table import print_comparison

    a = base_scores(20)
    names = ["bb-naive-smollm2-135m-instruct-seed0", "bb-replay-smollm2-135m-instruct-buffer200-fraction30"]
    dirs = [
        save(make_run(names[0], lambda r, j: a[r, j][:, None]), tmp_path),
        save(make_run(names[1], lambda r, j: (a[r, j] + 0.1)[:, None], strategy="replay-with-a-long-name"), tmp_path),
    ]
    very_long = "x" * 50 + "-a-run-name-longer-than-any-column-could-hold-" + "y" * 50
    dirs.append(save(make_run(very_long, lambda r, j: a[r, j][:, None], lr=0.5), tmp_path))
    result = paired([load_run(d) for d in dirs], n_boot=50, n_perm=50)
    summaries = [{"new": 55.5, "wall": 1234.5}] * 3
    console = Console(width=80, record=True)
    print_comparison(dirs, console, result, summaries)
    lines = console.export_text().splitlines()
    assert lines and max(len(line) for line in lines) <= 80
    for name in names + ["replay-with-a-long-name"]:
        assert any(name in line for line in lines), name  # whole, on one line
    assert "…" not in "".join(lines) and "..." not in "".join(lines)
    pieces = "".join(line.split()[0] for line in lines if line.split() and set(line.split()[0]) <= set(very_long))
    assert very_long in pieces  # wrapped, never cut: its pieces in order spell it out
    assert "not distinguishable" in "\n".join(lines) and "better" in "\n".join(lines)


def test_runs_on_other_items_of_the_same_count_are_refused(tmp_path):
    """Per-item records (examples/<task>/<row>.jsonl) name each item: an edited eval file keeps the count but
    not the ids, and the comparison refuses instead of pairing unrelated items."""
    from lifelong.api import compare
    from lifelong.eval.results import write_examples

    a = base_scores(10)
    dirs = [
        save(make_run("a", lambda r, j: a[r, j][:, None]), tmp_path),
        save(make_run("b", lambda r, j: a[r, j][:, None], strategy="replay"), tmp_path),
    ]
    for d, edited in zip(dirs, (False, True)):
        for j in range(2):
            ids = [f"{k}-{'eeeeeeee' if edited and j == 1 and k == 3 else 'aaaaaaaa'}" for k in range(10)]
            write_examples(d, f"task{j}", "baseline", [{"id": i, "stats": [0.5]} for i in ids])
    with pytest.raises(ValueError, match=r"task1.*item 3 is 3-eeeeeeee.*scored 3-aaaaaaaa.*different eval items"):
        compare(dirs, n_boot=10, n_perm=10)
    write_examples(dirs[1], "task1", "baseline", [{"id": f"{k}-aaaaaaaa", "stats": [0.5]} for k in range(10)])
    assert compare(dirs, n_boot=10, n_perm=10)["comparisons"][0]["run"] == "b"
