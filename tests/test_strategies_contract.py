"""Every registered strategy: runs two stages and round-trips its state through a checkpoint."""

import pytest

from lifelong.runner import Run
from lifelong.strategies import STRATEGIES
from lifelong.train.checkpoint import load_tree, save_tree


def _plain(x):
    import torch

    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_runs_two_stages_and_round_trips_state(name, tiny_cfg, tmp_path):
    cfg = tiny_cfg({"name": name}, n_stages=2, steps=4, name=f"contract-{name}")
    run = Run(cfg, quiet=True)
    res = run.execute()
    assert all(v is not None for row in res.matrix for v in row)
    state = run.strategy.state_dict()
    save_tree(state, tmp_path, "st")
    fresh = STRATEGIES.get(name)(STRATEGIES.get(name).Params(), seed=123)
    fresh.load_state_dict(load_tree(tmp_path, "st"))
    assert _plain(fresh.state_dict()) == _plain(state)


def test_compose_chains_hooks(tiny_cfg):
    cfg = tiny_cfg([{"name": "replay", "fraction": 0.25}, {"name": "naive"}], n_stages=2, steps=4, name="compose")
    run = Run(cfg, quiet=True)
    run.execute()
    from lifelong.strategies.base import Compose

    assert isinstance(run.strategy, Compose)
    assert run.strategy.parts[0].replayed > 0
    assert run.strategy.cost()["replay_buffer_examples"] > 0
