import json
import math

import pytest

from lifelong.config import TrainConfig
from lifelong.train.schedules import lr_multiplier


def curve(total, stage=0, **kw):
    f = lr_multiplier(TrainConfig(**kw), total, stage)
    return [f(s) for s in range(total)]


def test_cosine_rewarms_and_redecays_every_stage_to_eta_min():
    for stage in (0, 1, 2):
        c = curve(20, stage, schedule="cosine", warmup_steps=4)
        assert c[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])  # re-warm at every boundary
        assert c[4] == pytest.approx(1.0)
        assert c[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 15 / 16)))
        assert all(a >= b for a, b in zip(c[4:], c[5:]))
    assert lr_multiplier(TrainConfig(schedule="cosine"), 10)(10) == pytest.approx(0.1)  # eta_min = eta_max/10


def test_warmup_fraction_and_constant_and_linear():
    assert curve(10, schedule="constant", warmup_fraction=0.2)[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    lin = curve(11, schedule="linear", min_lr_ratio=0.0)
    assert lin[0] == pytest.approx(1.0) and lin[5] == pytest.approx(1 - 5 / 11)


@pytest.mark.parametrize(
    "shape,mid", [("linear", 0.55), ("1-sqrt", 0.1 + 0.9 * (1 - math.sqrt(0.5))), ("exponential", math.sqrt(0.1))]
)
def test_wsd_stable_then_decay_shapes(shape, mid):
    c = curve(20, schedule="wsd", warmup_steps=2, decay_fraction=0.2, decay_shape=shape)
    assert c[:2] == pytest.approx([1 / 3, 2 / 3])
    assert c[2:16] == pytest.approx([1.0] * 14)  # stable
    assert c[17] == pytest.approx(mid)  # half-way through the 4 decay steps
    assert c[-1] == pytest.approx(0.1)


def test_infinite_schedule_never_rewarms_and_anneals_on_demand():
    kw = dict(schedule="infinite", warmup_steps=2, cooldown_steps=4, constant_lr_ratio=0.5)
    first = curve(10, 0, **kw)
    assert first[:2] == pytest.approx([1 / 3, 2 / 3])
    assert first[5] == pytest.approx(0.5) and first[2] > first[3] > first[4] > 0.5  # cooldown
    assert first[6:] == pytest.approx([0.5] * 4)
    later = curve(10, 1, **kw)
    assert later == pytest.approx([0.5] * 10)  # constant across stages, no re-warm
    final = curve(10, 2, anneal=True, decay_fraction=0.5, **kw)
    assert final[:5] == pytest.approx([0.5] * 5) and final[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(final, final[1:]))


def test_event_log_shows_rewarm_vs_infinite(tiny_cfg):
    from lifelong.runner import Run

    lrs = {}
    for sched in ("cosine", "infinite"):
        cfg = tiny_cfg(
            "naive", n_stages=3, steps=8, name=sched, train={"schedule": sched, "warmup_steps": 2, "cooldown_steps": 3}
        )
        run = Run(cfg, quiet=True)
        run.execute()
        ev = [json.loads(x) for x in (run.run_dir / "events.jsonl").read_text().splitlines()]
        lrs[sched] = [(e["stage"], e["lr"]) for e in ev if e["type"] == "step"]
    lr0 = 3e-3  # tiny_run_config's lr
    cos = lrs["cosine"]
    for stage in (1, 2):
        first = [lr for s, lr in cos if s == stage][0]
        prev_last = [lr for s, lr in cos if s == stage - 1][-1]
        assert first == pytest.approx(lr0 / 3) and max(lr for s, lr in cos if s == stage) == pytest.approx(lr0)
        assert first < prev_last or prev_last < lr0  # re-warmed from a low value
    inf = [lr for s, lr in lrs["infinite"] if s > 0]
    assert inf == pytest.approx([lr0 * 0.5] * len(inf))  # never re-warms after the first stage


def test_optimizer_state_keep_carries_adam_moments(tiny_cfg):
    from lifelong.runner import Run

    cfg = tiny_cfg("naive", n_stages=2, steps=5, name="keep", train={"optimizer_state": "keep"})
    run = Run(cfg, quiet=True)
    run.execute()
    state = run.optimizer_state["state"]
    assert int(state[0]["step"]) == 10  # 5 steps per stage, moments carried over the boundary
    cfg = tiny_cfg("naive", n_stages=2, steps=5, name="reset")
    run = Run(cfg, quiet=True)
    run.execute()
    assert run.optimizer_state is None
