"""Mixing several sources in one stage, and topic-ratio adaptation between stages.

A stage with `mix` trains on N = (total examples of its sources) examples, a share r_i of them from source
i, drawn in order (cycling when a source is shorter than its share). With `adapt_ratios`, the shares are
updated at the stage's start from how each topic's eval task changed over the previous stage, in the
Llama-3-SynE form (Chen et al. 2024):

    r_i <- r_i * (1 + alpha * delta_p_i * w_i),  then normalised,

with delta_p_i the relative drop of topic i's score over the previous stage (direction-aware: a rising
perplexity is a drop), so topics that were forgotten get more data. The ratios used are logged and kept in
`results.json` (`mix`).
"""

from __future__ import annotations

from typing import Any, Optional


def adapted(
    ad: Any, index: int, ratios: list[float], tasks: list[dict], matrix: list[list[Optional[float]]]
) -> tuple[list[float], list[float]]:
    """(new ratios, delta_p per topic) from the results rows around the previous stage. `ad` is the stage's
    `RatioAdaptation` (None: unchanged); `tasks` and `matrix` are the results' task records and rows."""
    if ad is None or not matrix or index < 1:
        return ratios, [0.0] * len(ratios)
    names = [t["name"] for t in tasks]
    prev, now = matrix[index - 1], matrix[index]  # before and after stage index-1
    deltas = []
    for t in ad.tasks:
        j = names.index(t)
        a, b = prev[j], now[j]
        if a is None or b is None or a == 0:
            deltas.append(0.0)
            continue
        drop = (a - b) if tasks[j]["higher_is_better"] else (b - a)
        deltas.append(drop / abs(a))
    w = ad.weights or [1.0] * len(ratios)
    new = [max(r * (1 + ad.alpha * d * wi), 1e-6) for r, d, wi in zip(ratios, deltas, w)]
    total = sum(new)
    return [r / total for r in new], deltas


def compose(
    sources: list[list[dict]],
    weights: list[float],
    ad: Any,
    index: int,
    previous: Optional[list[float]],
    tasks: list[dict],
    matrix: list[list[Optional[float]]],
) -> tuple[list[dict], dict]:
    """The stage's examples drawn from its sources, and the record of the mix (ratios, counts, delta_p).
    `previous` are the ratios the previous stage used (adaptation starts from them)."""
    total_w = sum(weights)
    ratios = [w / total_w for w in weights]
    if ad is not None and previous is not None and len(previous) == len(ratios):
        ratios = previous  # adapt from the ratios the previous stage used
    ratios, deltas = adapted(ad, index, ratios, tasks, matrix)
    n = sum(len(s) for s in sources)
    counts = [round(r * n) for r in ratios]
    out: list[dict] = []
    for src, c in zip(sources, counts):
        out += [src[k % len(src)] for k in range(c)]
    return out, {"ratios": ratios, "counts": counts, "delta_p": deltas}
