"""The effect replay exists for: on a stream of conflicting tasks, naive fine-tuning forgets and replay
retains, by a clear margin, on the same stream, model and budget."""

from lifelong.runner import run


def test_replay_forgets_less_than_naive(tiny_cfg):
    results = {}
    for strategy in ("naive", {"name": "replay", "buffer_size": 200, "fraction": 0.3}):
        cfg = tiny_cfg(
            strategy,
            steps=60,
            train={"lr": 1e-3},
            name=f"beh-{strategy['name'] if isinstance(strategy, dict) else strategy}",
        )
        cfg.eval.bootstrap = 0
        results[cfg.strategy[0].name] = run(cfg, quiet=True).metrics["score"]["metrics"]
    naive, replay = results["naive"], results["replay"]
    assert naive["FM"] > 30, naive  # sequential fine-tuning on inverted rules destroys earlier tasks
    assert replay["FM"] < naive["FM"] - 20, (naive, replay)
    assert replay["AA"] > naive["AA"] + 8, (naive, replay)
