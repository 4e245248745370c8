"""Edit metrics, every one named with its variant, because papers' numbers silently differ by variant:

- `cf_prob` (CounterFact, Meng et al. 2022): efficacy / generalization = share of edit / paraphrase prompts
  where the new target is more likely than the old (mean log-probability per target token); locality = share
  of neighbourhood prompts where the neighbour's own answer stays more likely than the new target.
- `top1` (zsRE, Mitchell et al. 2022; Meng et al. 2022): efficacy / generalization = share of target tokens
  that are the argmax under teacher forcing; locality = share of neighbourhood answer tokens whose argmax is
  the same as before the edit (needs the pre-edit predictions).
- `score[<variant>]`: harmonic mean of efficacy, generalization and locality.
- `fluency[ngram_entropy]`: weighted mean of bi- and tri-gram entropies (weights 2/3, 4/3; ROME's) of greedy
  generations from the generation prompts.
Scores are percentages, averaged over requests, with 95% bootstrap intervals over requests.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Optional

import numpy as np
import torch

from lifelong.data.edit_requests import EditRequest, encode
from lifelong.editing.common import device_of, pad_id
from lifelong.eval.targets import Prompt, score_targets


@torch.no_grad()
def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    ent = []
    for n in ns:
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        total = sum(grams.values())
        ent.append(-sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0)
    return float(np.sum(np.array(weights) * np.array(ent)) / np.sum(weights))


@torch.no_grad()
def generate(model: Any, tok: Any, prompts: list[str], max_new_tokens: int, prompt_fn: Prompt = None) -> list[str]:
    out = []
    for p in prompts:
        ids = torch.tensor([encode(tok, prompt_fn(p) if prompt_fn else p)], device=device_of(model))
        g = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id(tok),
        )
        out.append(tok.decode(g[0, ids.shape[1] :], skip_special_tokens=True))
    return out


def neighbour_pairs(req: EditRequest) -> list[tuple[str, str]]:
    return [(n["prompt"], n["target"]) for n in req.neighborhood if n["target"] is not None]


def predictions(model: Any, tok: Any, requests: list[EditRequest], prompt_fn: Prompt = None) -> list[list[list[int]]]:
    """Pre-edit argmax ids of each request's neighbourhood answers (the zsRE locality reference)."""
    pairs = [p for r in requests for p in neighbour_pairs(r)]
    scores = iter(score_targets(model, tok, pairs, prompt_fn))
    return [[next(scores)["preds"] for _ in neighbour_pairs(r)] for r in requests]


def request_metrics(
    model: Any,
    tok: Any,
    requests: list[EditRequest],
    pre: Optional[list] = None,
    prompt_fn: Prompt = None,
    fluency_tokens: int = 0,
) -> list[dict]:
    """Per request: every metric variant in percent (None where the request lacks what it needs)."""
    out = []
    for k, r in enumerate(requests):
        m: dict[str, Optional[float]] = {}
        for name, prompts in (("efficacy", [r.text]), ("generalization", r.paraphrases)):
            if not prompts:
                m[f"{name}[cf_prob]"] = m[f"{name}[top1]"] = None
                continue
            new = score_targets(model, tok, [(p, r.target_new) for p in prompts], prompt_fn)
            m[f"{name}[top1]"] = 100 * float(np.mean([s["acc"] for s in new]))
            if r.target_true is not None:
                old = score_targets(model, tok, [(p, r.target_true) for p in prompts], prompt_fn)
                m[f"{name}[cf_prob]"] = 100 * float(np.mean([a["logp"] > b["logp"] for a, b in zip(new, old)]))
            else:
                m[f"{name}[cf_prob]"] = None
        pairs = neighbour_pairs(r)
        if pairs:
            own = score_targets(model, tok, pairs, prompt_fn)
            newt = score_targets(model, tok, [(p, r.target_new) for p, _ in pairs], prompt_fn)
            m["locality[cf_prob]"] = 100 * float(np.mean([a["logp"] > b["logp"] for a, b in zip(own, newt)]))
            if pre is not None:
                same = [np.mean(np.array(s["preds"]) == np.array(p)) for s, p in zip(own, pre[k])]
                m["locality[top1]"] = 100 * float(np.mean(same))
            else:
                m["locality[top1]"] = None
        else:
            m["locality[cf_prob]"] = m["locality[top1]"] = None
        if fluency_tokens and r.generation:
            gens = generate(model, tok, r.generation, fluency_tokens, prompt_fn)
            m["fluency[ngram_entropy]"] = float(np.mean([ngram_entropy(g) for g in gens]))
        out.append(m)
    return out


VARIANTS = ("cf_prob", "top1")


def harmonic(vals: list[Optional[float]]) -> Optional[float]:
    known = [v for v in vals if v is not None]
    if len(known) < len(vals):
        return None
    if any(v <= 0 for v in known):
        return 0.0
    return len(known) / sum(1 / v for v in known)


def summarize(per_request: list[dict], bootstrap: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Mean and 95% bootstrap interval over requests of every metric, plus `score[<variant>]`."""
    keys = sorted({k for m in per_request for k in m})
    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    for k in keys:
        vals = np.array([m[k] for m in per_request if m.get(k) is not None], dtype=float)
        if not len(vals):
            continue
        entry: dict[str, Any] = {"mean": float(vals.mean()), "n": int(len(vals))}
        if bootstrap and len(vals) > 1:
            means = vals[rng.integers(0, len(vals), (bootstrap, len(vals)))].mean(1)
            entry["ci95"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
        out[k] = entry
    for v in VARIANTS:
        parts = [out.get(f"{n}[{v}]", {}).get("mean") for n in ("efficacy", "generalization", "locality")]
        hm = harmonic(parts)
        if hm is not None:
            out[f"score[{v}]"] = {"mean": hm, "n": len(per_request)}
    return out


def table(summary: dict[str, dict]) -> str:
    """A markdown table of a summary."""
    lines = ["| metric | mean | 95% CI | n |", "|---|---:|---|---:|"]
    for k, e in summary.items():
        ci = f"[{e['ci95'][0]:.1f}, {e['ci95'][1]:.1f}]" if "ci95" in e else ""
        lines.append(f"| {k} | {e['mean']:.1f} | {ci} | {e['n']} |")
    return "\n".join(lines)
