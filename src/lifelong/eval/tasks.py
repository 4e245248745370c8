"""Eval tasks: a name, a scorer and its items, built from config before any training."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

from lifelong.config import EvalTaskConfig, RunConfig, StageConfig
from lifelong.data import check_rows, infer_format, load_rows, to_eval_items
from lifelong.data.formats import Formatter, fit_eval_items, label_set
from lifelong.data.lengths import Lengths
from lifelong.data.scenarios import SCENARIOS, ScenarioFormat, accepts, scenario
from lifelong.eval.scorers import SCORERS, Scorer

DEFAULT_SCORER = {
    "classification": "choice",
    "choice": "choice",
    "prompt_response": "exact_match",
    "messages": "exact_match",
    "text": "perplexity",
    "preference": "preference_accuracy",
    "edit": "edit",
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
    lengths: Optional[Lengths] = None
    """What fitting the items into the model's context did (`fit_eval_items`; None: not fitted)."""
    where: str = ""
    """Where the task is configured (`stages.0.eval`, `eval.probes.1`)."""
    origins: list[str] = field(default_factory=list)
    """Each item's row (`file line N`), for messages about it."""
    truncate: str = "left"
    """What fitting does to an item longer than the context (`truncate` of the task's config)."""
    format: str = ""
    """The row format of the task's data (after `auto` inference)."""
    fixed_labels: bool = False
    """The task's config lists its `labels` (a choice among them at every row)."""
    row_options: Optional[list[list[str]]] = None
    """Options per matrix row (0: baseline, k: after stage k) for a format whose items choose among the labels
    seen so far (`ScenarioFormat.choice_labels`); None: the items' own options at every row."""

    def items_at(self, row: int) -> list[dict]:
        """The items as scored at matrix row `row`: with `row_options`, each item's options are that row's label
        set and its answer the index of its `label` there (class-incremental relation classification)."""
        if self.row_options is None:
            return self.items
        return with_options(self.items, self.row_options[min(max(row, 0), len(self.row_options) - 1)])

    @property
    def higher_is_better(self) -> bool:
        return self.scorer.higher_is_better

    @property
    def metric(self) -> str:
        return self.scorer.metric


def build_task(
    cfg: EvalTaskConfig,
    name: str,
    stage: Optional[int],
    labels: Optional[list[str]],
    cap: Optional[int],
    where: str,
    formatter: Optional[Formatter] = None,
    context: Optional[int] = None,
) -> EvalTask:
    """The task of `cfg`; given the run's `formatter` and the model's `context` (`eval_context`), items longer
    than the context are cut or dropped by `cfg.truncate` and counted in `EvalTask.lengths`."""
    if cfg.lm_eval is not None:  # an lm-evaluation-harness task: its documents, its scorer (eval/harness.py)
        return _harness_task(cfg, name, stage, cap, where)
    if cap and (cfg.max_examples is None or cfg.max_examples > cap):
        cfg = cfg.model_copy(update={"max_examples": cap})
    rows = load_rows(cfg)
    fmt = infer_format(rows, cfg.format)
    check_rows(rows, fmt)
    sf = scenario(fmt)
    scorer_name = (sf.scorer if sf is not None else DEFAULT_SCORER[fmt]) if cfg.scorer == "auto" else cfg.scorer
    cls = SCORERS.get(scorer_name)
    if not accepts(cls.formats, fmt):
        raise ValueError(
            f"{where}: scorer {scorer_name} takes formats {', '.join(cls.formats)}; {rows.source} has format {fmt}"
        )
    items = to_eval_items(rows, fmt, cfg, labels=list(cfg.labels) if cfg.labels else labels)
    if sf is not None and sf.choice_labels:  # options: data.labels, else the stage's labels and the rows' own
        given = list(cfg.labels) if cfg.labels else sorted(set(labels or []) | {it["label"] for it in items})
        items = with_options(items, given)
    scorer = cls(cls.Params(**cfg.params))
    lengths = None
    if formatter is not None and context is not None:
        new_tokens = getattr(scorer.params, "max_new_tokens", 0)  # generation needs room for its answer
        items, lengths = fit_eval_items(items, rows.where, formatter, context, cfg.truncate, int(new_tokens or 0))
        if not items:
            fix = f"set {where}.truncate: left" if cfg.truncate == "drop" else "shorten their options or answers"
            raise ValueError(
                f"{where}: no item of {rows.source} fits the model's context ({context} tokens; the first "
                f"is {lengths.first}); {fix}"
            )
    return EvalTask(
        name=name,
        scorer=scorer,
        items=items,
        stage=stage,
        retrieve=cfg.retrieve.k if cfg.retrieve else None,
        lengths=lengths,
        where=where,
        origins=list(rows.where),
        truncate=cfg.truncate,
        format=fmt,
        fixed_labels=bool(cfg.labels),
    )


def _harness_task(cfg: EvalTaskConfig, name: str, stage: Optional[int], cap: Optional[int], where: str) -> EvalTask:
    """The eval task of an `lm_eval:` config: one item per document, scored by lm-eval (`lifelong.eval.harness`);
    lm-eval fits its own requests into the model's context, so the items count as fitted, none cut."""
    from lifelong.eval.harness import build_probe

    scorer, items = build_probe(cfg, cap if cfg.max_examples is None else min(cfg.max_examples, cap or 10**10), where)
    return EvalTask(
        name=name,
        scorer=scorer,
        items=items,
        stage=stage,
        lengths=Lengths(rows=len(items)),
        where=where,
        origins=[f"{it['task']} document {it['doc_id']}" for it in items],
        format="lm_eval",
    )


def with_options(items: list[dict], options: list[str]) -> list[dict]:
    """`items` (each with its `label`) as a choice among `options`."""
    return [dict(it, options=list(options), answer=options.index(it["label"])) for it in items]


def fit_task(task: EvalTask, formatter: Formatter, context: Optional[int]) -> EvalTask:
    """`task` with its items fitted into the model's context once the model is known (`lifelong run` and
    `lifelong eval` both call this, so both score the same items); unchanged when already fitted or when the
    model names no context."""
    if task.lengths is not None or context is None:
        return task
    new_tokens = int(getattr(task.scorer.params, "max_new_tokens", 0) or 0)
    where = (
        task.origins
        if len(task.origins) == len(task.items)
        else [f"{task.where} item {k}" for k in range(len(task.items))]
    )
    items, lengths = fit_eval_items(task.items, where, formatter, context, task.truncate, new_tokens)
    if not items:
        raise ValueError(
            f"{task.where}: no item fits the model's context ({context} tokens; the first is {lengths.first}); "
            f"set {task.where}.truncate: left or shorten the items"
        )
    return replace(task, items=items, lengths=lengths)


def eval_context(model: Any) -> Optional[int]:
    """The longest sequence `model` takes (its config's `max_position_embeddings`, which GPT-2-style configs
    map to `n_positions`); None when the config names none."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


def lengths_message(task: EvalTask) -> Optional[str]:
    """The warning for a task whose items were cut or dropped to fit the context (None: none were)."""
    if task.lengths is None:
        return None
    return task.lengths.message(f"eval task {task.name}", "the model's context", f"{task.where}.truncate")


def stage_labels(stage: StageConfig, kind: Any) -> Optional[list[str]]:
    """The label set a stage's eval task shares: the stage's `data.labels`, else the sorted labels of its
    training rows (the first `data.max_examples` of them, when set): a classification stage's labels, or the
    labels of a scenario format that has them (NER's entity types, relations; `ScenarioFormat.row_labels`)
    when the stage's eval rows are of the same format. None when the stage trains on no such rows."""
    d = stage.data
    if d is None or not (d.format in ("classification", "auto") or _labelled(d.format)):
        return None
    if d.labels:
        return list(d.labels)
    if "classification" not in kind.formats and not any(accepts(kind.formats, f) for f in labelled_formats()):
        return None  # e.g. a pretrain stage: its rows are not read here
    train = load_rows(d)
    fmt = infer_format(train, d.format)
    if fmt == "classification" and "classification" in kind.formats:
        check_rows(train, "classification")
        return label_set(train, d)
    sf = scenario(fmt)
    if sf is None or not _labelled(fmt) or not accepts(kind.formats, fmt) or _eval_format(stage) not in (fmt, None):
        return None
    check_rows(train, fmt)
    return sorted({lab for r in train.rows for lab in sf.row_labels(r)}) or None


def labelled_formats() -> list[str]:
    """The scenario formats with a label set."""
    return [f for f in SCENARIOS.names() if _labelled(f)]


def _labelled(fmt: str) -> bool:
    """Whether `fmt` is a scenario format with a label set (it overrides `ScenarioFormat.row_labels`)."""
    sf = scenario(fmt)
    return sf is not None and type(sf).row_labels is not ScenarioFormat.row_labels


def _eval_format(stage: StageConfig) -> Optional[str]:
    """The row format of a stage's eval task (None: no eval task, or a hub dataset not read here)."""
    ev = stage.eval
    if ev is None or ev.hub is not None or ev.lm_eval is not None:
        return None
    return ev.format if ev.format != "auto" else infer_format(load_rows(ev), "auto")


def build_suite(
    cfg: RunConfig, kinds: Sequence[Any], formatter: Optional[Formatter] = None, context: Optional[int] = None
) -> list[EvalTask]:
    """Stage tasks in stream order, then probes. `kinds` are the stages' kind objects (`StageKind`: their
    `formats`, and `default_eval` for a stage without `eval`, e.g. an edit stage scores its own edits). A
    classification stage task shares the label set of the stage's training data unless it sets its own
    (`stage_labels`), and so do NER (entity types) and relation tasks; relation classification chooses among
    the relations seen so far at each row (`seen_so_far`). Given `formatter` and `context`, every task's items
    are fitted into the context (`build_task`)."""
    tasks = []
    shared: dict[int, Optional[list[str]]] = {}
    for i, (s, kind) in enumerate(zip(cfg.stages, kinds)):
        if s.eval is None and kind.default_eval(s) is not None:
            s = s.model_copy(update={"eval": kind.default_eval(s)})
        if s.eval is None:
            continue
        labels = shared[i] = stage_labels(s, kind)
        at = f"stages.{i}.eval"
        tasks.append(
            build_task(s.eval, s.eval.name or s.name, i, labels, cfg.eval.max_examples, at, formatter, context)
        )
    for k, p in enumerate(cfg.eval.probes):
        at = f"eval.probes.{k}"
        tasks.append(build_task(p, p.name or f"probe{k}", None, None, cfg.eval.max_examples, at, formatter, context))
    seen_so_far(tasks, shared, len(cfg.stages))
    return tasks


def seen_so_far(tasks: list[EvalTask], shared: dict[int, Optional[list[str]]], n_stages: int) -> None:
    """Class-incremental options (`ScenarioFormat.choice_labels`, relation classification): a task's options at
    matrix row r are the labels of the stages before row r (each stage's: the labels its eval task shares with
    its training rows, `shared`, and its eval rows' labels) plus the task's own, so after stage k a task chooses
    among every relation seen so far (Wang et al. 2019), and at the baseline and earlier rows among those seen by
    then and its own. Tasks whose config lists `labels` keep them at every row. The items get the options of
    the last row (the widest), so fitting them into the context reserves room for every option."""
    choosing = [t for t in tasks if (scenario(t.format) or ScenarioFormat()).choice_labels]
    if not choosing:
        return
    per_stage: list[set[str]] = [set() for _ in range(n_stages)]
    for t in choosing:
        if t.stage is not None:
            per_stage[t.stage] |= set(shared.get(t.stage) or []) | {it["label"] for it in t.items}
    for t in choosing:
        if t.fixed_labels:
            continue
        own = per_stage[t.stage] if t.stage is not None else {it["label"] for it in t.items}
        rows, seen = [], set(own)
        rows.append(sorted(seen))
        for i in range(n_stages):
            seen |= per_stage[i]
            rows.append(sorted(seen))
        t.row_options = rows
        t.items = t.items_at(n_stages)
