"""The stability gap (De Lange et al. 2023) measured with `train.eval_every`: re-warming against a constant low
learning rate at a stage boundary, same model, data and seed.

    python bench/stability_gap.py [--seeds 0 1 2 3] [--every 2]        # tiny llama, tiny_domains (seconds)
    python bench/stability_gap.py --cpt [--every 1]                     # SmolLM2-135M, examples/cpt.yaml (minutes)

Stage 1 is the same in both runs; stage 2 either re-warms (cosine with warmup to a peak learning rate) or goes
on at a constant low rate (stage 1's final one, never re-warmed, like the `infinite` schedule after its first
stage). Printed per run: the old task's perplexity at the boundary (stage 2, step 0), its worst in-stage value
over stage 2's first N steps and the step, its value at the end of stage 2, and worst / boundary. The paired
ratio rewarm / constant of those worst-over-boundary ratios is the gap the re-warm opens.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

TINY_REWARM = {"schedule": "cosine", "warmup_steps": 3, "lr": 1e-2}
TINY_CONSTANT = {"schedule": "constant", "warmup_steps": 0, "lr": 3e-4}  # stage 1's cosine floor (0.1 x 3e-3)
CPT_REWARM = {"schedule": "cosine", "warmup_steps": 2, "lr": 1e-4}  # examples/cpt.yaml as it ships
CPT_CONSTANT = {"schedule": "constant", "warmup_steps": 0, "lr": 1e-5}  # its stage 1 floor (0.1 x 1e-4)


def tiny_config(out: Path, name: str, second: dict, seed: int, every: int) -> Any:
    from lifelong.testing import tiny_domains
    from lifelong.validation import validate_raw

    d = tiny_domains(n_docs=200, seed=seed)
    stages = [
        {"name": n, "kind": "pretrain", "data": {"rows": v["train"]}, "eval": {"rows": v["eval"]}} for n, v in d.items()
    ]
    stages[1]["train"] = {"max_steps": 10, **second}
    train = {"lr": 3e-3, "batch_size": 8, "max_steps": 40, "max_length": 64, "schedule": "cosine", "warmup_steps": 5}
    return validate_raw(
        {
            "name": name,
            "seed": seed,
            "output_dir": str(out),
            "torch_threads": 1,
            "model": {"tiny": "llama"},
            "train": {**train, "eval_every": every, "eval_tasks": ["alpha"]},
            "eval": {"bootstrap": 0, "batch_size": 32},
            "stages": stages,
        }
    )


def cpt_config(out: Path, name: str, second: dict, every: int) -> Any:
    """examples/cpt.yaml with stage 2's schedule replaced; points inside stage 2 only (a 135M model on CPU)."""
    from lifelong.validation import load_config

    root = Path(__file__).resolve().parent.parent
    over = [f"name={name}", f"output_dir={out}", "train.eval_tasks=[docs_ppl]", f"stages.1.train.eval_every={every}"]
    over += [f"stages.1.train.{k}={v}" for k, v in second.items()]
    return load_config(root / "examples" / "cpt.yaml", over)


def measure(cfg: Any, task: str, first: int) -> dict[str, float]:
    from lifelong.runner import Run

    run = Run(cfg, quiet=True)
    run.execute()
    events = [json.loads(x) for x in (run.run_dir / "events.jsonl").read_text().splitlines()]
    pts = {e["step"]: e["scores"][task] for e in events if e["type"] == "eval_step" and e["stage"] == 1}
    early = {s: v for s, v in pts.items() if s <= first}
    worst_step = max(early, key=early.__getitem__)  # perplexity: the worst is the highest
    return {
        "boundary": pts[0],
        "worst": early[worst_step],
        "worst_step": worst_step,
        "end": pts[max(pts)],
        "ratio": early[worst_step] / pts[0],
        "curve": [round(pts[k], 3) for k in sorted(pts)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--every", type=int, default=None, help="eval_every (default 2 tiny, 1 cpt)")
    ap.add_argument("--first", type=int, default=10, help="stage 2's first N steps in which the worst is taken")
    ap.add_argument("--cpt", action="store_true", help="SmolLM2-135M on examples/cpt.yaml instead of the tiny llama")
    ap.add_argument("--peak", type=float, default=None, help="peak learning rate of the re-warm (default as above)")
    ap.add_argument("--curves", action="store_true", help="also print the old task's points in stage 2")
    args = ap.parse_args()
    print("| model | seed | stage 2 | boundary ppl | worst ppl (step) | end ppl | worst / boundary |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in [0] if args.cpt else args.seeds:
            got = {}
            peak = {"lr": args.peak} if args.peak else {}
            for label, tiny, cpt in (
                ("rewarm", {**TINY_REWARM, **peak}, {**CPT_REWARM, **peak}),
                ("constant", TINY_CONSTANT, CPT_CONSTANT),
            ):
                if args.cpt:
                    cfg, task, model = (
                        cpt_config(Path(tmp), f"cpt-{label}", cpt, args.every or 1),
                        "docs_ppl",
                        "SmolLM2",
                    )
                else:
                    cfg = tiny_config(Path(tmp), f"{label}{seed}", tiny, seed, args.every or 2)
                    task, model = "alpha", "tiny llama"
                m = got[label] = measure(cfg, task, args.first)
                print(
                    f"| {model} | {seed} | {label} | {m['boundary']:.3f} | {m['worst']:.3f} ({m['worst_step']}) "
                    f"| {m['end']:.3f} | {m['ratio']:.2f} |",
                    flush=True,
                )
                if args.curves:
                    print(f"|   | stage 2 points every {args.every or (1 if args.cpt else 2)} steps: {m['curve']} |")
            paired = got["rewarm"]["ratio"] / got["constant"]["ratio"]
            print(f"| | {seed} | paired ratio rewarm / constant | | | | {paired:.2f} |")


if __name__ == "__main__":
    main()
