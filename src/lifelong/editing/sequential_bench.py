"""The sequential-editing benchmark behind `lifelong edit-bench`: apply hundreds or thousands of edits one
after another to one model, per method, and after every `every` edits record

- efficacy, generalization and locality (both variants, docs/editing.md) of all edits so far, of the most
  recent `window` edits (how well new edits land as the model fills up) and of the first `window` edits (how
  well the oldest ones last);
- general ability: the perplexity of a held-out text file (`general`) and the accuracy of known facts
  (`known`: prompts the unedited model answers; the share of answer tokens that are still the argmax);
- the edits so far whose optimisation did not converge, and the seconds spent editing.

Each method starts from the unedited model (loaded afresh), so the curves compare methods on the same
requests in the same order. The curves are written to `curves.json` (atomically, after every point: a
killed benchmark keeps the points it reached); `lifelong.report.edit_curves` draws them into `report.html`.

Scoring thousands of past edits at every point is the cost that grows; `batched_metrics` scores all of
them in one batched pass (the same numbers as `metrics.request_metrics`, up to float rounding of the batch).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from lifelong.data.collate import device_of, pad_batch, pad_id
from lifelong.data.edit_requests import EditRequest, encode, parse_request
from lifelong.editing.base import Editor
from lifelong.editing.metrics import neighbour_pairs, predictions, summarize
from lifelong.editing.protocol import not_converged_message
from lifelong.eval.targets import Prompt, score_targets
from lifelong.progress import progress as progress_bar

CURVE_METRICS = ("efficacy", "generalization", "locality", "score")


@torch.no_grad()
def batched_metrics(
    model: Any, tok: Any, requests: list[EditRequest], pre: list, prompt_fn: Prompt = None, batch_size: int = 64
) -> list[dict]:
    """`metrics.request_metrics` without fluency, every (prompt, target) pair of every request scored in one
    batched call."""
    pairs: list[tuple[str, str]] = []
    plan: list[dict[str, Any]] = []

    def take(items: list[tuple[str, str]]) -> tuple[int, int]:
        pairs.extend(items)
        return len(pairs) - len(items), len(pairs)

    for r in requests:
        p: dict[str, Any] = {}
        for name, prompts in (("efficacy", [r.text]), ("generalization", r.paraphrases)):
            if prompts:
                p[name] = (
                    take([(q, r.target_new) for q in prompts]),
                    take([(q, r.target_true) for q in prompts]) if r.target_true is not None else None,
                )
        nb = neighbour_pairs(r)
        if nb:
            p["locality"] = (take(nb), take([(q, r.target_new) for q, _ in nb]))
        plan.append(p)
    scores = score_targets(model, tok, pairs, prompt_fn, batch_size=batch_size)
    out = []
    for k, p in enumerate(plan):
        m: dict[str, Optional[float]] = {}
        for name in ("efficacy", "generalization"):
            if name not in p:
                m[f"{name}[cf_prob]"] = m[f"{name}[top1]"] = None
                continue
            (a, b), old = p[name]
            new = scores[a:b]
            m[f"{name}[top1]"] = 100 * float(np.mean([s["acc"] for s in new]))
            m[f"{name}[cf_prob]"] = (
                100 * float(np.mean([x["logp"] > y["logp"] for x, y in zip(new, scores[old[0] : old[1]])]))
                if old is not None
                else None
            )
        if "locality" in p:
            (a, b), (c, d) = p["locality"]
            own, newt = scores[a:b], scores[c:d]
            m["locality[cf_prob]"] = 100 * float(np.mean([x["logp"] > y["logp"] for x, y in zip(own, newt)]))
            same = [np.mean(np.array(s["preds"]) == np.array(q)) for s, q in zip(own, pre[k])]
            m["locality[top1]"] = 100 * float(np.mean(same))
        else:
            m["locality[cf_prob]"] = m["locality[top1]"] = None
        out.append(m)
    return out


# ---- general ability ------------------------------------------------------------------------------------
def general_chunks(path: str, tok: Any, max_tokens: int = 20000, length: int = 128) -> list[list[int]]:
    """Token windows of at most `length` tokens from a text file (.jsonl/.csv/.parquet rows with a `text`
    column, or .txt/.md blocks), at most `max_tokens` tokens in all, in file order."""
    from lifelong.config import DataConfig
    from lifelong.data.sources import iter_rows

    chunks: list[list[int]] = []
    total = 0
    for row, where in iter_rows(DataConfig(path=path)):
        text = row.get("text")
        if not isinstance(text, str):
            raise ValueError(f"{where}: field 'text' is missing or not a string (--general reads the text column)")
        ids = encode(tok, text)
        for s in range(0, len(ids) - 1, length):
            piece = ids[s : s + length]
            if len(piece) > 1:
                chunks.append(piece)
                total += len(piece)
            if total >= max_tokens:
                return chunks
    if not chunks:
        raise ValueError(f"{path}: no text to measure perplexity on")
    return chunks


@torch.no_grad()
def perplexity(model: Any, tok: Any, chunks: list[list[int]], batch_size: int = 16) -> float:
    """exp of the mean next-token NLL over every predicted token of the windows."""
    device, nll, n = device_of(model), 0.0, 0
    for b in range(0, len(chunks), batch_size):
        ids, mask = pad_batch(chunks[b : b + batch_size], pad_id(tok), device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        nll += float(F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="sum"))
        n += int((labels != -100).sum())
    return math.exp(nll / max(n, 1))


def known_facts(path: str) -> list[tuple[str, str]]:
    """(prompt, answer) pairs of facts the model should keep: rows `{"prompt", "target"}` (a full prompt), or
    edit requests, whose filled-in prompt and paraphrases are asked for `target_true`."""
    from lifelong.config import DataConfig
    from lifelong.data.sources import load_rows

    rows = load_rows(DataConfig(path=path))
    out: list[tuple[str, str]] = []
    for row, where in zip(rows.rows, rows.where):
        if "subject" in row:
            r = parse_request(dict(row, target_new=row.get("target_new") or "?"), where)
            if r.target_true is None:
                raise ValueError(f"{where}: field 'target_true' is missing (the known answer of a fact)")
            out += [(q, r.target_true) for q in [r.text] + r.paraphrases]
        elif isinstance(row.get("prompt"), str) and isinstance(row.get("target"), str) and row["target"].strip():
            out.append((row["prompt"], row["target"]))
        else:
            raise ValueError(
                f"{where}: a known fact is {{prompt, target}} or an edit request with target_true; got fields "
                f"{', '.join(sorted(row))}"
            )
    if not out:
        raise ValueError(f"{path}: no known facts")
    return out


@torch.no_grad()
def general_ability(
    model: Any, tok: Any, chunks: Optional[list[list[int]]], known: Optional[list[tuple[str, str]]], prompt_fn: Prompt
) -> dict[str, float]:
    out: dict[str, float] = {}
    if chunks:
        out["perplexity"] = perplexity(model, tok, chunks)
    if known:
        out["known_facts[top1]"] = 100 * float(np.mean([s["acc"] for s in score_targets(model, tok, known, prompt_fn)]))
    return out


def _means(rows: list[dict]) -> dict[str, float]:
    return {k: v["mean"] for k, v in summarize(rows, 0).items()} if rows else {}


# ---- one method's curve ---------------------------------------------------------------------------------
def sequential_curve(
    model: Any,
    tok: Any,
    editor: Editor,
    requests: list[EditRequest],
    every: int,
    window: Optional[int] = None,
    group: int = 1,
    chunks: Optional[list[list[int]]] = None,
    known: Optional[list[tuple[str, str]]] = None,
    quiet: bool = False,
    console: Optional[Any] = None,
    on_point: Optional[Callable[[dict], None]] = None,
) -> dict:
    """Edit `requests` one group after another; after every `every` edits (and after the last) a point:
    `edits`, `all` (mean metrics of every edit so far), `recent` (of the last `window` edits, default
    `every`), `first` (of the first `window` edits: how the oldest edits last), `general` (perplexity, known
    facts), `not_converged` (edits so far), `seconds` (editing time so far). `baseline` holds the unedited
    model's general ability and its scores on all requests."""
    if every < 1 or group < 1:
        raise ValueError("every and group must be at least 1")
    window = window or every
    with torch.no_grad():
        pre = predictions(model, tok, requests)
        baseline = {
            "all": _means(batched_metrics(model, tok, requests, pre)),
            "general": general_ability(model, tok, chunks, known, None),
        }
    points: list[dict] = []
    live_prompt: Any = None
    seconds, bad, done = 0.0, 0, 0
    with progress_bar(len(requests), f"edit-bench {editor.name}", quiet, console, unit="edits") as bar:
        for start in range(0, len(requests), group):
            reqs = requests[start : start + group]
            t0 = time.perf_counter()
            res = editor.edit(model, tok, reqs)
            seconds += time.perf_counter() - t0
            live_prompt = res.prompt_fn if res.prompt_fn is not None else live_prompt
            recs = res.info.get("convergence", [])
            for i, c in enumerate(recs):
                if not c["converged"]:
                    bad += 1
                    msg = not_converged_message(dict(c, index=start + (i if len(recs) == len(reqs) else 0)))
                    if bar.progress is not None:
                        bar.progress.console.print(msg, markup=False, highlight=False)
                    else:
                        print(msg, file=sys.stderr)
            prev = done
            done += len(reqs)
            bar.advance(len(reqs))
            if done // every > prev // every or done == len(requests):
                with torch.no_grad():
                    per = batched_metrics(model, tok, requests[:done], pre[:done], live_prompt)
                    means = _means(per)
                    point = {
                        "edits": done,
                        "all": means,
                        "recent": _means(per[max(0, done - window) :]),
                        "first": _means(per[:window]),
                        "general": general_ability(model, tok, chunks, known, live_prompt),
                        "not_converged": bad,
                        "seconds": seconds,
                    }
                points.append(point)
                if bar.progress is not None and bar.task is not None:
                    eff = means.get("efficacy[top1]")
                    bar.progress.update(
                        bar.task,
                        description=f"edit-bench {editor.name} · efficacy of all {eff:.1f} · not converged {bad}"
                        if eff is not None
                        else f"edit-bench {editor.name} · not converged {bad}",
                    )
                if on_point is not None:
                    on_point(point)
    return {
        "method": editor.name,
        "params": editor.params.model_dump(mode="json"),
        "group": group,
        "every": every,
        "window": window,
        "baseline": baseline,
        "points": points,
        "not_converged": bad,
        "seconds": seconds,
    }


# ---- the command ---------------------------------------------------------------------------------------
def split_overrides(methods: list[str], overrides: list[str]) -> dict[str, list[str]]:
    """`rome.layer=5` -> {"rome": ["layer=5"]}: every override names the method it is for."""
    out: dict[str, list[str]] = {m: [] for m in methods}
    for o in overrides:
        key = o.split("=", 1)[0]
        head, _, rest = key.partition(".")
        if head not in out or not rest or "=" not in o:
            raise ValueError(
                f"override {o!r}: prefix it with the method it is for, one of {', '.join(methods)} "
                f"(e.g. {methods[0]}.layer=5)"
            )
        out[head].append(o.split(".", 1)[1])
    return out


def run_bench(
    requests_path: str,
    model: str,
    methods: list[str],
    out: str,
    every: int,
    overrides: Optional[list[str]] = None,
    window: Optional[int] = None,
    group: int = 1,
    general: Optional[str] = None,
    general_tokens: int = 20000,
    known: Optional[str] = None,
    limit: Optional[int] = None,
    seed: int = 0,
    quiet: bool = False,
    console: Optional[Any] = None,
) -> dict:
    """Run every method's sequential curve on the same requests; write `out/curves.json` after every point.
    Returns the curves."""
    from lifelong.data.edit_requests import load_requests
    from lifelong.editing.api import build, model_config
    from lifelong.fileio import atomic_write_json
    from lifelong.models import load_model_and_tokenizer
    from lifelong.models.threads import set_torch_threads

    if not methods:
        raise ValueError("--methods names no method")
    if len(set(methods)) < len(methods):
        raise ValueError(f"--methods names a method twice: {','.join(methods)}")
    if every < 1:
        raise ValueError(f"--every must be at least 1, got {every}")
    requests = load_requests(requests_path)[:limit] if limit else load_requests(requests_path)
    per_method = split_overrides(methods, list(overrides or []))
    editors = {m: build(m, per_method[m]) for m in methods}  # every parameter checked before any model loads
    dest = Path(out)
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} already exists and is not empty; choose another --out (nothing is overwritten)")
    dest.mkdir(parents=True, exist_ok=True)
    curves: dict[str, Any] = {
        "requests_file": str(requests_path),
        "requests": len(requests),
        "model": model,
        "every": every,
        "window": window or every,
        "group": group,
        "general": general,
        "known": known,
        "methods": {},
    }
    chunks = known_pairs = None
    for m, editor in editors.items():
        torch.manual_seed(seed)
        mdl, tok = load_model_and_tokenizer(model_config(model), seed=seed)
        set_torch_threads(mdl)
        mdl.eval()
        if general and chunks is None:
            chunks = general_chunks(general, tok, general_tokens)
        if known and known_pairs is None:
            known_pairs = known_facts(known)
        entry: dict[str, Any] = {"points": [], "finished": False}
        curves["methods"][m] = entry

        def saved(point: dict, entry: dict = entry) -> None:
            entry["points"].append(point)
            atomic_write_json(dest / "curves.json", curves)

        result = sequential_curve(
            mdl, tok, editor, requests, every, window, group, chunks, known_pairs, quiet, console, on_point=saved
        )
        entry.update(result, finished=True)
        atomic_write_json(dest / "curves.json", curves)
        del mdl
    return curves
