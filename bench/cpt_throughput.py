"""Continual pre-training throughput: packed-block training tokens/s of lifelong (naive strategy, the full
loop) versus a minimal hand-written PyTorch loop on the same blocks and model, in one process; and the data
pipeline alone (read, tokenize, pack) in tokens/s, which must be far above training speed.

    python bench/cpt_throughput.py [--steps 30] [--hidden 256] [--layers 4] [--block 128]
Target: ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()

    from lifelong.config import DataConfig
    from lifelong.data import Formatter, load_rows, to_examples
    from lifelong.runner import Run
    from lifelong.testing import tiny_domains, tiny_tokenizer
    from lifelong.train.loop import collate, micro_batches, train_stage
    from lifelong.validation import validate_raw

    docs = tiny_domains(n_docs=2000)["alpha"]["train"]
    # data pipeline alone
    fm = Formatter(tiny_tokenizer())
    t0 = time.perf_counter()
    blocks = to_examples(load_rows(DataConfig(rows=docs)), "text", DataConfig(rows=docs), fm, a.block)
    pipe_tps = sum(len(b["input_ids"]) for b in blocks) / (time.perf_counter() - t0)

    raw = {
        "name": "cptbench",
        "output_dir": "/tmp/lifelong-cptbench",
        "torch_threads": 1,
        "model": {
            "tiny": "llama",
            "tiny_config": {
                "hidden_size": a.hidden,
                "intermediate_size": 4 * a.hidden,
                "num_hidden_layers": a.layers,
                "num_attention_heads": 8,
                "num_key_value_heads": 8,
            },
        },
        "train": {"lr": 1e-3, "batch_size": 8, "max_steps": a.steps, "max_length": a.block},
        "eval": {"bootstrap": 0, "max_examples": 2},
        "stages": [{"name": "alpha", "kind": "pretrain", "data": {"rows": docs}}],
    }
    shutil.rmtree("/tmp/lifelong-cptbench", ignore_errors=True)
    run = Run(validate_raw(raw), quiet=True)
    ex = run.prepared[0]
    init = copy.deepcopy(run.model.state_dict())
    tc = run.cfg.stage_train(0)

    def reference() -> float:
        model = run.model
        model.load_state_dict(init)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr)
        it = micro_batches(len(ex), tc.batch_size, 0, 0)
        tokens, t = 0, time.perf_counter()
        for _ in range(a.steps):
            batch = collate([ex[i] for i in next(it)], 0, "cpu")
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
        return tokens / (time.perf_counter() - t)

    def ours() -> float:
        run.model.load_state_dict(init)
        cost = train_stage(run, 0, ex)
        return cost["tokens"] / cost["wall_s"]

    refs, mine = [], []
    for _ in range(a.rounds):
        refs.append(reference())
        mine.append(ours())
    print(
        f"blocks of {a.block} tokens, batch 8, {a.steps} steps, "
        f"{sum(p.numel() for p in run.model.parameters()) / 1e6:.2f}M params, 1 thread"
    )
    print(f"data pipeline (read, tokenize, pack): {pipe_tps:12,.0f} tokens/s")
    print(f"reference loop                      : {max(refs):12,.0f} tokens/s")
    print(f"lifelong pretrain stage             : {max(mine):12,.0f} tokens/s")
    print(
        f"ratio lifelong / reference = {max(mine) / max(refs):.3f} (target >= 0.95); "
        f"pipeline / training = {pipe_tps / max(mine):.0f}x"
    )
    shutil.rmtree("/tmp/lifelong-cptbench", ignore_errors=True)


if __name__ == "__main__":
    main()
