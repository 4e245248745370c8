"""Per-step overhead of strategies relative to naive, measured in one process on the same model, stream and
batches: the median optimizer-step time of the *second* stage (where penalties, replay and teachers are
active), each strategy run twice in interleaved order (naive, a, b, ..., naive, a, b, ...) so machine-speed
drift hits all alike.

    python bench/strategy_overhead.py [--hidden 256] [--layers 4] [--steps 20] [--threads 1]

Targets (issue 3): replay and l2 within 1.15x, ewc within 1.2x, lwf within 2.2x of naive.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

SPECS = {
    "naive": {},
    "replay": {"buffer_size": 200, "fraction": 0.25},
    "l2": {"weight": 0.01},
    "ewc": {"weight": 1000.0, "normalize": True, "fisher_samples": 32},
    "lwf": {"weight": 1.0},
    "agem": {"memory_size": 200, "sample_size": 16},
    "merge_after_stage": {"weight": 0.5},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()

    from lifelong.runner import Run
    from lifelong.testing import tiny_run_config
    from lifelong.validation import validate_raw

    tmp = Path(tempfile.mkdtemp(prefix="lifelong-overhead-"))
    times: dict[str, list[float]] = {k: [] for k in SPECS}
    for rnd in range(a.rounds):
        for name, params in SPECS.items():
            raw = tiny_run_config(
                {"name": name, **params}, n_stages=2, steps=a.steps, name=f"{name}-{rnd}", output_dir=str(tmp)
            )
            raw["torch_threads"] = a.threads
            raw["train"].update(batch_size=16, max_length=64)
            raw["eval"].update(bootstrap=0, max_examples=4)
            raw["model"]["tiny_config"] = {
                "hidden_size": a.hidden,
                "intermediate_size": 4 * a.hidden,
                "num_hidden_layers": a.layers,
                "num_attention_heads": 8,
                "num_key_value_heads": 8,
            }
            run = Run(validate_raw(raw), quiet=True)
            run.execute()
            ev = [json.loads(x) for x in (run.run_dir / "events.jsonl").read_text().splitlines() if x.strip()]
            st = [e for e in ev if e.get("type") == "step" and e["stage"] == 1]
            times[name] += [b["time"] - p["time"] for p, b in zip(st, st[1:])]
    ref = statistics.median(times["naive"])
    n_params = sum(p.numel() for p in run.model.parameters())
    print(
        f"model {n_params / 1e6:.2f}M params, batch 16, {a.steps} steps per stage, {a.threads} thread(s); "
        f"median step of stage 2, {a.rounds} interleaved rounds"
    )
    print(f"{'strategy':20s} {'step ms':>9s} {'vs naive':>9s}")
    for name in SPECS:
        m = statistics.median(times[name])
        print(f"{name:20s} {1000 * m:9.1f} {m / ref:8.2f}x")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
