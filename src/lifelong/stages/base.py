"""Base classes of stage kinds, and the run-wide state a kind may keep.

A stage kind sees the run only through `StageEnv` (lifelong.train.context): the model, tokenizer, config,
logging, results records, kept weights, and its own `StageState`. The runner knows no kind by name: it
creates one `State` per kind that declares one, restores it on resume, saves nothing itself, and lets
every state adjust eval items (retrieval)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from pydantic import BaseModel

from lifelong.config import Strict
from lifelong.data import check_rows, infer_format, load_rows, to_examples
from lifelong.data.lengths import Examples, Lengths, warn
from lifelong.data.scenarios import accepts
from lifelong.train.context import StageEnv

if TYPE_CHECKING:
    from lifelong.config import RunConfig


class NoParams(Strict):
    """A kind without parameters."""


class StageState:
    """State a stage kind keeps across all its stages of a run (e.g. the retrieval memory). One instance per
    run and kind, owning the folders `folders` of the run directory; it writes them itself (atomically) and
    reads them back in `restore` when a run resumes."""

    folders: ClassVar[tuple[str, ...]] = ()
    """Names in the run directory this state writes; their presence means the run made progress."""

    def __init__(self, cfg: "RunConfig", run_dir: Path, is_main: bool) -> None:
        self.cfg, self.run_dir, self.is_main = cfg, Path(run_dir), is_main

    def restore(self) -> None:
        """Read back what an interrupted run saved (called once per process before the stream resumes; the
        main process first, so it may repair files before the others read them)."""

    def eval_items(self, task: Any, row: int, items: list[dict]) -> list[dict]:
        """The eval items of `task` as scored at matrix row `row` (default: unchanged)."""
        return items


class StageKind:
    """One kind of update. `prepare` loads and checks data (before any training of the run);
    `apply` updates `env.model`."""

    trainable: ClassVar[bool] = True
    formats: ClassVar[tuple[str, ...]] = ()
    """Row formats this kind accepts."""
    Params: ClassVar[type[BaseModel]] = NoParams
    """The kind's parameters (`stages[i].params` in a config), validated before anything loads."""
    State: ClassVar[Optional[type[StageState]]] = None
    """Run-wide state of this kind (None: none); reached in `apply` as `env.stage_state(kind name)`."""

    @classmethod
    def check(cls, cfg: "RunConfig", index: int, at: Any) -> list[str]:
        """Located messages for what is wrong with stage `index` of `cfg` for this kind, before anything
        loads (`at`: a `lifelong.configio.Locator`). Kinds with their own section check it here."""
        s = cfg.stages[index]
        msgs = at.params(cls.Params, s.params, ("stages", index, "params"))[1]
        if cls.trainable and s.data is None and not s.mix:
            msgs.append(at(("stages", index, "data"), f"stage kind {s.kind!r} trains, so it needs `data`"))
        return msgs

    def params(self, stage: Any) -> Any:
        """The stage's `params` as this kind's typed `Params`."""
        return self.Params(**stage.params)

    def default_eval(self, stage: Any) -> Optional[Any]:
        """The eval task of a stage that sets no `eval` (an `EvalTaskConfig`), or None: most kinds have none."""
        return None

    def prepare(self, run: StageEnv, index: int) -> Any:
        raise NotImplementedError

    def apply(self, run: StageEnv, index: int, prepared: Any, resume: Optional[dict] = None) -> dict:
        """Update the model; return cost figures for the stage."""
        raise NotImplementedError


class TrainableStage(StageKind):
    """A stage trained by the shared loop on tokenized examples."""

    def prepare(self, run: StageEnv, index: int) -> Any:
        """Tokenized examples; with `mix`, a dict of per-source examples composed when the stage starts
        (so ratios can adapt to the previous stage's results)."""
        stage = run.cfg.stages[index]
        sources = ([stage.data] if stage.data is not None else []) + list(stage.mix)
        prepared = [self._examples(run, index, d) for d in sources]
        found = stage_lengths(prepared)
        if found is not None and run.accelerator.is_main_process:  # once per stage, before any training
            warn(
                found.message(f"stage {index} ({stage.name})", "train.max_length", "data.truncate"),
                run.console,
                run.quiet,
            )
        if len(sources) == 1:
            return prepared[0]
        return {"sources": prepared, "weights": [d.weight for d in sources]}

    def _examples(self, run: StageEnv, index: int, data: Any) -> Any:
        stage = run.cfg.stages[index]
        if data.streaming:
            if "text" not in self.formats:
                raise ValueError(f"stages.{index} ({stage.name}): data.streaming is for pretrain text stages")
            from lifelong.data import cache
            from lifelong.data.streaming import streamed_blocks

            blocks = streamed_blocks(data, run.formatter, run.cfg.stage_train(index).max_length)
            run.cache_keys[index] = cache.content_key(run.cache_keys.get(index), blocks.path.name)
            return blocks
        rows = load_rows(data)
        fmt = infer_format(rows, data.format)
        if not accepts(self.formats, fmt):
            raise ValueError(
                f"stages.{index} ({stage.name}): a {stage.kind} stage takes formats "
                f"{', '.join(self.formats)}; {rows.source} has format {fmt}"
            )
        check_rows(rows, fmt)
        from lifelong.data import cache

        fm = run.formatter
        key = cache.content_key(
            f"examples-v{cache.TOKENS_VERSION}",
            rows.rows,
            fmt,
            data.model_dump(exclude={"path", "hub", "weight"}),
            cache.tokenizer_fingerprint(fm.tok),
            fm.chat,
            fm.system_prompt,
            run.cfg.stage_train(index).max_length,
        )
        hit = cache.load("tokens", key)
        if isinstance(hit, dict) and "examples" in hit and "lengths" in hit:
            examples = Examples(hit["examples"], Lengths.from_dict(hit["lengths"]))
        else:
            examples = to_examples(rows, fmt, data, fm, run.cfg.stage_train(index).max_length)
            cache.store("tokens", key, {"examples": list(examples), "lengths": examples.lengths.as_dict()})
        run.cache_keys[index] = cache.content_key(run.cache_keys.get(index), key)
        return examples

    def apply(self, run: StageEnv, index: int, prepared: Any, resume: Optional[dict] = None) -> dict:
        from lifelong.train.loop import train_stage

        counts = record_lengths(
            run, index, stage_lengths(prepared["sources"] if isinstance(prepared, dict) else [prepared])
        )
        if isinstance(prepared, dict):
            from lifelong.data.mixing import compose

            stage = run.cfg.stages[index]
            tasks, matrix = run.results_matrix
            prepared, mix = compose(
                prepared["sources"],
                prepared["weights"],
                stage.adapt_ratios,
                index,
                run.mix_ratios.get(index - 1),
                tasks,
                matrix,
            )
            run.mix_ratios[index] = mix["ratios"]
            run.log(type="mix", stage=index, **mix)
            if run.results_extra is not None:
                run.results_extra.setdefault("mix", {})[stage.name] = {"ratios": mix["ratios"], "counts": mix["counts"]}
        return train_stage(run, index, prepared, resume) | counts


def stage_lengths(prepared: list[Any]) -> Optional[Lengths]:
    """The `Lengths` record of a stage's prepared sources (summed over `mix` sources); None when no source
    keeps one (streamed blocks)."""
    found = [p.lengths for p in prepared if isinstance(p, Examples)]
    return Lengths.merge(found) if found else None


def record_lengths(run: StageEnv, index: int, found: Optional[Lengths]) -> dict[str, int]:
    """Log what fitting the stage's rows into `max_length` did (a `data` event) and return the counts for its
    costs: `rows` read, `truncated` (kept, cut), `dropped` (left out)."""
    if found is None:
        return {}
    run.log(type="data", stage=index, **found.as_dict())
    return {"rows": found.rows, "truncated": found.truncated, "dropped": found.dropped}
