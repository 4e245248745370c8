import numpy as np
import pytest

from lifelong.strategies.base import StageContext
from lifelong.strategies.replay import Replay, ReplayParams


def ex(stage, i):
    return {"input_ids": [stage, i], "labels": [stage, i]}


def fill(strategy, stage, n):
    strategy.after_stage(
        StageContext(
            stage_index=stage,
            stage_name=f"s{stage}",
            model=None,
            tokenizer=None,
            examples=[ex(stage, i) for i in range(n)],
        )
    )


@pytest.mark.parametrize(
    "fraction,batch,mix", [(0.01, 32, "replace"), (0.2, 8, "replace"), (0.3, 5, "append"), (0.05, 3, "append")]
)
def test_realized_fraction_follows_a_running_budget(fraction, batch, mix):
    r = Replay(ReplayParams(buffer_size=50, fraction=fraction, mix=mix))
    fill(r, 0, 100)
    ctx = StageContext(stage_index=1, stage_name="s1", model=None, tokenizer=None)
    r.before_stage(ctx)
    batches = list(r.batches(ctx, ([ex(1, i) for i in range(batch)] for _ in range(400))))
    replayed = sum(1 for b in batches for e in b if e["input_ids"][0] == 0)
    seen = sum(len(b) for b in batches)
    assert replayed > 0
    assert abs(replayed / seen - fraction) <= 0.1 * fraction
    assert r.realized_fraction() == pytest.approx(replayed / seen)
    if mix == "replace":
        assert all(len(b) == batch for b in batches)


def test_first_stage_replays_nothing():
    r = Replay(ReplayParams(fraction=0.5))
    ctx = StageContext(stage_index=0, stage_name="s0", model=None, tokenizer=None)
    out = list(r.batches(ctx, ([ex(0, i) for i in range(4)] for _ in range(3))))
    assert all(e["input_ids"][0] == 0 for b in out for e in b) and r.replayed == 0


def test_reservoir_keeps_each_seen_example_with_equal_probability():
    counts = np.zeros(3)
    for seed in range(200):
        r = Replay(ReplayParams(buffer_size=30), seed=seed)
        for s, n in enumerate((30, 60, 90)):  # stages of unequal length
            fill(r, s, n)
        assert len(r.buffer) == 30
        for e in r.buffer:
            counts[e["stage"]] += 1
    share = counts / counts.sum()
    # inclusion probability is uniform over the 180 examples seen: stage shares 1/6, 2/6, 3/6
    assert share == pytest.approx([1 / 6, 2 / 6, 3 / 6], abs=0.03)


def test_per_stage_quota_balances_stages():
    r = Replay(ReplayParams(buffer_size=30, per_stage_quota=True))
    for s, n in enumerate((30, 60, 90)):
        fill(r, s, n)
    per = [sum(1 for e in r.buffer if e["stage"] == s) for s in range(3)]
    assert per == [10, 10, 10]


def test_state_round_trip_continues_identically():
    import pathlib
    import tempfile

    from lifelong.train.checkpoint import load_tree, save_tree

    a = Replay(ReplayParams(buffer_size=20, fraction=0.3), seed=3)
    fill(a, 0, 50)
    ctx = StageContext(stage_index=1, stage_name="s1", model=None, tokenizer=None)
    a.before_stage(ctx)
    it = a.batches(ctx, ([ex(1, i) for i in range(7)] for _ in range(100)))
    [next(it) for _ in range(5)]
    with tempfile.TemporaryDirectory() as d:
        save_tree(a.state_dict(), pathlib.Path(d), "s")
        b = Replay(ReplayParams(buffer_size=20, fraction=0.3), seed=99)
        b.load_state_dict(load_tree(pathlib.Path(d), "s"))
    it_b = b.batches(ctx, ([ex(1, i) for i in range(7)] for _ in range(100)))
    assert [next(it) for _ in range(10)] == [next(it_b) for _ in range(10)]


def test_in_order_draw_cycles_through_the_buffer():
    r = Replay(ReplayParams(buffer_size=10, fraction=0.5, draw="in_order"))
    fill(r, 0, 10)
    ctx = StageContext(stage_index=1, stage_name="s1", model=None, tokenizer=None)
    r.before_stage(ctx)
    out = list(r.batches(ctx, ([ex(1, i) for i in range(4)] for _ in range(6))))
    replayed = [e["input_ids"] for b in out for e in b if e["input_ids"][0] == 0]
    assert replayed == [r.buffer[k % 10]["input_ids"] for k in range(12)]
