"""Paired differences between runs of one stream, from their per-example statistics (no model).

References:
- Efron and Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13 (percentile intervals) and ch. 15
  (permutation tests); the paired design of Dror et al. 2018, "The Hitchhiker's Guide to Testing Statistical
  Significance in Natural Language Processing" (ACL): two systems scored on the same items are compared item
  by item, not through two separate intervals.
- Davison and Hinkley 1997, "Bootstrap Methods and their Application", sec. 3.8 (hierarchical data: resample
  the top level, then within it); Owen 2007, "The pigeonhole bootstrap" (Ann. Appl. Stat.): seeds and eval
  items are crossed factors, every run scores every item.

Every run of a comparison scores the same eval items, so the difference of a metric between two runs is
measured item by item. One bootstrap replicate draws, for every eval task, one vector of item indices with
replacement and applies it to every row of every run (paired across runs, and across the cells a metric
combines); every cell is recomputed with its scorer's `aggregate` (matrix cells, the unit the matrix shows) or
`metrics_aggregate` (cells entering AA, AIA, FM, BWT, FWT, as in `Results.compute_metrics`), the metrics with
`continual_metrics`, and the difference to the reference. The CI is the percentile interval of the
differences. When a configuration ran under several seeds (runs whose configs differ only in `seed` and
`name`), the replicate first draws that configuration's seeds with replacement (independently per
configuration: seed s of one configuration is not paired with seed s of another), then applies the item draw
to each drawn run; the configuration's value is the mean over its drawn runs, so the CI covers seeds and items.

The p-value is a paired permutation test: under the null the two runs are exchangeable on every item, so a
permutation swaps the two runs' statistics of each item with probability 1/2, the same swap in every row of the
item's task (a metric over many cells is permuted at the item level, consistently across its cells). Two-sided:
p = (1 + #{|d*| >= |d|}) / (1 + n_perm). A configuration with several seeds enters the test through its per-item
statistics averaged over its seeds, so the p-value is conditional on the seeds that ran; the CI is what covers
seed variance. "not distinguishable" means the CI covers 0.

(Past 300 lines: the bootstrap, the seed pooling and the permutation test share one layout of cells and metric
groups and one item draw; split into modules they would pass all of it around.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from lifelong.eval.metrics import METRICS, continual_metrics
from lifelong.eval.scorers import SCORERS

SEED_KEYS = ("seed", "name")
"""Config keys that may differ between runs of one configuration under several seeds."""

NOT_DISTINGUISHABLE = "not distinguishable"
METRIC_GOOD = {"AA": 0, "AIA": 0, "FM": -1, "BWT": 1, "FWT": 1}
"""Which sign of a difference is an improvement: 0 = the group's score direction (AA, AIA), FM is forgetting
(lower is better), BWT and FWT are signed so that higher is better."""

Agg = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RunData:
    """A run as its directory holds it: `results.json`, `per_example.json` and the resolved config."""

    name: str
    results: dict[str, Any]
    per_example: dict[str, dict[str, list]]
    config: Optional[dict[str, Any]] = None
    where: str = ""
    """The run directory, named in messages."""


def seed_groups(runs: list[RunData]) -> list[list[int]]:
    """Indices of runs grouped by configuration, in input order: runs whose configs differ only in `seed` and
    `name` form one group; a run without a config is a group of its own."""
    groups: list[list[int]] = []
    keys: list[Optional[dict]] = []
    for i, r in enumerate(runs):
        key = None if r.config is None else {k: v for k, v in r.config.items() if k not in SEED_KEYS}
        for g, k in zip(groups, keys):
            if key is not None and k == key:
                g.append(i)
                break
        else:
            groups.append([i])
            keys.append(key)
    return groups


def _stats(run: RunData, task: str, row: str) -> Optional[np.ndarray]:
    s = run.per_example.get(task, {}).get(row)
    if s is None or len(s) == 0:
        return None
    a = np.asarray(s, dtype=float)
    return a[:, None] if a.ndim == 1 else a


def check_same_items(runs: list[RunData]) -> None:
    """Refuse runs whose cells were scored on different numbers of eval items (a paired comparison needs the
    same items in every run)."""
    ref = runs[0]
    for r in runs[1:]:
        for t in ref.results["tasks"]:
            for row in ref.results["rows"]:
                a, b = _stats(ref, t["name"], row), _stats(r, t["name"], row)
                if a is not None and b is not None and a.shape != b.shape:
                    raise ValueError(
                        f"{r.where or r.name}/per_example.json: task {t['name']!r} row {row!r} has {len(b)} items "
                        f"({b.shape[1]} statistics each), {ref.where or ref.name} has {len(a)} ({a.shape[1]}): a "
                        "paired comparison needs the same eval items; compare runs with the same eval settings "
                        "(max_examples, data files)"
                    )


def _good(sign: int, higher_is_better: bool) -> int:
    return sign if sign else (1 if higher_is_better else -1)


def _verdict(lo: float, hi: float, good: int) -> str:
    if lo <= 0.0 <= hi:
        return NOT_DISTINGUISHABLE
    return "better" if (lo > 0) == (good > 0) else "worse"


class _Layout:
    """What the runs share: cells with statistics in every run, metric groups every run finished."""

    def __init__(self, runs: list[RunData]) -> None:
        ref = runs[0].results
        self.rows: list[str] = list(ref["rows"])
        self.tasks: list[dict] = list(ref["tasks"])
        self.den: str = ref.get("bwt_denominator", "T-1")
        self.scorers = [SCORERS.get(t["scorer"]) for t in self.tasks]
        self.cells = [
            (r, j)
            for j, t in enumerate(self.tasks)
            for r, row in enumerate(self.rows)
            if all(_stats(run, t["name"], row) is not None for run in runs)
        ]
        have = set(self.cells)
        names = [t["name"] for t in self.tasks]
        self.groups: dict[str, dict] = {}
        for group, g in (ref.get("metrics") or {}).items():
            if not (isinstance(g, dict) and "tasks" in g and "metrics" in g):
                continue
            cols = [names.index(n) for n in g["tasks"] if n in names]
            if len(cols) != len(g["tasks"]) or not all((r, j) in have for j in cols for r in range(len(self.rows))):
                continue
            if not all(group in (run.results.get("metrics") or {}) for run in runs):
                continue
            hib = g.get("higher_is_better")
            unit = g.get("unit") or (self.scorers[cols[0]].metrics_unit or self.scorers[cols[0]].unit)
            self.groups[group] = {
                "cols": cols,
                "rows": [self.tasks[j]["stage"] + 1 for j in cols],
                "hib": all(self.tasks[j]["higher_is_better"] for j in cols) if hib is None else bool(hib),
                "unit": unit,
            }

    def cell_unit(self, j: int) -> str:
        return str(self.tasks[j].get("unit") or self.scorers[j].unit)

    def metric_cols(self) -> list[int]:
        return sorted({j for g in self.groups.values() for j in g["cols"]})


def _cell(run: RunData, layout: _Layout, c: tuple[int, int]) -> np.ndarray:
    s = _stats(run, layout.tasks[c[1]]["name"], layout.rows[c[0]])
    if s is None:
        raise ValueError(f"{run.where or run.name}: no per-example statistics for {c}")
    return s


def _value(layout: _Layout, j: int, stats: np.ndarray, metrics_scale: bool) -> np.ndarray:
    """Cell values (...,) of task j from statistics (..., n, k): the matrix's scale or the metrics' scale."""
    cls = layout.scorers[j]
    return np.asarray(cls.metrics_aggregate(stats) if metrics_scale else cls.aggregate(stats), dtype=float)


def _metrics(layout: _Layout, met: dict[tuple[int, int], np.ndarray], size: int) -> dict[str, dict[str, np.ndarray]]:
    """Continual metrics (size,) of every group from its cells' values (size,) on the metrics scale; NaN where a
    metric is undefined."""
    out: dict[str, dict[str, np.ndarray]] = {}
    R = len(layout.rows)
    for group, g in layout.groups.items():
        cols, rows, hib = g["cols"], g["rows"], g["hib"]
        M = np.stack([np.stack([met[(r, j)] for j in cols], axis=-1) for r in range(R)], axis=-2)  # (size, R, T)
        vals = {m: np.full(size, np.nan) for m in METRICS}
        for b in range(size):
            A = M[b][np.ix_(rows, range(len(cols)))]
            for m, v in continual_metrics(A, M[b, 0], [hib] * len(cols), layout.den).items():
                if v is not None:
                    vals[m][b] = v
        out[group] = vals
    return out


def _one(values: dict[tuple[int, int], np.ndarray]) -> dict[tuple[int, int], np.ndarray]:
    return {c: np.asarray(v, dtype=float).reshape(1) for c, v in values.items()}


def _per_run(layout: _Layout, run: RunData, idx: dict[int, np.ndarray]) -> dict[str, Any]:
    """Point values and bootstrap draws (n_boot,) of every cell and metric of one run, under item draws idx[j]
    (n_boot, n_j)."""
    n_boot = next(iter(idx.values())).shape[0]
    in_metrics = set(layout.metric_cols())
    cells, met, cell_draws, met_draws = {}, {}, {}, {}
    for c in layout.cells:  # one cell at a time: (n_boot, n, k) in memory, not the whole run
        j = c[1]
        s = _cell(run, layout, c)
        cells[c] = float(_value(layout, j, s, False))
        cell_draws[c] = _value(layout, j, s[idx[j]], False)
        if j in in_metrics:
            met[c] = _value(layout, j, s, True)
            met_draws[c] = _value(layout, j, s[idx[j]], True)
    return {
        "cells": cells,
        "metrics": {g: {m: float(v[0]) for m, v in d.items()} for g, d in _metrics(layout, _one(met), 1).items()},
        "cell_draws": cell_draws,
        "metric_draws": _metrics(layout, met_draws, n_boot),
    }


def _permutation_p(
    layout: _Layout,
    arm: list[RunData],
    ref: list[RunData],
    n_items: dict[int, int],
    n_perm: int,
    rng: np.random.Generator,
) -> dict[Any, float]:
    """Two-sided paired permutation p-values of every cell ((r, j) keys) and metric ((group, m) keys). A
    configuration with several seeds enters with its per-item statistics averaged over them."""
    a = {c: np.mean([_cell(x, layout, c) for x in arm], axis=0) for c in layout.cells}
    b = {c: np.mean([_cell(x, layout, c) for x in ref], axis=0) for c in layout.cells}
    swap = {j: rng.random((n_perm, n)) < 0.5 for j, n in n_items.items()}  # one swap per item, for all its rows
    in_metrics = set(layout.metric_cols())
    null_cells, null_a, null_b = {}, {}, {}
    obs_cells, obs_a, obs_b = {}, {}, {}
    for c in layout.cells:
        j = c[1]
        sw = swap[j][:, :, None]
        pa, pb = np.where(sw, b[c], a[c]), np.where(sw, a[c], b[c])  # (n_perm, n, k)
        obs_cells[c] = float(_value(layout, j, a[c], False) - _value(layout, j, b[c], False))
        null_cells[c] = _value(layout, j, pa, False) - _value(layout, j, pb, False)
        if j in in_metrics:
            obs_a[c], obs_b[c] = _value(layout, j, a[c], True), _value(layout, j, b[c], True)
            null_a[c], null_b[c] = _value(layout, j, pa, True), _value(layout, j, pb, True)

    def p(obs: float, draws: np.ndarray) -> float:
        tol = 1e-9 * max(1.0, abs(obs))  # equal statistics summed in another order are ties, not smaller
        return float((1 + np.sum(np.abs(draws) >= abs(obs) - tol)) / (1 + n_perm))

    out: dict[Any, float] = {c: p(obs_cells[c], null_cells[c]) for c in layout.cells}
    ma, mb = _metrics(layout, _one(obs_a), 1), _metrics(layout, _one(obs_b), 1)
    na, nb = _metrics(layout, null_a, n_perm), _metrics(layout, null_b, n_perm)
    for group in layout.groups:
        for m in METRICS:
            obs = float(ma[group][m][0] - mb[group][m][0])
            if np.isfinite(obs):
                out[(group, m)] = p(obs, na[group][m] - nb[group][m])
    return out


def _configuration(per: list[dict[str, Any]], layout: _Layout, rng: np.random.Generator, n_boot: int) -> dict:
    """One configuration from its runs (one per seed): values are means over its runs; each replicate draws
    that many runs with replacement and averages their draws (the hierarchical bootstrap's top level)."""
    pick = rng.integers(len(per), size=(n_boot, len(per)))

    def draws(stack: list[np.ndarray]) -> np.ndarray:  # (seeds, n_boot) -> (n_boot,)
        return np.stack(stack)[pick, np.arange(n_boot)[:, None]].mean(axis=1)

    return {
        "cells": {c: float(np.mean([d["cells"][c] for d in per])) for c in layout.cells},
        "metrics": {g: {m: float(np.mean([d["metrics"][g][m] for d in per])) for m in METRICS} for g in layout.groups},
        "cell_draws": {c: draws([d["cell_draws"][c] for d in per]) for c in layout.cells},
        "metric_draws": {g: {m: draws([d["metric_draws"][g][m] for d in per]) for m in METRICS} for g in layout.groups},
    }


def paired_compare(
    runs: list[RunData],
    reference: int = 0,
    *,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    pool_seeds: bool = True,
) -> dict[str, Any]:
    """Differences of every metric and every matrix cell of each configuration to the reference's, with a paired
    (hierarchical, when seeds exist) bootstrap CI and a paired permutation p-value (module docstring).

    runs: runs of one stream (check it first: `report.compare.check_same_stream`); reference: index of the
    reference run (its configuration, with all its seeds, is the reference); pool_seeds: group runs whose
    configs differ only in seed and name into one configuration (when that leaves at least two)."""
    if len(runs) < 2:
        raise ValueError("a comparison needs at least two runs")
    if not 0 <= reference < len(runs):
        raise ValueError(f"reference index {reference} is not one of the {len(runs)} runs")
    if n_boot < 1 or n_perm < 1 or not 0 < level < 1:
        raise ValueError(f"n_boot and n_perm must be >= 1 and level in (0, 1); got {n_boot}, {n_perm}, {level}")
    check_same_items([runs[reference]] + [r for i, r in enumerate(runs) if i != reference])
    groups = seed_groups(runs) if pool_seeds else [[i] for i in range(len(runs))]
    if len(groups) < 2:  # every run is the same configuration: compare the seeds themselves
        groups = [[i] for i in range(len(runs))]
    ref_g = next(k for k, g in enumerate(groups) if reference in g)
    order = [groups[ref_g]] + [g for k, g in enumerate(groups) if k != ref_g]
    ordered = [runs[i] for g in order for i in g]
    layout = _Layout(ordered)
    if not layout.cells:
        raise ValueError("the runs share no scored cell: nothing to compare")
    n_items = {j: len(_cell(ordered[0], layout, (r, j))) for r, j in layout.cells}
    rng = np.random.default_rng(seed)
    idx = {j: rng.integers(n, size=(n_boot, n)) for j, n in sorted(n_items.items())}  # one item draw, every run
    per = {i: _per_run(layout, runs[i], idx) for g in order for i in g}
    arms = [_configuration([per[i] for i in g], layout, rng, n_boot) for g in order]
    q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)

    def entry(ref_v: float, run_v: float, draws: np.ndarray, p: float, good: int) -> dict[str, Any]:
        lo, hi = (float(v) for v in np.percentile(draws, q))
        lo, hi = min(lo, hi), max(lo, hi)
        return {
            "reference": ref_v,
            "run": run_v,
            "difference": run_v - ref_v,
            "ci": [lo, hi],
            "p": p,
            "verdict": _verdict(lo, hi, good),
        }

    def label(g: list[int]) -> str:  # a configuration is named by all its runs, in full
        return " + ".join(runs[i].name for i in g)

    comparisons = []
    for k in range(1, len(order)):
        a, b = arms[k], arms[0]
        p = _permutation_p(layout, [runs[i] for i in order[k]], [runs[i] for i in order[0]], n_items, n_perm, rng)
        metrics = {}
        for grp, g in layout.groups.items():
            ms = {}
            for m in METRICS:
                if not np.isfinite(a["metrics"][grp][m]) or not np.isfinite(b["metrics"][grp][m]):
                    continue
                d = a["metric_draws"][grp][m] - b["metric_draws"][grp][m]
                ms[m] = entry(
                    b["metrics"][grp][m], a["metrics"][grp][m], d, p[(grp, m)], _good(METRIC_GOOD[m], g["hib"])
                )
            metrics[grp] = {
                "unit": g["unit"],
                "higher_is_better": g["hib"],
                "tasks": [layout.tasks[j]["name"] for j in g["cols"]],
                "metrics": ms,
            }
        cells = [
            {
                "task": layout.tasks[j]["name"],
                "row": layout.rows[r],
                "unit": layout.cell_unit(j),
                "higher_is_better": bool(layout.tasks[j]["higher_is_better"]),
                **entry(
                    b["cells"][(r, j)],
                    a["cells"][(r, j)],
                    a["cell_draws"][(r, j)] - b["cell_draws"][(r, j)],
                    p[(r, j)],
                    1 if layout.tasks[j]["higher_is_better"] else -1,
                ),
            }
            for r, j in sorted(layout.cells)  # the matrix's reading order: row by row
        ]
        comparisons.append(
            {"run": label(order[k]), "runs": [runs[i].name for i in order[k]], "metrics": metrics, "cells": cells}
        )
    return {
        "reference": label(order[0]),
        "reference_runs": [runs[i].name for i in order[0]],
        "configurations": [
            {
                "name": label(g),
                "runs": [runs[i].name for i in g],
                "seeds": [(runs[i].config or {}).get("seed") for i in g],
            }
            for g in order
        ],
        "level": level,
        "n_boot": n_boot,
        "n_perm": n_perm,
        "seed": seed,
        "items": {layout.tasks[j]["name"]: n for j, n in sorted(n_items.items())},
        "method": (
            f"difference = run - reference; {100 * level:g}% paired percentile bootstrap CI ({n_boot} replicates: "
            "the same item draw for both runs and every cell; several seeds of a configuration: seeds drawn "
            f"first, then items); p: two-sided paired permutation test ({n_perm} item-level swaps); "
            f"'{NOT_DISTINGUISHABLE}' when the CI covers 0"
        ),
        "comparisons": comparisons,
    }
