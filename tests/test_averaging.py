"""Model averaging after a preference stage (issue 15 item 8): which end of the ratio is which, and the
averaging sweep's points with bootstrap CIs like every other score, in results.json and the report."""

import torch

from lifelong.testing import tiny_llama
from lifelong.train.averaging import average_into


def test_ratio_zero_is_the_model_before_the_stage_and_one_the_aligned_model():
    model = tiny_llama(seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    after = {n: p + 1.0 for n, p in before.items()}
    for a in (0.0, 0.25, 1.0):
        average_into(model, before, after, [a])
        for n, p in model.named_parameters():
            assert torch.allclose(p, before[n] + a), (a, n)  # (1 - a) * before + a * after


def test_averaging_sweep_points_have_cis_that_hold_their_scores_and_the_report_shows_them(tmp_path):
    from lifelong.report.html import build_report
    from lifelong.runner import Run
    from lifelong.testing import tiny_run_config
    from lifelong.validation import validate_raw

    raw = tiny_run_config("naive", n_stages=2, steps=8, name="sweep", output_dir=str(tmp_path / "runs"))
    s = raw["stages"][1]

    def pairs(rows: list[dict]) -> list[dict]:
        flip = {"yes": "no", "no": "yes"}
        return [{"prompt": r["text"], "chosen": r["label"], "rejected": flip[r["label"]]} for r in rows]

    raw["stages"][1] = {
        "name": s["name"],
        "kind": "preference",
        "data": {"rows": pairs(s["data"]["rows"])},
        "eval": {"rows": pairs(s["eval"]["rows"])},
        "preference": {"average_sweep": [0.0, 0.5, 1.0], "average": [0.5]},
    }
    res = Run(validate_raw(raw), quiet=True).execute()
    sweep = res.extra["averaging_sweep"]["task1"]
    assert [p["ratio"] for p in sweep] == [0.0, 0.5, 1.0]
    for p in sweep:
        assert set(p["ci95"]) == set(p["scores"]) == {"task0", "task1"}
        for task, score in p["scores"].items():
            lo, hi = p["ci95"][task]
            assert lo <= score <= hi, (p["ratio"], task)
            assert hi - lo > 0  # 32 examples of accuracy strictly inside (0, 100) give a real interval
    assert res.matrix[2] == [sweep[1]["scores"]["task0"], sweep[1]["scores"]["task1"]]  # a = 0.5 applied
    html = build_report(tmp_path / "runs" / "sweep").read_text()
    section = html[html.index('id="sweep-task1"') :]
    assert "<svg" in section.split("</table>")[0]  # the sweep's figure, then its table with the CIs
    lo, hi = sweep[2]["ci95"]["task1"]
    assert f"{sweep[2]['scores']['task1']:,.2f} [{lo:,.2f}, {hi:,.2f}]" in section
