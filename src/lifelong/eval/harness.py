"""General-ability probes through lm-evaluation-harness (`eval.probes: [{lm_eval: hellaswag, limit: 200}]`).

A probe names an lm-eval task (or group); when the eval suite is built, the task is loaded once with lm-eval's
`TaskManager` (the built-in tasks, plus the folders of `include_path`), and its eval documents (test split, else
validation, as lm-eval picks them) become one placeholder item each, `{"task", "doc_id", "prompt"}`, capped by
`limit` (per task, lm-eval's `--limit`: the first documents) and `eval.max_examples`. The `lm_eval` scorer runs
lm-eval's own evaluator on exactly those documents (`lm_eval.evaluator.evaluate(..., samples=...)`) with the
in-memory model (`lifelong.eval.harness_lm.HarnessLM`), and its per-document metrics (`log_samples`) are the
statistics the matrix and the bootstrap use.

Few-shot contexts are drawn once, when the probe is built, in document order from the task's few-shot seed, as
lm-eval's `simple_evaluate(limit=N)` draws them, and reused for every matrix row: a document gets the same
context however the run chunks, shards or resumes its scoring (lm-eval's sampler draws from one generator in
call order, so scoring a subset would otherwise change the examples).

lm-eval is an optional dependency (`pip install lm-eval`): nothing here imports it at module level.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any, Optional

INSTALL = "pip install lm-eval"


def require(where: str) -> Any:
    """The `lm_eval` module, or a ValueError at `where` saying how to install it."""
    try:
        import lm_eval
    except ImportError:
        raise ValueError(
            f"{where}: lm_eval: the probe runs an lm-evaluation-harness task, and lm-eval is not installed; "
            f"{INSTALL} (an optional dependency of lifelong)"
        ) from None
    return lm_eval


def installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("lm_eval") is not None


def task_manager(name: str, include_path: Optional[str], where: str) -> Any:
    """An lm-eval `TaskManager` that knows `name`: the folder of `include_path` alone when it defines the task
    (indexing lm-eval's own thousands of task files takes seconds), else lm-eval's tasks with that folder.
    A ValueError at `where` names an unknown task with the closest known names."""
    require(where)
    import logging

    from lm_eval.tasks import TaskManager

    quiet = logging.getLogger("lm_eval")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        if include_path:
            own = TaskManager(include_path=include_path, include_defaults=False)
            if name in own.all_tasks:
                return own
        tm = TaskManager(include_path=include_path) if include_path else TaskManager()
    finally:
        quiet.setLevel(level)
    if name not in tm.all_tasks:
        near = difflib.get_close_matches(name, tm.all_tasks, n=5, cutoff=0.6)
        near += [t for t in tm.all_tasks if name.lower() in t.lower() and t not in near][: 5 - len(near)]
        hint = f"did you mean {', '.join(near)}? " if near else ""
        folder = f" or in include_path {include_path}" if include_path else ""
        raise ValueError(
            f"{where}: lm_eval: unknown lm-eval task {name!r}: not among lm-eval {_version()}'s "
            f"{len(tm.all_tasks)} tasks{folder}; {hint}(`lm-eval ls tasks` lists them; a folder of your own task "
            "YAMLs goes in include_path)"
        )
    return tm


def load_tasks(tm: Any, name: str, num_fewshot: Optional[int], seed: int, where: str) -> dict[str, Any]:
    """The leaf tasks of `name` (a task, or a group's tasks), configured as `simple_evaluate` configures them:
    `num_fewshot` unless the task fixes 0, else the task's own (0 when it names none); few-shot seed `seed`."""
    import logging

    quiet = logging.getLogger("lm_eval")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        tasks = dict(tm.load([name])["tasks"])
    except Exception as e:  # a dataset that does not load, a broken task YAML: said once, located
        raise ValueError(f"{where}: lm_eval: lm-eval could not load task {name!r}: {type(e).__name__}: {e}") from None
    finally:
        quiet.setLevel(level)
    if not tasks:
        raise ValueError(f"{where}: lm_eval: {name!r} names no lm-eval task")
    for t in tasks.values():
        if t.get_config("output_type") not in ("multiple_choice", "loglikelihood", "generate_until"):
            kind = t.get_config("output_type")
            raise ValueError(
                f"{where}: lm_eval: task {t.task_name!r} has output_type {kind}; probes score multiple_choice, "
                "loglikelihood and generate_until tasks (perplexity tasks aggregate by corpus, not per document)"
            )
        own = t.get_config("num_fewshot")
        if num_fewshot is not None and own != 0:
            t.set_config(key="num_fewshot", value=num_fewshot)
        elif own is None:
            t.set_config(key="num_fewshot", value=0)
        t.set_fewshot_seed(seed=seed)
    return tasks


def metric_keys(task: Any) -> list[str]:
    """The task's per-document metrics that aggregate as a mean and where higher is better, as lm-eval names
    them in its results: `acc`, or `exact_match,flexible-extract` for a metric after a named filter."""
    from lm_eval.api.metrics import mean

    aggs = task.aggregation()
    better = task.higher_is_better()
    filters = [f.get("name", "none") for f in (task.get_config("filter_list") or [])] or ["none"]
    names = [m for m, fn in aggs.items() if fn is mean and better.get(m, True)]
    return [m if f == "none" else f"{m},{f}" for f in filters for m in names]


def choose_metrics(tasks: dict[str, Any], metric: Optional[str], where: str) -> list[str]:
    """[primary, others...]: the metrics every task of the probe has (per-document means, higher is better);
    the primary is `metric`, else the first."""
    common: Optional[list[str]] = None
    for t in tasks.values():
        keys = metric_keys(t)
        common = keys if common is None else [k for k in common if k in keys]
    common = common or []
    if not common:
        first = next(iter(tasks.values()))
        raise ValueError(
            f"{where}: lm_eval: task {first.task_name!r} has no metric averaged over documents with higher "
            f"better ({', '.join(first.aggregation())}); a probe needs per-document scores for its confidence "
            "intervals"
        )
    if metric is None:
        return common
    if metric not in common:
        near = difflib.get_close_matches(metric, common, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ValueError(
            f"{where}: params.metric: {metric!r} is not a per-document metric of this lm-eval task; {hint}"
            f"its metrics: {', '.join(common)}"
        )
    return [metric] + [k for k in common if k != metric]


def doc_key(doc: Any) -> str:
    """A document's identity across calls (lm-eval's documents are plain dicts): the hash of its JSON."""
    text = json.dumps(doc, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fix_fewshot(task: Any, docs: list[tuple[int, Any]]) -> None:
    """Draw each document's few-shot context now, in document order from the task's seed (as lm-eval's
    `simple_evaluate` does for the same documents), and make the task give that context whenever it is asked
    for that document again."""
    shots = task.get_config("num_fewshot") or 0
    if shots <= 0:
        return
    draw = task.fewshot_context
    fixed: dict[str, Any] = {}
    for _, doc in docs:
        fixed.setdefault(doc_key(doc), draw(doc, num_fewshot=shots))

    def context(doc: Any, num_fewshot: int, *args: Any, **kwargs: Any) -> Any:
        if args or any(kwargs.get(k) for k in ("system_instruction", "apply_chat_template", "chat_template")):
            return draw(doc, num_fewshot, *args, **kwargs)
        key = doc_key(doc)
        return fixed[key] if key in fixed and num_fewshot == shots else draw(doc, num_fewshot, **kwargs)

    task.fewshot_context = context


def probe_items(tasks: dict[str, Any], limit: Optional[int]) -> list[dict]:
    """One item per eval document, the first `limit` of each task: `{task, doc_id, prompt}` (the prompt is the
    document's question as lm-eval's `doc_to_text` gives it, shown in per-item records)."""
    items: list[dict] = []
    for name, t in tasks.items():
        docs = list(t.doc_iterator(limit=limit))
        fix_fewshot(t, docs)
        for i, doc in docs:
            text = t.doc_to_text(doc)
            items.append({"task": name, "doc_id": int(i), "prompt": text if isinstance(text, str) else str(text)})
    return items


def task_versions(tasks: dict[str, Any]) -> dict[str, str]:
    """Each task's version (its YAML's `metadata.version`)."""
    out = {}
    for name, t in tasks.items():
        meta = t.get_config("metadata") or {}
        v = meta.get("version") if isinstance(meta, dict) else None
        out[name] = str(v if v is not None else getattr(t, "VERSION", None))
    return out


def _version() -> str:
    import importlib.metadata as md

    try:
        return md.version("lm_eval")
    except md.PackageNotFoundError:
        return "?"


def version() -> str:
    """The installed lm-eval version."""
    return _version()


def build_probe(cfg: Any, cap: Optional[int], where: str) -> tuple[Any, list[dict]]:
    """The `lm_eval` scorer with the task objects of the eval task config `cfg` attached, and its items (the first
    `limit` documents of each task, at most `cap` when the suite caps every task: `eval.max_examples`)."""
    from lifelong.eval.scorers import SCORERS

    cls = SCORERS.get("lm_eval")
    scorer: Any = cls(cls.Params(**cfg.params))
    limit = min(x for x in (cfg.limit, cap) if x is not None) if (cfg.limit or cap) else None
    tm = task_manager(cfg.lm_eval, cfg.include_path, where)
    tasks = load_tasks(tm, cfg.lm_eval, cfg.num_fewshot, scorer.params.fewshot_seed, where)
    keys = choose_metrics(tasks, scorer.params.metric, where)
    items = probe_items(tasks, limit)
    if not items:
        raise ValueError(f"{where}: lm_eval: task {cfg.lm_eval!r} has no eval documents")
    shots = sorted({int(t.get_config("num_fewshot") or 0) for t in tasks.values()})
    info = {
        "name": cfg.lm_eval,
        "num_fewshot": ",".join(map(str, shots)),
        "versions": task_versions(tasks),
        "lm_eval": version(),
    }
    scorer.attach(tasks, keys, info)
    return scorer, items


def check_probe(cfg: Any, where: str) -> None:
    """What `lifelong validate` can check of an lm_eval task without loading its data (which may need the
    network): lm-eval is installed, the task name is known, the scorer's params validate."""
    from lifelong.eval.scorers import SCORERS

    cls = SCORERS.get("lm_eval")
    cls.Params(**cfg.params)
    task_manager(cfg.lm_eval, cfg.include_path, where)
