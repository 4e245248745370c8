"""Leaderboard: every registered strategy on one shipped stream, same seed and budget.

    python bench/strategies.py [--stages 4] [--steps 120] [--out docs/leaderboard.md]

The stream is `lifelong.testing.tiny_stream` (4 stages of conflicting yes/no rules, the worst case for
forgetting) on a tiny llama pre-trained to the answer format (`tiny_pretrained`), so adapter methods can
learn too. Every method gets the same steps, batch and seed; the learning rate is the method family's
(full fine-tuning 2e-3, adapters 1e-2), which is part of the recipe table below. Printed per method: AA, BWT,
FM with 95% bootstrap CIs, and cost: median optimizer-step time relative to naive (measured in the same
process), whole-run wall time relative to naive, trainable parameters in the last stage, extra state kept by
the strategy (MB), stored examples.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

RECIPES: dict[str, tuple[dict, float]] = {
    "naive": ({}, 2e-3),
    "replay": ({"buffer_size": 200, "fraction": 0.3}, 2e-3),
    "agem": ({"memory_size": 300, "sample_size": 64}, 2e-3),
    "ewc": ({"weight": 1000.0, "normalize": True}, 2e-3),
    "l2": ({"weight": 0.05}, 2e-3),
    "lwf": ({"weight": 1.0}, 2e-3),
    "generative_replay": ({"fraction": 0.3, "max_new_tokens": 24}, 2e-3),
    "merge_after_stage": ({"weight": 0.5}, 2e-3),
    "sdft": ({"max_new_tokens": 8}, 2e-3),
    "lora": ({"r": 16, "alpha": 32}, 1e-2),
    "seq_lora": ({"r": 16, "alpha": 32}, 3e-3),  # at 1e-2 the one rank-16 adapter learns no stage here
    "olora": ({"r": 8, "alpha": 32, "target_modules": "all-linear"}, 1e-2),
}


def step_times(run_dir: Path) -> list[float]:
    ev = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    out = []
    for a, b in zip(ev, ev[1:]):
        if a.get("type") == "step" and b.get("type") == "step" and a["stage"] == b["stage"]:
            out.append(b["time"] - a["time"])
    return out


def state_mb(strategy) -> float:
    import torch

    total = 0

    def walk(x):
        nonlocal total
        if isinstance(x, torch.Tensor):
            total += x.numel() * x.element_size()
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
            if x and isinstance(x[0], int):
                total += 8 * len(x)

    walk(strategy.state_dict())
    return total / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    from lifelong.runner import Run
    from lifelong.strategies import STRATEGIES
    from lifelong.testing import tiny_pretrained, tiny_run_config
    from lifelong.validation import validate_raw

    tmp = Path(tempfile.mkdtemp(prefix="lifelong-board-"))
    base = tiny_pretrained(tmp / "base")
    names = a.only or [n for n in RECIPES if n in STRATEGIES] + [n for n in STRATEGIES.names() if n not in RECIPES]
    rows = []
    for name in names:
        params, lr = RECIPES.get(name, ({}, 2e-3))
        raw = tiny_run_config(
            {"name": name, **params},
            n_stages=a.stages,
            steps=a.steps,
            train={"lr": lr},
            name=name,
            output_dir=str(tmp / "runs"),
        )
        raw["model"] = {"path": base}
        t0 = time.perf_counter()
        run = Run(validate_raw(raw), quiet=True)
        res = run.execute()
        wall = time.perf_counter() - t0
        g = res.metrics["score"]
        last = list(res.costs.values())[-1]
        rows.append(
            {
                "name": name,
                "metrics": g["metrics"],
                "ci": g["ci95"],
                "wall": wall,
                "step": statistics.median(step_times(run.run_dir)),
                "trainable": last["trainable_params"],
                "state_mb": state_mb(run.strategy),
                "stored": last.get("replay_buffer_examples", last.get("memory_examples", 0)),
                "lr": lr,
                "params": params,
            }
        )
        print(f"done {name} in {wall:.1f}s", flush=True)
    ref = next((r for r in rows if r["name"] == "naive"), rows[0])
    lines = [
        f"Stream: tiny_stream, {a.stages} stages, {a.steps} steps x 16 examples per stage, seed 0, "
        f"tiny llama pre-trained to the answer format. Command: `python bench/strategies.py --stages "
        f"{a.stages} --steps {a.steps}`",
        "",
        "| strategy | AA | BWT | FM | step time vs naive | run time vs naive | trainable params "
        "| strategy state MB | stored examples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def ci(r, m):
        v, c = r["metrics"][m], r["ci"][m]
        return f"{v:.1f} [{c[0]:.1f}, {c[1]:.1f}]" if c else f"{v:.1f}"

    for r in rows:
        lines.append(
            f"| {r['name']} | {ci(r, 'AA')} | {ci(r, 'BWT')} | {ci(r, 'FM')} | "
            f"{r['step'] / ref['step']:.2f}x | {r['wall'] / ref['wall']:.2f}x | {r['trainable']:,} | "
            f"{r['state_mb']:.2f} | {r['stored']} |"
        )
    lines += ["", "Recipes (lr, parameters): " + "; ".join(f"`{r['name']}` lr {r['lr']:g} {r['params']}" for r in rows)]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text("# Strategy leaderboard\n\n" + text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
