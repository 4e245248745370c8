"""Forgetting in the right units (issue 15 item 5): the continual-learning metrics of perplexity tasks are
computed on mean NLL in nats per token (ln perplexity), their CIs on the same scale, and the unit is named in
results.json, the terminal table and the HTML report."""

import io
import json
import math

import numpy as np
import pytest
from rich.console import Console

from lifelong.eval.results import Results

SPREAD = np.array([0.05, -0.05, 0.02, -0.02])
"""Per-document deviations of the NLL per token around a cell's mean (they sum to zero with equal lengths)."""


def ppl_stats(ppl: float, tokens: int = 50) -> np.ndarray:
    """Per-document [summed NLL, tokens] of four equal-length documents whose perplexity is exactly `ppl`."""
    nll = math.log(ppl) * (1 + SPREAD)
    return np.stack([nll * tokens, np.full(4, tokens)], axis=1)


def hand_built(metric: str = "perplexity", cells: dict | None = None) -> Results:
    """Two perplexity tasks; task a explodes from 3 to 3000 after stage b."""
    cells = cells or {"a": [5.0, 3.0, 3000.0], "b": [20.0, 10.0, 4.0]}
    tasks = [
        {"name": n, "metric": metric, "higher_is_better": False, "stage": k, "scorer": metric, "n": 4}
        for k, n in enumerate(cells)
    ]
    res = Results("units", ["baseline", "a", "b"], tasks)
    for j, vals in enumerate(cells.values()):
        for r, v in enumerate(vals):
            res.set_cell(r, j, ppl_stats(v))
    return res


def test_perplexity_forgetting_is_measured_in_nats_per_token_with_cis_on_that_scale():
    res = hand_built()
    assert res.matrix[2][0] == pytest.approx(3000.0)  # the matrix keeps showing perplexity
    g = res.compute_metrics(n_boot=300, seed=0)["perplexity"]
    m = g["metrics"]
    ln = math.log
    # by hand, with T = 2 stages (D = T - 1 = 1) and s = -1 (lower is better)
    assert m["FM"] == pytest.approx(ln(3000) - ln(3))  # 6.91 nats/token, not 2,997
    assert m["BWT"] == pytest.approx(-(ln(3000) - ln(3)))
    assert m["FWT"] == pytest.approx(-(ln(10) - ln(20)))  # stage a made task b's text likelier: +0.69
    assert m["AA"] == pytest.approx((ln(3000) + ln(4)) / 2)
    assert m["AIA"] == pytest.approx((ln(3) + (ln(3000) + ln(4)) / 2) / 2)
    assert g["unit"] == "nats/token" and g["score_unit"] == "perplexity" and g["higher_is_better"] is False
    for name in ("AA", "FM", "BWT", "FWT"):
        lo, hi = g["ci95"][name]
        assert lo <= m[name] <= hi, name
        assert hi - lo < 2.0, name  # on the NLL scale; a CI over raw perplexity would span thousands
    assert g["ci95"]["FM"][1] < 100  # and never reaches the raw perplexity difference
    assert res.tasks[0]["unit"] == "perplexity" and res.tasks[0]["metrics_unit"] == "nats/token"


def test_one_exploding_task_no_longer_dominates():
    """Task a explodes by 1000x, task b improves 5x: on raw perplexity FWT/BWT are all task a; on NLL each
    task moves by the log of its ratio."""
    m = hand_built().compute_metrics(n_boot=0)["perplexity"]["metrics"]
    assert abs(m["BWT"]) < 10  # raw perplexity gave -2,997
    assert m["FWT"] > 0  # raw: +10 (20 -> 10); NLL: ln 2


def test_bits_per_byte_is_already_a_log_scale_and_enters_as_it_is():
    res = hand_built("bits_per_byte")
    g = res.compute_metrics(n_boot=0)["bits_per_byte"]
    M = np.array(res.matrix)
    assert g["unit"] == "bits/byte" and g["score_unit"] == "bits/byte"
    assert g["metrics"]["FM"] == pytest.approx(M[2, 0] - M[1, 0])  # differences of the score itself


def test_units_are_named_in_results_json_the_table_and_the_report(tmp_path):
    from lifelong.report.html import build_report
    from lifelong.report.table import print_run

    res = hand_built()
    res.compute_metrics(n_boot=50)
    res.save(tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["metrics"]["perplexity"]["unit"] == "nats/token"
    assert {t["metrics_unit"] for t in saved["tasks"]} == {"nats/token"}
    assert "nats/token" in saved["metrics"]["convention"]
    out = io.StringIO()
    print_run(tmp_path, Console(file=out, width=200))
    text = out.getvalue()
    assert "perplexity in nats/token, the log of perplexity, lower score is better: a, b" in text
    assert f"{math.log(3000) - math.log(3):.2f}" in text  # FM 6.91 printed
    html = build_report(tmp_path).read_text()
    assert "perplexity in nats/token, the log of perplexity, lower score is better: a, b" in html


def test_pretrain_stream_metrics_are_the_logs_of_the_matrix(tmp_path):
    """A tiny two-domain pre-training stream: the FWT/FM the run reports are differences of ln perplexity
    from its own matrix. `pytest tests/test_units.py -s -k stream` prints the before/after figure."""
    from lifelong.eval.metrics import continual_metrics
    from lifelong.runner import Run
    from lifelong.testing import tiny_domains
    from lifelong.validation import validate_raw

    d = tiny_domains(n_docs=200)
    raw = {
        "name": "units",
        "output_dir": str(tmp_path / "runs"),
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "train": {"lr": 3e-3, "batch_size": 8, "max_steps": 40, "max_length": 64},
        "eval": {"bootstrap": 100, "batch_size": 32},
        "stages": [
            {"name": n, "kind": "pretrain", "data": {"rows": d[n]["train"]}, "eval": {"rows": d[n]["eval"]}}
            for n in ("alpha", "omega")
        ],
    }
    res = Run(validate_raw(raw), quiet=True).execute()
    M = np.array(res.matrix)  # rows: baseline, after alpha, after omega; perplexity
    g = res.metrics["perplexity"]
    assert g["metrics"]["FWT"] == pytest.approx(-(math.log(M[1, 1]) - math.log(M[0, 1])), rel=1e-6)
    assert g["metrics"]["FM"] == pytest.approx(math.log(M[2, 0]) - math.log(M[1, 0]), rel=1e-6)
    before = continual_metrics(M[1:], M[0], [False, False])  # what was reported before: raw perplexity
    print(f"\nmatrix (perplexity): {M.round(2).tolist()}")
    for k in ("FWT", "FM", "BWT", "AA"):
        lo, hi = g["ci95"][k]
        print(f"{k}: raw perplexity {before[k]:,.2f} -> {g['metrics'][k]:.3f} nats/token [{lo:.3f}, {hi:.3f}]")
