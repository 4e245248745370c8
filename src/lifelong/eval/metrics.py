"""Continual-learning metrics as pure functions of the results matrix, with bootstrap CIs.

Notation: T stages that own an eval task; `A[i, j]` = score of stage j's task after stage i (i, j in
0..T-1); `b[j]` = score of task j before the first stage (the baseline row). With direction sign
`s_j = +1` (higher is better) or `-1` (lower is better, e.g. perplexity):
- AA   = 1/T sum_j A[T-1, j]                                  average accuracy after the last stage
- AIA  = 1/T sum_k AA_k, AA_k = 1/(k+1) sum_{j<=k} A[k, j]    average incremental accuracy
- BWT  = 1/D sum_{j<T-1} s_j (A[T-1, j] - A[j, j])            backward transfer (GEM, Lopez-Paz 2017)
- FM   = 1/D sum_{j<T-1} max_{l<T-1} s_j (A[l, j] - A[T-1, j])  forgetting (Chaudhry et al. 2018)
- FWT  = 1/(T-1) sum_{j>=1} s_j (A[j-1, j] - b[j])              forward transfer against the baseline row
D is T-1 (GEM convention, default) or T. BWT, FM, FWT are signed so that positive BWT/FWT is good and
positive FM is bad. These functions take `A` in whatever unit they are given; `Results.compute_metrics` gives
each cell through its scorer's `metrics_aggregate`, so perplexity tasks enter as mean NLL in nats per token
(ln perplexity): a perplexity going 3 -> 3000 is a forgetting of ln(1000) = 6.9 nats/token, not of 2,997.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

METRICS = ("AA", "AIA", "FM", "BWT", "FWT")


def continual_metrics(
    A: np.ndarray,
    baseline: Optional[np.ndarray] = None,
    higher_is_better: Optional[Sequence[bool]] = None,
    bwt_denominator: str = "T-1",
) -> dict[str, Optional[float]]:
    A = np.asarray(A, dtype=float)
    T = A.shape[0]
    if A.shape != (T, T):
        raise ValueError(f"the stage-task matrix must be square, got {A.shape}")
    s = np.ones(T) if higher_is_better is None else np.where(np.asarray(higher_is_better), 1.0, -1.0)
    aa_k = [float(A[k, : k + 1].mean()) for k in range(T)]
    out: dict[str, Optional[float]] = {
        "AA": aa_k[-1],
        "AIA": float(np.mean(aa_k)),
        "FM": None,
        "BWT": None,
        "FWT": None,
    }
    if T >= 2:
        D = T - 1 if bwt_denominator == "T-1" else T
        last = A[T - 1, : T - 1]
        diag = np.diag(A)[: T - 1]
        out["BWT"] = float((s[: T - 1] * (last - diag)).sum() / D)
        best = np.array([max(s[j] * (A[l, j] - A[T - 1, j]) for l in range(j, T - 1)) for j in range(T - 1)])
        out["FM"] = float(best.sum() / D)
        if baseline is not None:
            b = np.asarray(baseline, dtype=float)
            out["FWT"] = float(np.mean([s[j] * (A[j - 1, j] - b[j]) for j in range(1, T)]))
    return out


def bootstrap_cis(
    stats: Sequence[np.ndarray],
    aggregates: Sequence[Callable[[np.ndarray], np.ndarray]],
    rows_for_stage: Sequence[int],
    higher_is_better: Sequence[bool],
    bwt_denominator: str = "T-1",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Optional[list[float]]]:
    """Percentile bootstrap CIs of the metrics, resampling each task's eval examples (paired across rows).

    stats[j]: array (R, n_j, k) of per-example statistics of task j for every matrix row (row 0 = baseline,
    row i+1 = after stage i). rows_for_stage[j]: the row index of the stage owning task j, so the square
    stage-task matrix is A[i, j] = score(stats[j][rows_for_stage[i]]).
    """
    if n_boot <= 0:
        return {m: None for m in METRICS}
    rng = np.random.default_rng(seed)
    T = len(stats)
    # scores[j]: (n_boot, R) task j's score in each row under each resample
    scores = []
    for j in range(T):
        n = stats[j].shape[1]
        idx = rng.integers(n, size=(n_boot, n))
        scores.append(aggregates[j](stats[j][:, idx].transpose(1, 0, 2, 3)))  # (n_boot, R, n, k) -> (n_boot, R)
    draws: dict[str, list[float]] = {m: [] for m in METRICS}
    rows = list(rows_for_stage)
    for b in range(n_boot):
        A = np.array([[scores[j][b, rows[i]] for j in range(T)] for i in range(T)])
        base = np.array([scores[j][b, 0] for j in range(T)])
        for m, v in continual_metrics(A, base, higher_is_better, bwt_denominator).items():
            if v is not None:
                draws[m].append(v)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {m: ([float(np.percentile(d, lo)), float(np.percentile(d, hi))] if d else None) for m, d in draws.items()}


def score_ci(
    stats: np.ndarray,
    aggregate: Callable[[np.ndarray], np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Optional[list[float]]:
    """Percentile bootstrap CI of one score, resampling its eval examples: stats (n, k) per-example
    statistics, `aggregate` the scorer's (stats (..., n, k) -> (...)). The same seed draws the same
    resamples for every call with the same n, so scores of one task under several models (a sweep) are
    resampled in pairs. None without resamples or examples."""
    stats = np.asarray(stats, dtype=float)
    if n_boot <= 0 or len(stats) == 0:
        return None
    idx = np.random.default_rng(seed).integers(len(stats), size=(n_boot, len(stats)))
    draws = aggregate(stats[idx])
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return [float(np.percentile(draws, lo)), float(np.percentile(draws, hi))]
