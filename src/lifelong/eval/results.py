"""The results matrix of a run: rows = baseline and after each stage, columns = eval tasks, plus the
per-example statistics behind every cell (for bootstrap CIs), costs and metrics. Stored as
`results.json`, rewritten atomically after every row.

Every cell's items are kept apart for audit, one JSON record per line in `examples/<task>/<row>.jsonl`
(`write_examples`, each file written atomically before the row enters results.json): the item's stable id
(its index in the eval file and a short hash of its prompt), its statistics, its own score, and what the
scorer saw on the way (`Scorer.score_details`: options and their log-likelihoods, the generated text and the
strings compared, NLL and tokens)."""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from lifelong.eval.metrics import bootstrap_cis, continual_metrics
from lifelong.eval.scorers import SCORERS
from lifelong.fileio import atomic_write_json, atomic_write_text

PERCENT = {
    "accuracy",
    "exact_match",
    "preference_accuracy",
    "f1",
    "bleu",
    "chrf",
    "rouge1",
    "rouge2",
    "rougeL",
    "rougeLsum",
    "sari",
    "edit_similarity",
    "acc",  # lm-eval's names (`lm_eval` tasks)
    "acc_norm",
    "exact_str_match",  # BIG-bench's string metrics (`bigbench_match`)
    "case_insensitive_str_match",
    "numeric_match_with_0_1_relative_error",
}
"""Metrics on a 0-100 scale, higher is better: averaged together in the `score` group (as TRACE's overall
performance averages accuracy, ROUGE-L, SARI and edit similarity)."""


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
        names = [t["also"]] if isinstance(t.get("also"), str) else list(t.get("also") or [])
        if names and stats.ndim == 2 and stats.shape[1] > 1 and len(stats):  # e.g. choice's acc_norm
            cls = SCORERS.get(t["scorer"])
            kept = self.extra.setdefault("also", {})
            if len(names) == 1:  # one score: {metric, rows}; several: a list of them
                entries = [kept.setdefault(t["name"], {"metric": names[0], "rows": {}})]
            else:
                entries = kept.setdefault(t["name"], [{"metric": n, "rows": {}} for n in names])
            for k, entry in enumerate(entries):
                entry["rows"][self.rows[r]] = float(cls.also_aggregate(stats, k))

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


# ---- per-item records (examples/<task>/<row>.jsonl) --------------------------------------------------
def item_id(index: int, item: dict) -> str:
    """A stable id of an eval item: its index in the eval file and the first 8 hex digits of the SHA-256 of
    its prompt (the prompt, the conversation, the text, or the whole row), e.g. `17-3fa2c1d0`, so two runs'
    items pair up and an edited eval file shows as changed ids."""
    key = item.get("prompt", item.get("messages", item.get("text", item)))
    if isinstance(key, str) and isinstance(item.get("subject"), str):  # an edit request: its filled-in prompt
        key = key.replace("{}", item["subject"])
    text = key if isinstance(key, str) else json.dumps(key, sort_keys=True, default=str)
    return f"{index}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"


def example_records(
    items: Sequence[dict], positions: Sequence[int], stats: np.ndarray, details: Optional[list[dict]]
) -> list[dict]:
    """One audit record per statistics row: `id` (`item_id` of the item at its position in the task's items),
    `score`, `prediction`, `gold`, the scorer's other details, the prompt, and `stats` (the row the matrix
    cell aggregates). `positions[i]` is the task-wide index of the i-th item the scorer saw (a process's
    shard); `details` come from `Scorer.score_details` (None: a scorer without them, one record per item)."""
    if details is None:
        details = [{"index": i} for i in range(len(stats))] if len(stats) == len(positions) else [{} for _ in stats]
    out = []
    for row, d in zip(np.asarray(stats, dtype=float).reshape(len(stats), -1), details):
        k = positions[d["index"]] if "index" in d else None
        rec: dict[str, Any] = {"id": None if k is None else item_id(k, items[k])}
        rec["score"] = float(row[0]) if len(row) else None
        rec.update({key: v for key, v in d.items() if key != "index"})
        if k is not None and isinstance(items[k].get("prompt"), str):
            rec.setdefault("prompt", items[k]["prompt"])
        rec["stats"] = row.tolist()
        out.append(rec)
    return out


def _file_name(name: str) -> str:
    """A task or row name as one path component: letters, digits, `-_.` kept, every other byte as %XX (and
    a leading dot), so no name can leave `examples/` or collide with another."""
    safe = "".join(
        c if c.isascii() and (c.isalnum() or c in "-_.") else "".join(f"%{b:02X}" for b in c.encode("utf-8"))
        for c in name.replace("%", "%25")
    )
    return "%2E" + safe[1:] if safe.startswith(".") else safe


def examples_path(run_dir: Path, task: str, row: str) -> Path:
    """Where the audit records of one cell live: `examples/<task>/<row>.jsonl` in the run directory."""
    return Path(run_dir) / "examples" / _file_name(task) / f"{_file_name(row)}.jsonl"


def write_examples(run_dir: Path, task: str, row: str, records: list[dict]) -> Path:
    """Write one cell's records as JSON lines, atomically (`lifelong.fileio`)."""
    path = examples_path(run_dir, task, row)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, default=_jsonable) + "\n" for r in records))
    return path


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"cannot store {type(o).__name__} in an examples file")


def read_examples(run_dir: Path, task: str, row: str) -> list[dict]:
    """The records of one cell (`write_examples`); a missing file is a ValueError that says why."""
    path = examples_path(run_dir, task, row)
    if not path.is_file():
        raise ValueError(
            f"{path}: no per-item records for task {task!r} at row {row!r} (the row is not scored yet, or the run "
            "was made by a lifelong without per-item records)"
        )
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cell_of(run_dir: Path, task: str, stage: Optional[str]) -> tuple[dict, str, str]:
    """(results.json, task name, row name) of the cell `lifelong show --examples TASK --stage K` names: K is a
    row name (`baseline` or a stage's name) or a stage index (0-based; -1 = baseline, as in R[i, j]); no K:
    the last row scored. Unknown names are ValueErrors listing what the run has."""
    rp = Path(run_dir) / "results.json"
    if not rp.is_file():
        raise ValueError(f"{run_dir}: no results.json; is this a run directory (lifelong run ... writes one)?")
    res = json.loads(rp.read_text(encoding="utf-8"))
    names, rows = [t["name"] for t in res["tasks"]], list(res["rows"])
    if task not in names:
        raise ValueError(
            f"--examples {task!r}: the run has no such task{_hint(task, names)}; tasks: {', '.join(names)}"
        )
    if stage is None:
        done = [r for r, vals in zip(rows, res["matrix"]) if any(v is not None for v in vals)]
        if not done:
            raise ValueError(f"{run_dir}: no row is scored yet")
        return res, task, done[-1]
    if stage in rows:
        return res, task, stage
    try:
        k = int(stage)
    except ValueError:
        raise ValueError(
            f"--stage {stage!r}: the run has no such row{_hint(stage, rows)}; rows: {', '.join(rows)} "
            f"(or a stage index 0..{len(rows) - 2}, -1 for the baseline)"
        ) from None
    if not -1 <= k <= len(rows) - 2:
        raise ValueError(f"--stage {k}: stage indices of this run are 0..{len(rows) - 2} (-1: the baseline)")
    return res, task, rows[k + 1]


def _hint(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def diff_examples(a: list[dict], b: list[dict]) -> dict[str, Any]:
    """Two cells' records paired by item id: those whose prediction or score differ (`changed`: (a, b)
    pairs), the ids only one side has, and how many pair up."""
    by_a, by_b = {r["id"]: r for r in a}, {r["id"]: r for r in b}
    both = [i for i in by_a if i in by_b]
    changed = [
        (by_a[i], by_b[i])
        for i in both
        if by_a[i].get("prediction") != by_b[i].get("prediction") or by_a[i].get("score") != by_b[i].get("score")
    ]
    return {
        "paired": len(both),
        "changed": changed,
        "only_a": [i for i in by_a if i not in by_b],
        "only_b": [i for i in by_b if i not in by_a],
    }
