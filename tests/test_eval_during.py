"""Evaluation inside a stage (`train.eval_every`, `train.eval_tasks`): the stability gap shows in the recorded
points, the points change neither training nor the matrix, a resume does not score a point twice, trackers
and the report get them, and validation locates unknown task names."""

import json
import math
import re

import pytest
import yaml

from lifelong.cli import main
from lifelong.runner import Run
from lifelong.testing import fact_requests, tiny_domains, tiny_facts, tiny_run_config
from lifelong.validation import validate_raw

REWARM = {"schedule": "cosine", "warmup_steps": 3, "lr": 1e-2}
"""Stage 2 re-warms to a high peak learning rate."""
CONSTANT = {"schedule": "constant", "warmup_steps": 0, "lr": 3e-4}
"""Stage 2 goes on at stage 1's final learning rate (cosine floor 0.1 x 3e-3), never re-warmed."""


def points(run):
    lines = (run.run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["type"] == "eval_step"]


def gap_config(tmp_path, name, second, seed=0):
    """Continual pre-training on the `alpha` domain, then on `omega`, which conflicts with it; stage 2 trains
    with `second`. The in-stage evaluation scores alpha's perplexity every 2 steps."""
    d = tiny_domains(n_docs=200, seed=seed)
    stages = [
        {"name": n, "kind": "pretrain", "data": {"rows": d[n]["train"]}, "eval": {"rows": d[n]["eval"]}} for n in d
    ]
    stages[1]["train"] = {"max_steps": 10, **second}
    train = {"lr": 3e-3, "batch_size": 8, "max_steps": 40, "max_length": 64, "schedule": "cosine", "warmup_steps": 5}
    return validate_raw(
        {
            "name": name,
            "seed": seed,
            "output_dir": str(tmp_path / "runs"),
            "torch_threads": 1,
            "model": {"tiny": "llama"},
            "train": {**train, "eval_every": 2, "eval_tasks": ["alpha"]},
            "eval": {"bootstrap": 0, "batch_size": 32},
            "stages": stages,
        }
    )


def test_rewarming_opens_a_stability_gap_that_a_constant_low_schedule_does_not(tmp_path):
    rise = {}
    for label, second in (("rewarm", REWARM), ("constant", CONSTANT)):
        run = Run(gap_config(tmp_path, label, second), quiet=True)
        res = run.execute()
        pts = points(run)
        assert all(set(p["scores"]) == {"alpha"} for p in pts)  # only the chosen eval task
        old = {p["step"]: p["scores"]["alpha"] for p in pts if p["stage"] == 1}  # perplexity: lower is better
        assert sorted(old) == [0, 2, 4, 6, 8, 10]
        assert [p["global_step"] for p in pts if p["stage"] == 1] == [40 + s for s in sorted(old)]
        # the boundary and end points are the models the matrix scores, by the same scoring path
        assert old[0] == pytest.approx(res.matrix[1][0], rel=1e-6)
        assert old[10] == pytest.approx(res.matrix[2][0], rel=1e-6)
        rise[label] = max(math.log(v / old[0]) for v in old.values())  # worst rise of alpha's log-perplexity
    # seeds 0-3: re-warmed, alpha's perplexity rises 24x to 1500x within 10 steps; constant: at most 1.23x
    assert rise["rewarm"] > math.log(5), rise
    assert rise["constant"] < math.log(1.5), rise


def test_points_change_neither_training_nor_the_matrix(tmp_path):
    # LoRA's eval model re-routes adapters and freezes them: the in-stage evaluation must put them back
    runs = {}
    for every in (0, 2):
        raw = tiny_run_config("lora", n_stages=2, steps=3, name=f"e{every}", output_dir=str(tmp_path / "runs"))
        raw["train"]["eval_every"] = every
        raw["stages"][1]["train"] = {"eval_tasks": ["task0"]}  # per-stage choice of tasks
        run = runs[every] = Run(validate_raw(raw), quiet=True)
        run.execute()
    pts = points(runs[2])
    assert [(p["stage"], p["step"]) for p in pts] == [(0, 0), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)]  # and the end
    assert [sorted(p["scores"]) for p in pts] == [["task0", "task1"]] * 3 + [["task0"]] * 3
    assert not points(runs[0])
    matrices = [json.loads((r.run_dir / "results.json").read_text())["matrix"] for r in runs.values()]
    assert matrices[0] == matrices[1]
    a, b = (r.model.state_dict() for r in runs.values())
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)  # the same trained weights, bit for bit
    trained = [k for k in a if "lora_B.stage1" in k]
    assert trained and any(a[k].abs().sum() > 0 for k in trained)  # stage 1's adapter did train


def test_resume_does_not_score_a_point_twice(tmp_path):
    raw = tiny_run_config("naive", n_stages=2, steps=6, name="r", output_dir=str(tmp_path / "runs"))
    raw["train"].update(eval_every=2, checkpoint_every=2)
    ref = Run(validate_raw({**raw, "name": "ref"}), quiet=True)
    ref.execute()

    def crash(event):  # killed at stage 2's point at step 4, before its checkpoint: resumed from step 2
        if event["type"] == "eval_step" and (event["stage"], event["step"]) == (1, 4):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Run(validate_raw(raw), quiet=True, callbacks=[crash]).execute()
    run = Run(validate_raw(raw), resume=True, quiet=True)
    run.execute()
    got = [(p["stage"], p["step"]) for p in points(run)]
    assert len(got) == len(set(got))  # steps 3 and 4 were trained again, their points not scored again
    assert got == [(p["stage"], p["step"]) for p in points(ref)]
    for p, q in zip(points(run), points(ref)):
        assert p["scores"] == pytest.approx(q["scores"])


def test_trackers_get_the_points(tiny_cfg):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_cfg("naive", n_stages=1, steps=2, name="tb")
    cfg.trackers = ["tensorboard"]
    cfg.train.eval_every = 1
    run = Run(cfg, quiet=True)
    run.execute()
    steps = []
    for f in (run.run_dir / "trackers").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f.parent))
        acc.Reload()
        if "eval_step/task0" in acc.Tags().get("scalars", []):
            steps += [s.step for s in acc.Scalars("eval_step/task0")]
    assert sorted(steps) == [0, 1, 2]


def test_report_draws_the_points_and_tabulates_the_gap(tmp_path):
    run = Run(gap_config(tmp_path, "report", REWARM), quiet=True)
    run.execute()
    with open(run.run_dir / "events.jsonl", "a") as f:  # a point recorded twice (a resume): drawn once
        f.write(json.dumps(points(run)[-1]) + "\n")
    assert main(["report", str(run.run_dir)]) == 0
    html = (run.run_dir / "report.html").read_text()
    section = html[html.index('id="within-stage"') :]
    section = section[: section.index("</section>")]
    line = re.search(r'<g id="within-0">(.*?)</g>', section, re.S)
    assert line and line.group(1).count("<use ") == 21 + 6  # every point of alpha once: steps 0..40, 0..10
    rows = re.findall(r"<tr><td>omega</td><td>alpha</td>.*?</tr>", section)
    assert len(rows) == 1  # alpha is older than omega; no row for a stage's own task
    cells = re.findall(r"<td>([^<]*)</td>", rows[0])
    boundary, worst, end = (float(c.replace(",", "")) for c in (cells[3], cells[4], cells[6]))
    assert boundary == pytest.approx(run.results.matrix[1][0], abs=0.01)  # numbers as text, not only drawn
    assert worst > 5 * boundary and end == pytest.approx(run.results.matrix[2][0], abs=0.01)


def test_report_without_points_says_how_to_get_them(tmp_path, tiny_cfg):
    run = Run(tiny_cfg("naive", n_stages=1, steps=1, name="none"), quiet=True)
    run.execute()
    assert main(["report", str(run.run_dir)]) == 0
    html = (run.run_dir / "report.html").read_text()
    assert 'id="within-stage"' in html and "set <code>train.eval_every: K</code>" in html


def test_validate_locates_unknown_eval_tasks_and_bad_settings(tmp_path, capsys):
    raw = tiny_run_config(n_stages=2, steps=3, output_dir=str(tmp_path / "runs"))
    raw["train"].update(eval_every=2, eval_tasks=["task0", "tsak1"])
    raw["stages"][1]["train"] = {"eval_tasks": ["nope"]}
    path = tmp_path / "c.yaml"
    text = yaml.safe_dump(raw, sort_keys=False)
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    lines = text.splitlines()
    tsak, nope = lines.index("  - tsak1") + 1, lines.index("    - nope") + 1
    assert f"c.yaml:{tsak}: train.eval_tasks.1: unknown eval task 'tsak1'; did you mean 'task1'?" in err
    assert f"c.yaml:{nope}: stages.1.train.eval_tasks.0: unknown eval task 'nope'" in err
    assert "(task0, task1)" in err  # the known names
    raw["train"]["eval_tasks"] = ["task1"]
    raw["stages"][1]["train"] = {"eval_every": 1}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["validate", str(path)]) == 0
    capsys.readouterr()
    for bad in ("train.eval_every=-1", "train.eval_tasks=[]", "stages.0.train.eval_every=1.5"):
        assert main(["validate", str(path), bad]) == 2
        assert f"{bad.split('=')[0]}: " in capsys.readouterr().err
    # a stage without `eval` whose kind scores it anyway (an edit stage scores its own edits) is a task
    facts, _ = tiny_facts()
    raw["stages"].append({"name": "facts", "kind": "edit", "edit": {"method": "ft"}, "data": {"rows": []}})
    raw["stages"][-1]["data"]["rows"] = fact_requests(facts, list(facts)[:1])
    raw["train"]["eval_tasks"] = ["facts", "task0"]
    validate_raw(raw)
