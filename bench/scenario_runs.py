"""The scenarios' example runs on SmolLM2-135M-Instruct: every example config naive and with replay, one
markdown section per config with the results matrix (each cell with its 95% bootstrap CI over the eval
examples) and the continual-learning metrics with theirs, for docs/scenarios.md.

    python bench/scenario_runs.py examples/ner.yaml examples/translation.yaml ... [--out runs/scenarios]
        [--md docs/scenario-runs.md] [--replay-fraction 0.3] [--set torch_threads=1 ...]

Runs already finished in `--out` are reused (`lifelong run --resume` says "already finished" at once), so the
script can be stopped and started again; `--md` is rewritten with every config that has both runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from lifelong.eval.metrics import score_ci
from lifelong.eval.scorers import SCORERS


def run(cfg: Path, out: Path, name: str, extra: list[str]) -> tuple[Path, float]:
    """The finished run and its wall time (first to last event, so a reused run keeps its own)."""
    run_dir = out / name
    args = [sys.executable, "-m", "lifelong", "run", str(cfg), f"output_dir={out}", f"name={name}", *extra]
    if (run_dir / "results.json").exists():
        args.append("--resume")
    subprocess.run(args, check=True)
    times = [json.loads(x)["time"] for x in (run_dir / "events.jsonl").read_text().splitlines() if x.strip()]
    return run_dir, times[-1] - times[0]


def cell(res: dict, task: dict, row: str, seed: int) -> str:
    stats = res["per_example"].get(task["name"], {}).get(row)
    if stats is None:
        return "—"
    stats = np.asarray(stats, dtype=float)
    agg = SCORERS.get(task["scorer"]).aggregate
    ci = score_ci(stats, agg, 1000, seed)
    return f"{float(agg(stats)):.1f} [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else f"{float(agg(stats)):.1f}"


def section(cfg: Path, runs: dict[str, tuple[Path, float]]) -> str:
    lines = [f"### {cfg.stem} (`{cfg}`)", ""]
    for strategy, (run_dir, wall) in runs.items():
        res = json.loads((run_dir / "results.json").read_text())
        res["per_example"] = json.loads((run_dir / "per_example.json").read_text())
        tasks = res["tasks"]
        lines += [
            f"**{strategy}** (wall {wall / 60:.1f} min on this machine)",
            "",
            "| after stage | " + " | ".join(f"{t['name']} ({t['metric']})" for t in tasks) + " |",
            "|---" * (len(tasks) + 1) + "|",
        ]
        for row in res["rows"]:
            lines.append(f"| {row} | " + " | ".join(cell(res, t, row, 0) for t in tasks) + " |")
        lines.append("")
        for group, g in res.get("metrics", {}).items():
            if not (isinstance(g, dict) and "metrics" in g):
                continue
            parts = []
            for m in ("AA", "BWT", "FM", "FWT"):
                v, ci = g["metrics"].get(m), g["ci95"].get(m)
                if v is not None:
                    parts.append(f"{m} {v:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""))
            lines += [f"metrics ({group}, {g.get('unit', '')}): " + ", ".join(parts), ""]
        for task, kept in (res.get("also") or {}).items():
            for also in [kept] if isinstance(kept, dict) else kept:
                shown = ", ".join(f"{r} {v:.1f}" for r, v in also["rows"].items())
                lines.append(f"- {task} {also['metric']}: {shown}")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/scenarios"))
    ap.add_argument("--md", type=Path, default=Path("runs/scenarios/scenario-runs.md"))
    ap.add_argument("--replay-fraction", type=float, default=0.3)
    ap.add_argument(
        "--strategies", default="naive,replay", help="comma-separated; `name:key=value:...` adds overrides to one"
    )
    ap.add_argument("--set", nargs="*", default=[], help="overrides for every run, e.g. torch_threads=1")
    a = ap.parse_args()
    sections = []
    for cfg in a.configs:
        runs = {}
        for spec in a.strategies.split(","):
            strategy, *own = spec.split(":")  # `lora:train.lr=1e-3`: overrides for this strategy's run only
            extra = [f"strategy.0.name={strategy}", *a.set, *own]
            if strategy == "replay":
                extra.append(f"strategy.0.fraction={a.replay_fraction}")
            runs[strategy] = run(cfg, a.out, f"{cfg.stem}-{strategy}", extra)
        sections.append(section(cfg, runs))
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text("\n".join(sections))
        print(sections[-1], flush=True)


if __name__ == "__main__":
    main()
