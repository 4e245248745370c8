"""Eval tasks: a name, a scorer and its items, built from config before any training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from lifelong.config import EvalTaskConfig, RunConfig, StageConfig
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


def stage_labels(stage: StageConfig, kind: Any) -> Optional[list[str]]:
    """The label set a classification stage's eval task shares: the stage's `data.labels`, else the sorted
    labels of its training rows (the first `data.max_examples` of them, when set); None when the stage
    trains on no classification rows."""
    d = stage.data
    if d is None or d.format not in ("classification", "auto"):
        return None
    if d.labels:
        return list(d.labels)
    if "classification" not in kind.formats:
        return None
    train = load_rows(d)
    if infer_format(train, d.format) != "classification":
        return None
    check_rows(train, "classification")
    return label_set(train, d)


def build_suite(cfg: RunConfig, kinds: Sequence[Any]) -> list[EvalTask]:
    """Stage tasks in stream order, then probes. `kinds` are the stages' kind objects (`StageKind`: their
    `formats`, and `default_eval` for a stage without `eval`, e.g. an edit stage scores its own edits). A
    classification stage task shares the label set of the stage's training data unless it sets its own
    (`stage_labels`)."""
    tasks = []
    for i, (s, kind) in enumerate(zip(cfg.stages, kinds)):
        if s.eval is None and kind.default_eval(s) is not None:
            s = s.model_copy(update={"eval": kind.default_eval(s)})
        if s.eval is None:
            continue
        labels = stage_labels(s, kind)
        tasks.append(build_task(s.eval, s.eval.name or s.name, i, labels, cfg.eval.max_examples, f"stages.{i}.eval"))
    for k, p in enumerate(cfg.eval.probes):
        tasks.append(build_task(p, p.name or f"probe{k}", None, None, cfg.eval.max_examples, f"eval.probes.{k}"))
    return tasks
