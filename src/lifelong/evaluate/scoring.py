"""Scoring a checked `Plan` (`lifelong.evaluate.plan`): the model loaded without training state (no
accelerator, optimizer, strategy training state or checkpoint), in eval mode under `torch.inference_mode`,
scored by the path a run's matrix takes (`HFLM`, the scorer's `score_details` and `aggregate`, the strategy's
`eval_model` for a run's stage), and the output folder written once, complete."""

from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from rich.console import Console

from lifelong.config import ModelConfig
from lifelong.eval.metrics import score_ci
from lifelong.evaluate.plan import SOURCE_KEYS, ModelSpec, Plan
from lifelong.fileio import atomic_write_json, ensure_writable_dir
from lifelong.progress import chunk_size, progress, scored_in_chunks

__all__ = ["EvalResult", "check_out", "default_out", "evaluate", "load", "score"]


@dataclass
class EvalResult:
    """The output of one evaluation, as written to `out_dir`."""

    out_dir: Path
    model: str
    row: str
    """The row name of `per_example.json` (the stage for a run's stage, else `model`)."""
    tasks: list[dict]
    """Per task: name, metric, unit, higher_is_better, n, score, ci95 (None without bootstrap), scorer."""
    per_example: dict[str, dict[str, list]]

    def score(self, task: str) -> float:
        for t in self.tasks:
            if t["name"] == task:
                return float(t["score"])
        raise ValueError(f"no eval task {task!r} (tasks: {', '.join(t['name'] for t in self.tasks)})")


def default_out(spec: ModelSpec, root: Union[str, Path] = "evals") -> Path:
    """`evals/<model>-<timestamp>` (a suffix when two evaluations start in the same second)."""
    stem = Path(root) / f"{spec.label}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, k = stem, 1
    while out.exists():
        k += 1
        out = stem.with_name(f"{stem.name}-{k}")
    return out


def check_out(out: Path) -> None:
    """`out` must be new or empty (evaluations never overwrite) and its folder writable; checked before loading."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists and is not empty; evaluations never overwrite: choose another --out")
    ensure_writable_dir(out.parent, f"the folder of --out {out}:")


def load(p: Plan) -> tuple[Any, Any, Any, Optional[int], str]:
    """The model in eval mode, its tokenizer, the strategy of a run's stage (None otherwise), the stage's index
    and the row name. A run's stage loads from its stage-end checkpoint or kept weights (with the strategy's
    structure, as the run scored it), else from its `hf` export."""
    from lifelong.models import load_model_and_tokenizer

    torch.manual_seed(p.seed)
    if p.spec.run_dir is None:
        model, tok = load_model_and_tokenizer(p.model, seed=p.seed)
        return model.eval(), tok, None, None, "model"
    from lifelong.stage_models import open_stage_model
    from lifelong.stage_models import read_run_config as read_saved

    cfg = read_saved(p.spec.run_dir)
    index = [s.name for s in cfg.stages].index(p.spec.stage) if p.spec.stage else len(cfg.stages) - 1
    name = cfg.stages[index].name
    try:
        _, i, model, tok, strategy = open_stage_model(p.spec.run_dir, name)
        return model.eval(), tok, strategy, i, name
    except ValueError:
        export = p.spec.run_dir / "models" / name
        if not (export / "config.json").is_file():
            raise
    use = p.model.model_dump(exclude=set(SOURCE_KEYS))
    model, tok = load_model_and_tokenizer(ModelConfig(**use, path=str(export)), seed=p.seed)
    return model.eval(), tok, None, index, name


def score(
    p: Plan,
    model: Any,
    tok: Any,
    strategy: Any = None,
    stage: Optional[int] = None,
    row: str = "model",
    quiet: bool = False,
    console: Optional[Console] = None,
) -> tuple[list[dict], dict[str, dict[str, list]], dict[str, list[dict]]]:
    """Per task: its record (score, CI, ...), its per-example statistics and its per-item audit records
    (`lifelong.eval.results.example_records`), scored as a run scores its matrix. Progress per task over its
    items (`lifelong.progress`: a bar on a terminal, one line otherwise, nothing when `quiet`)."""
    from lifelong.data.formats import Formatter
    from lifelong.eval.lm import HFLM
    from lifelong.eval.results import example_records
    from lifelong.eval.tasks import eval_context, fit_task
    from lifelong.train.context import StageContext

    fm = Formatter(tok, p.model.chat_template, p.model.system_prompt)
    context = eval_context(model)
    device = next(model.parameters()).device
    records: list[dict] = []
    stats_of: dict[str, dict[str, list]] = {}
    items_of: dict[str, list[dict]] = {}
    with torch.inference_mode():
        for t in p.tasks:
            m = model
            if strategy is not None:  # a run's stage: the strategy picks the model per task (adapters, prompts)
                ctx = StageContext(
                    stage_index=stage if stage is not None else 0,
                    stage_name=row,
                    model=model,
                    tokenizer=tok,
                    device=device,
                    task_stage=t.stage,
                    task_items=t.items,
                    formatter=fm,
                )
                m = strategy.eval_model(ctx, t)
            m.eval()
            t = fit_task(t, fm, context)  # the items a run fits into this model's context
            if stage is not None:  # a run's stage: the items as its matrix row scores them (per-row options)
                t = replace(t, items=t.items_at(stage + 1))
            lm = HFLM(m, fm, p.batch_size, max_length=context or 1024)
            with progress(len(t.items), f"eval {t.name}", quiet, console) as bar:
                score_items = partial(t.scorer.score_details, lm)
                stats, details = scored_in_chunks(score_items, t.items, bar, chunk_size(len(t.items), p.batch_size))
            stats = np.asarray(stats)
            items_of[t.name] = example_records(t.items, range(len(t.items)), stats, details)
            cls = type(t.scorer)
            records.append(
                {
                    "name": t.name,
                    "metric": t.metric,
                    "unit": cls.unit,
                    "metrics_unit": cls.metrics_unit or cls.unit,
                    "higher_is_better": t.higher_is_better,
                    "n": len(t.items),
                    "score": float(t.scorer.aggregate(stats)),
                    "ci95": score_ci(stats, t.scorer.aggregate, p.bootstrap, p.seed),
                    "scorer": getattr(cls, "registered_name", cls.__name__),
                    "stage": t.stage,
                    **t.scorer.signature_field(),
                }
            )
            stats_of[t.name] = {row: stats.tolist()}
    return records, stats_of, items_of


def evaluate(p: Plan, out: Optional[Union[str, Path]] = None, quiet: bool = False) -> EvalResult:
    """Load the model, score every task, write `out` (default `evals/<model>-<timestamp>`) complete or not at
    all. The output folder is checked before the model loads. `quiet`: no progress."""
    from lifelong.models.threads import set_torch_threads

    dest = Path(out) if out is not None else default_out(p.spec)
    check_out(dest)
    t0 = time.perf_counter()
    model, tok, strategy, stage, row = load(p)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    set_torch_threads(model, p.torch_threads)
    records, stats, items = score(p, model, tok, strategy, stage, row, quiet=quiet)
    res = {
        "name": dest.name,
        "kind": "eval",
        "model": p.spec.text,
        "source": p.source,
        "rows": [row],
        "tasks": records,
        "matrix": [[r["score"] for r in records]],
        "metrics": {},
        "costs": {},
        "settings": {
            "batch_size": p.batch_size,
            "bootstrap": p.bootstrap,
            "seed": p.seed,
            "model": p.model.model_dump(mode="json", exclude_defaults=True),
        },
        "wall_s": time.perf_counter() - t0,
        "versions": _versions(),
    }
    _write(dest, res, stats, items, row)
    return EvalResult(dest, p.spec.text, row, records, stats)


def _write(dest: Path, res: dict, stats: dict, items: dict[str, list[dict]], row: str) -> None:
    """Everything into a fresh folder beside `dest`, renamed into place: a kill leaves no half output."""
    from lifelong.eval.results import write_examples

    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, recs in items.items():  # examples/<task>/<row>.jsonl, as a run's (lifelong show --examples)
        write_examples(tmp, name, row, recs)
    atomic_write_json(tmp / "per_example.json", stats)
    atomic_write_json(tmp / "results.json", res)
    if dest.is_dir():
        dest.rmdir()  # empty (check_out)
    os.replace(tmp, dest)


def _versions() -> dict[str, str]:
    import transformers

    import lifelong

    return {
        "lifelong": lifelong.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
