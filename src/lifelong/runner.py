"""One continual-learning run: a model through a stream of stages, the eval suite after each, results,
events and checkpoints in the run directory, resumable after a crash at any moment."""

from __future__ import annotations

import json
import os
import platform
import random
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import yaml
from rich.console import Console

from lifelong.config import RunConfig
from lifelong.configio import first_difference
from lifelong.data.formats import Formatter
from lifelong.eval.lm import HFLM
from lifelong.eval.metrics import score_ci
from lifelong.eval.results import Results, example_records, write_examples
from lifelong.eval.tasks import EvalTask, build_suite, eval_context, fit_task, lengths_message
from lifelong.faults import fault_point
from lifelong.fileio import ensure_writable_dir, folder_bytes
from lifelong.models import load_model_and_tokenizer
from lifelong.models.export import export_stage_model, stage_parent
from lifelong.models.threads import set_torch_threads
from lifelong.stages import STAGE_KINDS
from lifelong.stages.base import StageState
from lifelong.strategies import build_strategy
from lifelong.train import sharding
from lifelong.train.checkpoint import (
    StateHolder,
    atomic_write_text,
    base_unchanged,
    latest_checkpoint,
    load_checkpoint,
    read_part,
    record_base,
    remove_stale_temporaries,
    save_checkpoint,
    stage_part,
    untied,
    written_bytes,
)
from lifelong.train.context import StageContext
from lifelong.train.inner_eval import TrainingState, recorded_points

PRODUCTS = ("results.json", "per_example.json", "ckpt", "keep")
"""What a run directory holds once a run has made progress (besides the folders of stage kinds' states,
`StageState.folders`); a directory with none of them (a start that failed while loading) may be reused by
the same command."""


class RunFinished(Exception):
    """`--resume` of a run whose every row, its metrics and its `end` event are saved: nothing to do."""


def finished_message(run_dir: Path) -> Optional[str]:
    """Why the run in `run_dir` is complete (every matrix row, metrics, an `end` event), or None."""
    try:
        res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return None
    if not isinstance(res, dict):
        return None
    complete = all(v is not None for row in res.get("matrix", [[None]]) for v in row) and bool(res.get("metrics"))
    ended = False
    for line in lines:
        try:
            ended = ended or json.loads(line).get("type") == "end"
        except (ValueError, AttributeError):
            continue  # a line cut by a kill
    if not (complete and ended):
        return None
    return (
        f"{run_dir}: already finished (all {len(res['matrix'])} rows and the metrics are in results.json); "
        "nothing to resume. To go further, start a new run name with the extra stages "
        f"(e.g. name={run_dir.name}-more), or see it with `lifelong show {run_dir}`"
    )


def flat_scalars(d: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a nested config into scalar `a.b.c` entries (what trackers accept as hyper-parameters)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flat_scalars(v, f"{prefix}{k}."))
    elif isinstance(d, list):
        if all(isinstance(x, (int, float, str, bool)) for x in d) and len(d) <= 8:
            out[prefix[:-1]] = str(d)
        else:
            for i, v in enumerate(d[:32]):
                out.update(flat_scalars(v, f"{prefix}{i}."))
    elif isinstance(d, (int, float, str, bool)):
        out[prefix[:-1]] = d
    return out


def versions() -> dict[str, str]:
    import accelerate
    import transformers

    import lifelong

    return {
        "lifelong": lifelong.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
    }


def unwrapped_name(name: str) -> str:
    """A parameter's name in the plain model, from its name inside a PEFT wrapper (`base_model.model.` prefix,
    `.base_layer.` for a wrapped linear map); plain names are returned as they are."""
    if name.startswith("base_model.model."):
        name = name[len("base_model.model.") :]
    return name.replace(".base_layer.", ".")


class Run:
    def __init__(
        self,
        cfg: RunConfig,
        resume: bool = False,
        quiet: bool = False,
        console: Optional[Console] = None,
        callbacks: Optional[list[Callable[[dict], None]]] = None,
    ) -> None:
        self.cfg = cfg
        self.quiet = quiet
        self.callbacks = list(callbacks or [])  # called with every logged event (lifelong.api.run's on_event)
        self._unwritten: list[str] = []  # step events not yet in events.jsonl (see log)
        self._written_at = time.monotonic()
        self.console = console or Console()
        self.run_dir = Path(cfg.output_dir) / cfg.name
        self.resume = resume
        cuda = torch.cuda.is_available()
        prec = cfg.train.precision
        if prec == "auto":
            prec = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
        trackers = list(cfg.trackers)
        if "mlflow" in trackers and "MLFLOW_TRACKING_URI" not in os.environ:
            os.environ["MLFLOW_TRACKING_URI"] = (self.run_dir / "mlruns").resolve().as_uri()
        from lifelong.train.accel import accelerator, fsdp_on_cpu

        self.accelerator = accelerator(  # DeepSpeed on CPU processes needs its own start (train.accel)
            mixed_precision=prec,
            log_with=trackers or None,
            project_dir=str(self.run_dir / "trackers") if trackers else None,
        )
        fsdp_on_cpu(self.accelerator)  # accelerate leaves FSDP off on CPU processes (lifelong.train.accel)
        self.sharding = sharding.sharding_mode(self.accelerator)
        from lifelong.configio import ConfigError, Locator
        from lifelong.validation import check_sharding, launch_sharding

        if launch_sharding() == "deepspeed" and self.sharding != "deepspeed":
            raise ConfigError(
                f"accelerate config: DeepSpeed was asked for, but accelerate set up {self.sharding} without it "
                "(is deepspeed installed in this environment? `pip install deepspeed`); or use FSDP2 "
                "(distributed_type: FSDP, fsdp_version: 2)"
            )
        refused = check_sharding(cfg, Locator("config"), self.sharding)
        if refused:
            raise ConfigError("\n".join(refused))
        self._check_run_dir()
        if trackers:
            self.accelerator.init_trackers(cfg.name, config=flat_scalars(cfg.model_dump(mode="json")))
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.model, self.tokenizer = load_model_and_tokenizer(cfg.model, seed=cfg.seed)
        set_torch_threads(self.model, cfg.torch_threads)  # torch_threads > OMP_NUM_THREADS > size default
        self.model.to(self.accelerator.device).eval()
        self.formatter = Formatter(self.tokenizer, cfg.model.chat_template, cfg.model.system_prompt)
        self.strategy = build_strategy(cfg.strategy, seed=cfg.seed)
        # Everything that can fail on input is loaded and checked before any training.
        self.kinds = [STAGE_KINDS.get(s.kind)() for s in cfg.stages]
        self.cache_keys: dict[int, str] = {}  # content hash of each stage's tokenized examples
        self.prepared = [k.prepare(self, i) for i, k in enumerate(self.kinds)]
        self.context = eval_context(self.model)  # the model's context: eval items are fitted into it
        self.tasks: list[EvalTask] = [fit_task(t, self.formatter, self.context) for t in build_suite(cfg, self.kinds)]
        for t in self.tasks:  # items cut or dropped to fit: counted, said once, never silent
            said = lengths_message(t)
            if said and t.lengths is not None and self.accelerator.is_main_process:
                self.console.print(f"[yellow]warning:[/yellow] {said}")
                self.log(type="eval_fit", task=t.name, **t.lengths.as_dict())  # max_length: the model's context
        self.optimizer_state: Optional[dict] = None  # AdamW state carried across stages (optimizer_state: keep)
        self.inner_points: Optional[set[tuple[int, int]]] = None  # (stage, step) scored inside stages
        self.results: Optional[Results] = None
        self.states: dict[str, StageState] = {}  # run-wide state of the stage kinds that keep one
        for s, kind in zip(cfg.stages, self.kinds):
            if kind.State is not None and s.kind not in self.states:
                self.states[s.kind] = kind.State(cfg, self.run_dir, self.accelerator.is_main_process)
        if resume:  # the main process repairs what a kill interrupted, then every process reads it
            for first in (True, False):
                for state in self.states.values():
                    if self.accelerator.is_main_process == first:
                        state.restore()
                self.accelerator.wait_for_everyone()
        self.mix_ratios: dict[int, list[float]] = {}
        # global optimizer-step offset of every stage (tracker x-axis), from the same step rule as the loop
        from lifelong.train.loop import stage_steps

        self.step_offsets = [0]
        from lifelong.stages.base import TrainableStage

        for i, ex in enumerate(self.prepared):
            tc = cfg.stage_train(i)
            if not isinstance(self.kinds[i], TrainableStage):
                ex = None  # memory / merge stages take no optimizer steps
            size = sum(len(s) for s in ex["sources"]) if isinstance(ex, dict) else (len(ex) if ex is not None else 0)
            n = (
                stage_steps(
                    size, tc.batch_size * self.accelerator.num_processes * tc.grad_accum, tc.max_steps, tc.epochs
                )
                if size
                else 0
            )
            self.step_offsets.append(self.step_offsets[-1] + n)

    # ---- run directory --------------------------------------------------------------------------
    def _check_run_dir(self) -> None:
        """Before any model loads: the output folder is writable; a resume matches its config and has
        something left to do; a new run never overwrites one that made progress."""
        d = self.run_dir
        resolved = self.cfg.model_dump(mode="json")
        if self.resume:
            if not (d / "config.yaml").is_file():
                raise ValueError(f"{d}: nothing to resume (no config.yaml); run without --resume")
            saved = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8"))
            try:  # settings added since the run started take their defaults, so older runs still resume
                saved = RunConfig.model_validate(saved).model_dump(mode="json")
            except ValueError:
                pass  # not valid any more: the difference below names the first field that changed
            diff = first_difference(saved, resolved)
            if diff:
                raise ValueError(
                    f"{d}: the config differs from the one the run started with ({diff}); "
                    "resume with the same config and overrides, or start a new run name"
                )
            done = finished_message(d)
            if done:
                raise RunFinished(done)
            ensure_writable_dir(d, "run folder")
            if self.accelerator.is_main_process:
                remove_stale_temporaries(d)  # what the interrupted process was writing
            self.accelerator.wait_for_everyone()
            return
        products = PRODUCTS + tuple(
            f for name in STAGE_KINDS.names() if (c := STAGE_KINDS.get(name).State) for f in c.folders
        )
        if d.is_dir() and any((d / p).exists() for p in products):
            raise ValueError(
                f"{d} already exists; continue it with --resume, or choose another name "
                f"(e.g. name={self.cfg.name}-2); runs are never overwritten"
            )
        ensure_writable_dir(d, "run folder")  # also: output_dir is a file, under /proc, read-only, ...
        if self.accelerator.is_main_process:
            atomic_write_text(d / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        self.accelerator.wait_for_everyone()

    def log(self, **event: Any) -> None:
        """Append an event to events.jsonl. Step events are written in batches (an open and close of the file
        per optimizer step showed in the loop's profile, docs/performance.md): every other event, 64 of them,
        a second, or the loop's `flush_log` (before a checkpoint, at the stage's end) writes them out, in
        order. A kill can only lose step events after the last checkpoint, which a resume trains and logs
        again. Callbacks get every event at once."""
        if not self.accelerator.is_main_process:
            return
        event = {"time": time.time(), **event}
        self._unwritten.append(json.dumps(event) + "\n")
        if event.get("type") != "step" or len(self._unwritten) >= 64 or time.monotonic() - self._written_at > 1:
            self.flush_log()
        for callback in self.callbacks:
            callback(event)

    def flush_log(self) -> None:
        """Write the batched step events to events.jsonl."""
        if self._unwritten:
            with open(self.run_dir / "events.jsonl", "a", encoding="utf-8") as f:
                f.write("".join(self._unwritten))
            self._unwritten.clear()
        self._written_at = time.monotonic()

    # ---- what stage kinds see (lifelong.train.context.StageEnv) --------------------------------------
    def stage_state(self, kind: str) -> Any:
        """The run-wide state of a stage kind (`StageKind.State`), created when the run starts."""
        return self.states[kind]

    @property
    def results_extra(self) -> Optional[dict]:
        return self.results.extra if self.results is not None else None

    @property
    def results_matrix(self) -> tuple[list[dict], list[list[Optional[float]]]]:
        """The results' task records and rows so far (empty before the results exist)."""
        return (self.results.tasks, self.results.matrix) if self.results is not None else ([], [])

    # ---- kept weights (branches and merges) -------------------------------------------------------
    def kept_path(self, name: str) -> Path:
        return self.run_dir / "keep" / name / "model.safetensors"

    def keep_weights(self, name: str) -> None:
        """Save the current weights as `keep/<name>/model.safetensors` (atomically), for later stages that
        start from them or merge them."""
        from safetensors.torch import save_file, save_model

        whole = self._whole()
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            path = self.kept_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp{os.getpid()}.safetensors")
            if whole is None:
                save_model(self.model, str(tmp))
            else:
                save_file(untied(self.model, whole), str(tmp), {"format": "pt"})
            fault_point("keep-write")
            os.replace(tmp, path)
        self.accelerator.wait_for_everyone()

    def load_kept(self, name: str) -> None:
        """Load kept weights into the stream's model. Weights kept before an adapter strategy wrapped the model
        (e.g. `base`) are matched to the wrapped model's base layers by name; a kept tensor that finds no
        place is an error, never silently skipped."""
        from safetensors.torch import load_file

        path = self.kept_path(name)
        if not path.exists():
            raise ValueError(f"{path}: the weights of {name!r} were not kept; they are needed by a later stage")
        sharding.reshard(self.model)  # after an evaluation FSDP2 may hold gathered copies: writes would be lost
        state = self.model.state_dict(keep_vars=True)
        plain = {unwrapped_name(n): n for n in state}
        kept = load_file(str(path))
        lost = [k for k in kept if k not in state and k not in plain]
        if lost:
            raise ValueError(
                f"{path}: {len(lost)} kept tensors (e.g. {lost[0]!r}) match no weight of the model; the stage "
                f"{name!r} was kept with another model structure than the stream's now"
            )
        with torch.no_grad():
            for k, v in kept.items():  # into this process's shard when sharded (no communication)
                sharding.assign_full_(state[k if k in state else plain[k]], v)
        self.log(type="start_from", source=name)

    def _whole(self) -> Optional[dict]:
        """The whole state dict of a sharded model (a collective: every process calls it; the main process
        holds it), None when the model is not sharded (its own state dict is whole)."""
        return sharding.full_state_dict(self.model) if sharding.is_sharded(self.model) else None

    # ---- stage models out (docs/export.md) --------------------------------------------------------
    def export_stage(self, i: int) -> None:
        """Write stage `i`'s model to `models/<stage>/` when `export.stages` chooses it and it is not there
        yet (a resume redoes an export a kill cut short), then put the stage's disk figures in its costs."""
        acc, name = self.accelerator, self.cfg.stages[i].name
        out = self.run_dir / "models" / name
        acc.wait_for_everyone()
        due = i in self.cfg.export_stages() and not (out / "lineage.json").exists()
        whole = self._whole() if due and self.strategy.exports_hf else None  # every process, before any writes
        acc.wait_for_everyone()
        if acc.is_main_process:
            if due:
                self._write_export(i, out, whole)
            cost = self.results.costs.get(name) if self.results is not None else None
            if cost is not None and self.results is not None:
                ck, ex = written_bytes(self.run_dir).get(i, 0), folder_bytes(out)
                kept = folder_bytes(self.kept_path(name).parent)
                mb = 2**20
                cost.update(checkpoint_mb=ck / mb, export_mb=ex / mb, disk_mb=(ck + ex + kept) / mb)
                self.results.save(self.run_dir)
        acc.wait_for_everyone()

    def _write_export(self, i: int, out: Path, whole: Optional[dict] = None) -> None:
        """`whole`: the gathered weights of a sharded model; the export writes an unsharded copy of it."""
        cfg, strategy, name = self.cfg, self.strategy, self.cfg.stages[i].name
        if not strategy.exports_hf:  # the default export; one the config asks for is refused at validation
            self.log(type="export_skipped", stage=i, reason=strategy.export_note)
            return
        model = self.model
        if whole is not None:
            from lifelong.train.loop import unsharded_copy

            model = unsharded_copy(self, i, whole).eval()
        ctx = StageContext(stage_index=i, stage_name=name, model=model, tokenizer=self.tokenizer)
        adapters, fmt = strategy.export_adapters(ctx), cfg.export.format
        if fmt == "peft" and not base_unchanged(self.run_dir, model, strategy):
            why = (
                "the base weights changed during the run (an edit or merge stage), so an adapter alone is not the model"
            )
            self.log(type="export_format", stage=i, format="hf", reason=why)
            if not self.quiet:
                self.console.print(f"[yellow]export of {name}: written as hf, not peft: {why}[/]")
            fmt = "hf"
        parent = self.run_dir / "models" / stage_parent(cfg, i) / "lineage.json"
        parent_hash = json.loads(parent.read_text()).get("content_hash") if parent.exists() else None
        tasks, matrix = self.results_matrix
        rows = self.results.rows if self.results is not None else []
        lineage = export_stage_model(
            out,
            model,
            self.tokenizer,
            cfg,
            i,
            adapters,
            {"rows": rows, "tasks": tasks, "matrix": matrix},
            fmt,
            cfg.export.merged and fmt == "peft",
            parent_hash,
            quiet=self.quiet,
            console=self.console,
        )
        self.log(type="export", stage=i, name=name, path=str(out), format=fmt, content_hash=lineage["content_hash"])

    # ---- evaluation -----------------------------------------------------------------------------
    def task_stats(self, task: EvalTask, row: int, stage_name: str, model: Any = None) -> np.ndarray:
        """Per-example statistics of one eval task for the current model (or `model`) as of matrix row `row`."""
        return self.task_scores(task, row, stage_name, model)[0]

    def task_scores(
        self, task: EvalTask, row: int, stage_name: str, model: Any = None
    ) -> tuple[np.ndarray, list[dict]]:
        """Per-example statistics of one eval task for the current model (or `model`) as of matrix row `row`,
        and their audit records (`lifelong.eval.results.example_records`): the strategy picks the model,
        retrieval adds passages, processes score shards gathered in rank order."""
        acc = self.accelerator
        world, rank = acc.num_processes, acc.process_index
        ctx = StageContext(
            stage_index=row - 1,
            stage_name=stage_name,
            model=self.model if model is None else model,
            tokenizer=self.tokenizer,
            accelerator=acc,
            device=acc.device,
            task_stage=task.stage,
            task_items=task.items,
            run_dir=self.run_dir,
            formatter=self.formatter,
        )
        model = self.strategy.eval_model(ctx, task)
        model.eval()
        if world > 1 and sharding.is_sharded(model):
            # every forward pass of a sharded model is a collective: every process scores every item in the same
            # batches (the same results on each), nothing to gather
            world, rank = 1, 0
        lm = HFLM(model, self.formatter, self.cfg.eval.batch_size, max_length=self.context or 1024)
        items = task.items_at(row)  # per-row options (relation classification over the relations seen so far)
        for state in self.states.values():  # e.g. retrieval: passages of the memory as of this row
            items = state.eval_items(task, row, items)
        part = np.array_split(np.arange(len(items)), world)[rank]
        from lifelong.progress import chunk_size, progress, scored_in_chunks

        quiet = self.quiet or not acc.is_main_process  # one bar: the main process's shard
        with progress(len(part), f"eval {task.name} ({stage_name})", quiet, self.console) as bar:
            mine = [items[i] for i in part]
            score_items = partial(task.scorer.score_details, lm)
            stats, details = (
                scored_in_chunks(score_items, mine, bar, chunk_size(len(mine), self.cfg.eval.batch_size))
                if len(part)
                else (np.zeros((0, 1)), [])
            )
        records = example_records(task.items if len(task.items) == len(items) else items, part, stats, details)
        if world > 1:
            from accelerate.utils import gather_object

            parts = gather_object([(rank, stats.tolist(), records)])
            stats = np.concatenate(
                [
                    np.array(s).reshape(-1, stats.shape[1] if stats.ndim == 2 else 1)
                    for _, s, _ in sorted(parts, key=lambda p: p[0])
                    if len(s)
                ]
            )
            records = [r for _, _, recs in sorted(parts, key=lambda p: p[0]) for r in recs]
        return stats, records

    def score_suite(self, row: int) -> dict[str, dict[str, Any]]:
        """Scores of the current model on every eval task as of matrix row `row`, outside the matrix (sweeps):
        `{task: {"score": s, "ci95": [lo, hi] or None}}`, the CI a bootstrap over the task's eval examples
        (`eval.bootstrap` resamples, the run's seed, so every sweep point is resampled in pairs)."""
        out = {}
        for t in self.tasks:
            stats = self.task_stats(t, row, "sweep")
            ci = score_ci(stats, t.scorer.aggregate, self.cfg.eval.bootstrap, self.cfg.seed)
            out[t.name] = {"score": float(t.scorer.aggregate(stats)), "ci95": ci}
        return out

    def evaluate_during(self, index: int, step: int, model: Any) -> float:
        """`train.eval_every`: score `eval_tasks` on the model being trained after `step` steps of stage
        `index`, by the matrix's own path (`task_stats`, as of the stage's row), as an `eval_step` event and
        tracker scalars `eval_step/<task>` at the global step; the training state is put back. A point a
        resumed run already recorded is not scored again."""
        t0 = time.perf_counter()
        if self.inner_points is None:
            self.inner_points = recorded_points(self.run_dir) if self.resume else set()
        if (index, step) in self.inner_points:
            return 0.0
        names = self.cfg.stage_train(index).eval_tasks
        state = TrainingState(model)
        try:
            scores = {
                t.name: float(t.scorer.aggregate(self.task_stats(t, index + 1, self.cfg.stages[index].name, model)))
                for t in self.tasks
                if names is None or t.name in names
            }
        finally:
            state.restore()
        at = self.step_offsets[index] + step
        wall = time.perf_counter() - t0
        self.log(type="eval_step", stage=index, step=step, global_step=at, scores=scores, wall_s=wall)
        if self.cfg.trackers:
            self.accelerator.log({f"eval_step/{k}": v for k, v in scores.items()}, step=at)
        self.inner_points.add((index, step))
        return wall

    def evaluate(self, results: Results, row: int) -> None:
        acc = self.accelerator
        t0 = time.perf_counter()
        for j, task in enumerate(self.tasks):
            stats, records = self.task_scores(task, row, results.rows[row])
            if acc.is_main_process:  # before the row enters results.json (docs/eval.md, "Per-item records")
                write_examples(self.run_dir, task.name, results.rows[row], records)
            results.set_cell(row, j, stats)
        if self.cfg.trackers:
            acc.log(
                {f"eval/{t.name}": results.matrix[row][j] for j, t in enumerate(self.tasks)},
                step=self.step_offsets[row],
            )
        if acc.is_main_process:
            results.save(self.run_dir)
            self.log(
                type="eval",
                row=results.rows[row],
                scores={t.name: results.matrix[row][j] for j, t in enumerate(self.tasks)},
                wall_s=time.perf_counter() - t0,
            )
        acc.wait_for_everyone()

    # ---- the stream -----------------------------------------------------------------------------
    def execute(self) -> Results:
        cfg, acc = self.cfg, self.accelerator
        rows = ["baseline"] + [s.name for s in cfg.stages]
        tasks = [
            {
                "name": t.name,
                "metric": t.metric,
                "higher_is_better": t.higher_is_better,
                "stage": t.stage,
                "scorer": t.scorer.registered_name,  # type: ignore[attr-defined]
                "n": len(t.items),
                "also": list(t.scorer.also_reported()) or None,
                **t.scorer.signature_field(),
            }
            for t in self.tasks
        ]  # type: ignore
        results = Results(cfg.name, rows, tasks, cfg.eval.bwt_denominator)
        results.extra["versions"] = versions()
        results.extra["strategy"] = [s.name for s in cfg.strategy]
        results.extra["processes"] = acc.num_processes
        results.extra["sharding"] = self.sharding
        if self.sharding == "deepspeed":
            from lifelong.train.accel import zero_stage

            results.extra["zero_stage"] = zero_stage(acc)
        start, mid = 0, None
        if acc.is_main_process and latest_checkpoint(self.run_dir) is None:
            if self.strategy.trained_tensors(self.model) is not None:  # adapter-only checkpoints leave it out
                record_base(self.run_dir, self.model)
        if self.resume:
            if (self.run_dir / "results.json").exists():
                results = Results.load(self.run_dir)
                for r, row in enumerate(results.rows):  # a row saved without its per-example statistics is redone
                    if any(row not in results.stats.get(t["name"], {}) for t in results.tasks):
                        results.matrix[r] = [None] * len(tasks)
                for k, s in enumerate(cfg.stages):  # ratios earlier stages used (topic-ratio adaptation)
                    if s.name in results.extra.get("mix", {}):
                        self.mix_ratios[k] = results.extra["mix"][s.name]["ratios"]
            ck = latest_checkpoint(self.run_dir)
            if ck is not None:

                def rebuild(model: Any, meta: dict) -> Any:
                    from lifelong.train.loop import rewrapped

                    return rewrapped(self, meta["stage"], model)

                self.model, meta = load_checkpoint(ck, self.model, self.strategy, rebuild)
                self.model.to(acc.device)
                if meta["done"] and "zero" in meta:  # DeepSpeed's parts: read when a later stage keeps them
                    if any(
                        cfg.stage_train(k).optimizer_state == "keep" for k in range(meta["stage"] + 1, len(cfg.stages))
                    ):
                        part = read_part(meta, acc.process_index, acc.num_processes, self.sharding == "deepspeed")
                        self.optimizer_state = {"zero": part}
                elif meta["done"] and meta.get("optimizer_state"):
                    self.optimizer_state = meta["optimizer_state"]["optimizer"]
                start = meta["stage"] + 1 if meta["done"] else meta["stage"]
                mid = None if meta["done"] else meta
                self.log(type="resume", checkpoint=ck.name)
                name = cfg.stages[meta["stage"]].name
                if meta["done"]:  # killed after the stage-end checkpoint, before its weights or cost were kept
                    if name in cfg.kept_weights() and not self.kept_path(name).exists():
                        self.keep_weights(name)
                    if "cost" in meta:
                        results.costs.setdefault(name, meta["cost"])
            for r in range(start + 1, len(rows)):  # rows computed after the checkpoint are recomputed
                results.matrix[r] = [None] * len(tasks)
        else:
            self.log(
                type="start", stages=len(cfg.stages), strategy=results.extra["strategy"], processes=acc.num_processes
            )
        self.results = results
        if "base" in cfg.kept_weights() and not (self.run_dir / "keep" / "base" / "model.safetensors").exists():
            self.keep_weights("base")  # before any stage (a resume from a stage checkpoint has it already)
        if not results.has_row(0):
            self.evaluate(results, 0)
        if start > 0 and mid is None and not results.has_row(start):
            self.evaluate(results, start)
        if start > 0 and mid is None:
            self.export_stage(start - 1)  # a kill after the stage-end checkpoint may have cut its export
        for i in range(start, len(cfg.stages)):
            self.log(type="stage_start", stage=i, name=cfg.stages[i].name)
            src = cfg.stages[i].start_from
            if src != "previous" and not (mid and mid["stage"] == i):
                self.load_kept(src)
            cost = self.kinds[i].apply(self, i, self.prepared[i], resume=mid if mid and mid["stage"] == i else None)
            mid = None
            whole = self._whole()
            held = self.strategy.state_dict() if whole is not None else None  # sharded: a collective
            end: dict[str, Any] = {"stage": i, "step": None, "done": True, "cost": cost}
            kept, parts = self.optimizer_state, None
            if kept and "zero" in kept:  # DeepSpeed (optimizer_state: keep): every process stages its part
                parts = stage_part(self.run_dir, f"stage{i}-end", kept["zero"], acc.process_index)
                kept, end["zero"] = {}, {"processes": acc.num_processes}
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_checkpoint(
                    self.run_dir,
                    f"stage{i}-end",
                    self.model,
                    self.strategy,
                    end,
                    StateHolder(kept or {}) if kept or parts else None,
                    keep=cfg.stage_train(i).keep_checkpoints,
                    weights=whole,
                    strategy_state=held,
                    parts=parts,
                )
            acc.wait_for_everyone()
            fault_point("stage-end")  # checkpointed; weights not kept, row not scored yet
            if cfg.stages[i].name in cfg.kept_weights():
                self.keep_weights(cfg.stages[i].name)
            results.costs[cfg.stages[i].name] = cost
            self.log(type="stage_end", stage=i, cost=cost)
            self.evaluate(results, i + 1)
            fault_point("stage-evaluated")  # row saved; the next stage not started
            self.export_stage(i)
        if acc.is_main_process:
            results.compute_metrics(cfg.eval.bootstrap, cfg.seed)
            results.save(self.run_dir)
            self.log(type="end")
            if cfg.trackers:
                for group, g in results.metrics.items():
                    if isinstance(g, dict) and "metrics" in g:
                        acc.log(
                            {f"metrics/{group}/{k}": v for k, v in g["metrics"].items() if v is not None},
                            step=self.step_offsets[-1],
                        )
        if cfg.trackers:
            acc.end_training()
        acc.wait_for_everyone()
        return results


def run(cfg: RunConfig, resume: bool = False, quiet: bool = False) -> Results:
    """Run a validated config through its stream (the report is built by the layer above: `lifelong.api`)."""
    return Run(cfg, resume=resume, quiet=quiet).execute()
