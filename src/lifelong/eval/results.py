"""The results matrix of a run: rows = baseline and after each stage, columns = eval tasks, plus the
per-example statistics behind every cell (for bootstrap CIs), costs and metrics. Stored as
`results.json`, rewritten atomically after every row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from lifelong.eval.metrics import bootstrap_cis, continual_metrics
from lifelong.eval.scorers import SCORERS
from lifelong.fileio import atomic_write_json

PERCENT = {"accuracy", "exact_match", "preference_accuracy"}
"""Metrics in percent, higher is better: averaged together in the `score` group."""


class Results:
    def __init__(self, name: str, rows: list[str], tasks: list[dict], bwt_denominator: str = "T-1") -> None:
        self.name = name
        self.rows = rows  # "baseline", then stage names
        self.tasks = tasks  # {name, metric, higher_is_better, stage, scorer, n, unit, metrics_unit}
        for t in tasks:  # units come from the scorer (records of older runs lack them)
            if t.get("scorer") in SCORERS:
                cls = SCORERS.get(t["scorer"])
                t.setdefault("unit", cls.unit)
                t.setdefault("metrics_unit", cls.metrics_unit or cls.unit)
        self.matrix: list[list[Optional[float]]] = [[None] * len(tasks) for _ in rows]
        self.stats: dict[str, dict[str, list]] = {t["name"]: {} for t in tasks}
        self.costs: dict[str, dict] = {}
        self.metrics: dict[str, Any] = {}
        self.extra: dict[str, Any] = {"bwt_denominator": bwt_denominator}

    # ---- rows -----------------------------------------------------------------------------------
    def has_row(self, r: int) -> bool:
        return all(v is not None for v in self.matrix[r])

    def set_cell(self, r: int, j: int, stats: np.ndarray) -> None:
        t = self.tasks[j]
        agg = SCORERS.get(t["scorer"]).aggregate
        self.matrix[r][j] = float(agg(stats))
        self.stats[t["name"]][self.rows[r]] = stats.tolist()

    # ---- metrics --------------------------------------------------------------------------------
    def compute_metrics(self, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
        """Metrics over the stage-owned tasks, one group per unit (percent scores; perplexity; bits per byte;
        ...), each with its unit and direction. Cells enter the metrics through the scorer's
        `metrics_aggregate` (perplexity: mean NLL in nats/token), the point estimates and every bootstrap
        resample alike, so the CIs are on the scale of the estimates."""
        den = self.extra["bwt_denominator"]
        out: dict[str, Any] = {}
        done = [r for r in range(len(self.rows)) if self.has_row(r)]
        if not done or done[-1] != len(self.rows) - 1:
            return out
        # one group for percent scores; one per other unit (perplexity, bits per byte, margins): never mixed
        others = sorted({t["metric"] for t in self.tasks if t["stage"] is not None and t["metric"] not in PERCENT})
        for group in ["score"] + others:
            cols = [
                j
                for j, t in enumerate(self.tasks)
                if t["stage"] is not None and (t["metric"] in PERCENT if group == "score" else t["metric"] == group)
            ]
            hib = all(self.tasks[j]["higher_is_better"] for j in cols)
            if not cols:
                continue
            rows = [self.tasks[j]["stage"] + 1 for j in cols]
            scorers = [SCORERS.get(self.tasks[j]["scorer"]) for j in cols]
            aggs = [cls.metrics_aggregate for cls in scorers]
            stats = [np.array([self.stats[self.tasks[j]["name"]][r] for r in self.rows]) for j in cols]
            M = np.array([[float(agg(s[r])) for r in range(len(self.rows))] for agg, s in zip(aggs, stats)]).T
            A = M[np.ix_(rows, range(len(cols)))]
            point = continual_metrics(A, M[0], [hib] * len(cols), den)
            ci = bootstrap_cis(stats, aggs, rows, [hib] * len(cols), den, n_boot=n_boot, seed=seed)
            units = sorted({cls.metrics_unit or cls.unit for cls in scorers})
            out[group] = {
                "tasks": [self.tasks[j]["name"] for j in cols],
                "unit": units[0] if len(units) == 1 else " | ".join(units),
                "score_unit": scorers[0].unit,
                "higher_is_better": hib,
                "metrics": point,
                "ci95": ci,
            }
        pref = self.extra.get("preference_stages", [])
        if pref:  # the alignment tax: change of the non-preference columns across each preference stage
            tax = {}
            for i in pref:
                changes = []
                for j, t in enumerate(self.tasks):
                    if (
                        t["metric"] == "preference_accuracy"
                        or self.matrix[i][j] is None
                        or self.matrix[i + 1][j] is None
                    ):
                        continue
                    d = self.matrix[i + 1][j] - self.matrix[i][j]
                    changes.append(d if t["higher_is_better"] else -d)
                tax[self.rows[i + 1]] = {
                    "mean_change": float(np.mean(changes)) if changes else None,
                    "columns": len(changes),
                }
            out["alignment_tax"] = tax
        probes = [j for j, t in enumerate(self.tasks) if t["stage"] is None]
        if probes:
            out["probes"] = {
                self.tasks[j]["name"]: {
                    "baseline": self.matrix[0][j],
                    "final": self.matrix[-1][j],
                    "change": self.matrix[-1][j] - self.matrix[0][j],  # type: ignore[operator]
                }
                for j in probes
            }
        out["convention"] = (
            f"A[i,j] = score of stage j's task after stage i; baseline row = before the first "
            f"stage; BWT and FM divide by {den}; FWT is against the baseline row; "
            "CIs: 95% percentile bootstrap over eval examples; each group's metrics are in its `unit` "
            "(perplexity tasks: mean NLL in nats/token, the log of the perplexity the matrix shows)"
        )
        self.metrics = out
        return out

    # ---- storage --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": self.rows,
            "tasks": self.tasks,
            "matrix": self.matrix,
            "metrics": self.metrics,
            "costs": self.costs,
            **self.extra,
        }

    def save(self, run_dir: Path) -> None:
        atomic_write_json(Path(run_dir) / "results.json", self.to_dict())
        atomic_write_json(Path(run_dir) / "per_example.json", self.stats)

    @classmethod
    def load(cls, run_dir: Path) -> "Results":
        d = json.loads((Path(run_dir) / "results.json").read_text())
        r = cls(d["name"], d["rows"], d["tasks"], d.get("bwt_denominator", "T-1"))
        r.matrix, r.metrics, r.costs = d["matrix"], d.get("metrics", {}), d.get("costs", {})
        r.extra.update({k: v for k, v in d.items() if k not in ("name", "rows", "tasks", "matrix", "metrics", "costs")})
        pe = Path(run_dir) / "per_example.json"
        if pe.exists():
            r.stats = json.loads(pe.read_text())
        return r
