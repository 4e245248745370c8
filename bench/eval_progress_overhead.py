"""What evaluation progress costs: a task's items scored in one scorer call versus in the chunks the progress
bar advances by (`lifelong.progress.chunk_size`), on the same model and items, in paired alternating rounds
in one process. Also checks that both give the same per-example statistics.

    python bench/eval_progress_overhead.py [--items 200] [--batch-size 8] [--rounds 5] [--scorer choice]
Target: chunked / whole time ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scorer", choices=["choice", "perplexity"], default="choice")
    ap.add_argument("--batches", type=int, default=4, help="batches per chunk (lifelong.progress.chunk_size)")
    a = ap.parse_args()

    import numpy as np
    import torch

    from lifelong.data import Formatter
    from lifelong.eval.lm import HFLM
    from lifelong.eval.scorers import SCORERS
    from lifelong.progress import Bar, chunk_size, scored_in_chunks
    from lifelong.testing import tiny_llama, tiny_tokenizer

    torch.set_num_threads(1)
    rng = random.Random(0)
    words = ["ab", "cde", "f", "abcdef", "dd", "e", "bca", "fed"]

    def phrase(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    if a.scorer == "choice":
        items = [
            {"prompt": phrase(3, 20), "options": [phrase(1, 4) for _ in range(4)], "answer": 0} for _ in range(a.items)
        ]
    else:
        items = [{"text": phrase(5, 40)} for _ in range(a.items)]
    lm = HFLM(tiny_llama(seed=0).eval(), Formatter(tiny_tokenizer()), batch_size=a.batch_size)
    scorer = SCORERS.get(a.scorer)()
    chunk = chunk_size(len(items), a.batch_size, a.batches)
    with torch.inference_mode():
        scorer.score_details(lm, items[: a.batch_size])  # warm-up
        whole_t, chunk_t = [], []
        for _ in range(a.rounds):
            t0 = time.perf_counter()
            whole, _ = scorer.score_details(lm, items)
            whole_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            parts, _ = scored_in_chunks(lambda xs: scorer.score_details(lm, xs), items, Bar(len(items)), chunk)
            chunk_t.append(time.perf_counter() - t0)
    ratios = [c / w for c, w in zip(chunk_t, whole_t)]
    diff = float(np.nanmax(np.abs(np.asarray(parts) - np.asarray(whole)))) if len(items) else 0.0
    print(f"{a.scorer}: {a.items} items, batch size {a.batch_size}, chunks of {chunk}, {a.rounds} paired rounds")
    print(f"whole   median {statistics.median(whole_t):.3f} s")
    print(f"chunked median {statistics.median(chunk_t):.3f} s")
    print(f"ratio chunked/whole median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
    print(f"max |per-example difference| {diff:.2e}")


if __name__ == "__main__":
    main()
