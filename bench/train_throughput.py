"""Training throughput of `lifelong` (naive strategy, the full loop: accelerate, hooks, schedule, clipping,
logging) against a minimal hand-written PyTorch loop on the same model, the same batches, in one process.

    python bench/train_throughput.py [--steps 30] [--hidden 256] [--layers 4] [--threads 1]

Prints tokens/s of both and the ratio lifelong / reference (target >= 0.95). The two are interleaved
(reference, lifelong, reference, lifelong) and the best of each is kept, because the speed of a shared
machine drifts within minutes.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()

    from lifelong.runner import Run
    from lifelong.testing import tiny_run_config
    from lifelong.train.loop import collate, micro_batches, train_stage
    from lifelong.validation import validate_raw

    raw = tiny_run_config("naive", n_stages=1, steps=a.steps, name="bench", output_dir="/tmp/lifelong-bench")
    raw["torch_threads"] = a.threads
    raw["train"].update(max_length=64, batch_size=16, lr=1e-3)
    raw["model"]["tiny_config"] = {
        "hidden_size": a.hidden,
        "intermediate_size": 4 * a.hidden,
        "num_hidden_layers": a.layers,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
    }
    cfg = validate_raw(raw)
    import shutil

    shutil.rmtree("/tmp/lifelong-bench", ignore_errors=True)
    run = Run(cfg, quiet=True)
    examples = run.prepared[0]
    init = copy.deepcopy(run.model.state_dict())
    n_params = sum(p.numel() for p in run.model.parameters())
    tc = cfg.stage_train(0)

    def reference() -> float:
        model = run.model
        model.load_state_dict(init)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        it = micro_batches(len(examples), tc.batch_size, cfg.seed, 0)
        tokens, t0 = 0, time.perf_counter()
        for _ in range(a.steps):
            batch = collate([examples[i] for i in next(it)], 0, "cpu")
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
        return tokens / (time.perf_counter() - t0)

    def ours() -> float:
        run.model.load_state_dict(init)
        cost = train_stage(run, 0, examples)
        return cost["tokens"] / cost["wall_s"]

    refs, mine = [], []
    for _ in range(a.rounds):
        refs.append(reference())
        mine.append(ours())
    r, m = max(refs), max(mine)
    print(f"model: {n_params / 1e6:.2f}M params, {a.steps} steps of 16 x <=64 tokens, {a.threads} thread(s)")
    print(f"reference loop : {r:10,.0f} tokens/s   (rounds: {', '.join(f'{x:,.0f}' for x in refs)})")
    print(f"lifelong naive : {m:10,.0f} tokens/s   (rounds: {', '.join(f'{x:,.0f}' for x in mine)})")
    print(f"ratio lifelong / reference = {m / r:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
