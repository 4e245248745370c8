"""Preference stage: DPO (or IPO / cDPO) on prompt, chosen, rejected pairs, against the model as the stage
starts (see `lifelong.train.dpo`). Strategies (replay, EWC, LwF, ...) apply as in any trainable stage."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from lifelong.data import check_rows, infer_format, load_rows
from lifelong.data.formats import to_preference_examples
from lifelong.stages import STAGE_KINDS
from lifelong.stages.base import TrainableStage

if TYPE_CHECKING:
    from lifelong.runner import Run


@STAGE_KINDS.register("preference")
class Preference(TrainableStage):
    """Align on preference pairs with DPO against the stage-start model (IPO and conservative variants)."""

    formats = ("preference",)

    def _examples(self, run: "Run", index: int, data: Any) -> Any:
        rows = load_rows(data)
        fmt = infer_format(rows, data.format)
        if fmt != "preference":
            raise ValueError(f"stages.{index} ({run.cfg.stages[index].name}): a preference stage needs prompt, "
                             f"chosen, rejected rows; {rows.source} has format {fmt}")
        check_rows(rows, fmt)
        return to_preference_examples(rows, data, run.formatter, run.cfg.stage_train(index).max_length)

    def apply(self, run: "Run", index: int, prepared: Any, resume: Optional[dict] = None) -> dict:
        from lifelong.train.dpo import DPOObjective
        from lifelong.train.loop import train_stage

        pad = run.tokenizer.pad_token_id if run.tokenizer.pad_token_id is not None else 0
        obj = DPOObjective(run.cfg.stages[index].preference, pad)
        obj.prepare(run.model, prepared, run.run_dir / "keep" / f"dpo_ref_stage{index}.json")
        return train_stage(run, index, prepared, resume, objective=obj)
