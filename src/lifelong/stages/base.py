"""Base classes of stage kinds."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Optional

from lifelong.data import check_rows, infer_format, load_rows, to_examples

if TYPE_CHECKING:
    from lifelong.runner import Run


class StageKind:
    """One kind of update. `prepare` loads and checks data (before any training of the run);
    `apply` updates `run.model`."""

    trainable: ClassVar[bool] = True
    formats: ClassVar[tuple[str, ...]] = ()
    """Row formats this kind accepts."""

    def prepare(self, run: "Run", index: int) -> Any:
        raise NotImplementedError

    def apply(self, run: "Run", index: int, prepared: Any, resume: Optional[dict] = None) -> dict:
        """Update the model; return cost figures for the stage."""
        raise NotImplementedError


class TrainableStage(StageKind):
    """A stage trained by the shared loop on tokenized examples."""

    def prepare(self, run: "Run", index: int) -> Any:
        """Tokenized examples; with `mix`, a dict of per-source examples composed when the stage starts
        (so ratios can adapt to the previous stage's results)."""
        stage = run.cfg.stages[index]
        sources = ([stage.data] if stage.data is not None else []) + list(stage.mix)
        if len(sources) == 1:
            return self._examples(run, index, sources[0])
        return {"sources": [self._examples(run, index, d) for d in sources], "weights": [d.weight for d in sources]}

    def _examples(self, run: "Run", index: int, data: Any) -> Any:
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
        if fmt not in self.formats:
            raise ValueError(f"stages.{index} ({stage.name}): a {stage.kind} stage takes formats "
                             f"{', '.join(self.formats)}; {rows.source} has format {fmt}")
        check_rows(rows, fmt)
        from lifelong.data import cache

        fm = run.formatter
        key = cache.content_key("examples-v1", rows.rows, fmt, data.model_dump(exclude={"path", "hub", "weight"}),
                                cache.tokenizer_fingerprint(fm.tok), fm.chat, fm.system_prompt,
                                run.cfg.stage_train(index).max_length)
        examples = cache.load("tokens", key)
        if examples is None:
            examples = to_examples(rows, fmt, data, fm, run.cfg.stage_train(index).max_length)
            cache.store("tokens", key, examples)
        run.cache_keys[index] = cache.content_key(run.cache_keys.get(index), key)
        return examples

    def apply(self, run: "Run", index: int, prepared: Any, resume: Optional[dict] = None) -> dict:
        from lifelong.train.loop import train_stage

        if isinstance(prepared, dict):
            from lifelong.data.mixing import compose

            prepared = compose(run, index, prepared)
        return train_stage(run, index, prepared, resume)
