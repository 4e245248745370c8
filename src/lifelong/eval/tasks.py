"""Eval tasks: a name, a scorer and its items, built from config before any training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from lifelong.config import EvalTaskConfig, RunConfig
from lifelong.data import check_rows, infer_format, load_rows, to_eval_items
from lifelong.data.formats import label_set
from lifelong.eval.scorers import SCORERS, Scorer

DEFAULT_SCORER = {
    "classification": "choice",
    "choice": "choice",
    "prompt_response": "exact_match",
    "messages": "exact_match",
    "text": "perplexity",
    "preference": "preference_accuracy",
}


@dataclass
class EvalTask:
    name: str
    scorer: Scorer
    items: list[dict]
    stage: Optional[int]
    """Index of the stage that owns the task (None: a general probe)."""
    retrieve: Optional[int] = None
    """Passages retrieved from the memory into every prompt (None: no retrieval)."""

    @property
    def higher_is_better(self) -> bool:
        return self.scorer.higher_is_better

    @property
    def metric(self) -> str:
        return self.scorer.metric


def build_task(
    cfg: EvalTaskConfig, name: str, stage: Optional[int], labels: Optional[list[str]], cap: Optional[int], where: str
) -> EvalTask:
    if cap and (cfg.max_examples is None or cfg.max_examples > cap):
        cfg = cfg.model_copy(update={"max_examples": cap})
    rows = load_rows(cfg)
    fmt = infer_format(rows, cfg.format)
    check_rows(rows, fmt)
    scorer_name = DEFAULT_SCORER[fmt] if cfg.scorer == "auto" else cfg.scorer
    cls = SCORERS.get(scorer_name)
    if fmt not in cls.formats:
        raise ValueError(
            f"{where}: scorer {scorer_name} takes formats {', '.join(cls.formats)}; {rows.source} has format {fmt}"
        )
    items = to_eval_items(rows, fmt, cfg, labels=list(cfg.labels) if cfg.labels else labels)
    return EvalTask(
        name=name,
        scorer=cls(cls.Params(**cfg.params)),
        items=items,
        stage=stage,
        retrieve=cfg.retrieve.k if cfg.retrieve else None,
    )


def build_suite(cfg: RunConfig, kinds: Sequence[Any]) -> list[EvalTask]:
    """Stage tasks in stream order, then probes. `kinds` are the stages' kind objects (`StageKind`: their
    `formats`, and `default_eval` for a stage without `eval`, e.g. an edit stage scores its own edits). A
    classification stage task shares the label set of the stage's training data unless it sets its own."""
    tasks = []
    for i, (s, kind) in enumerate(zip(cfg.stages, kinds)):
        if s.eval is None and kind.default_eval(s) is not None:
            s = s.model_copy(update={"eval": kind.default_eval(s)})
        if s.eval is None:
            continue
        labels = None
        if s.data is None:
            pass
        elif s.data.format in ("classification", "auto") and s.data.labels:
            labels = list(s.data.labels)
        elif s.data.format in ("classification", "auto") and "classification" in kind.formats:
            train = load_rows(s.data)
            if infer_format(train, s.data.format) == "classification":
                check_rows(train, "classification")
                labels = label_set(train, s.data)
        tasks.append(build_task(s.eval, s.eval.name or s.name, i, labels, cfg.eval.max_examples, f"stages.{i}.eval"))
    for k, p in enumerate(cfg.eval.probes):
        tasks.append(build_task(p, p.name or f"probe{k}", None, None, cfg.eval.max_examples, f"eval.probes.{k}"))
    return tasks
