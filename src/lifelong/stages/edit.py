"""Edit stage: apply knowledge-edit requests (docs/editing.md) to the stream's model with a weight editor
(ROME, MEMIT, FT-L, MEND). The stage's own eval task defaults to the edits' efficacy (top-1), so the
results matrix shows whether a later fine-tuning stage erases the edits and whether the edits hurt the
earlier tasks; the full edit metrics of the stage (every variant) go to results.json under `edits`."""

from __future__ import annotations

import time
from typing import Any, Optional

from lifelong.stages import STAGE_KINDS
from lifelong.stages.base import StageKind
from lifelong.train.context import StageEnv


@STAGE_KINDS.register("edit")
class Edit(StageKind):
    """Edit facts into the weights (rome, memit, ft, mend); no training loop, no optimizer state."""

    trainable = True  # needs `data` (the requests); it does not run the training loop
    formats = ("edit",)

    @classmethod
    def check(cls, cfg: Any, index: int, at: Any) -> list[str]:
        from lifelong.editing import EDITORS

        msgs = super().check(cfg, index, at)
        e, loc = cfg.stages[index].edit, ("stages", index, "edit")
        if e.method not in EDITORS:
            return msgs + [at(loc + ("method",), EDITORS.unknown_message(e.method))]
        if not EDITORS.get(e.method).changes_weights:
            return msgs + [
                at(
                    loc + ("method",),
                    f"{e.method!r} keeps its edits outside the weights, which stage "
                    "checkpoints do not carry; in a stream use a weight editor (rome, "
                    "memit, ft, mend) or a `memory` stage for retrieval",
                )
            ]
        return msgs + at.params(EDITORS.get(e.method).Params, e.params, loc + ("params",))[1]

    def default_eval(self, stage: Any) -> Optional[Any]:
        """An edit stage scores its own edits (efficacy and more, the `edit` scorer over its requests)."""
        from lifelong.config import EvalTaskConfig

        if stage.data is None:
            return None
        return EvalTaskConfig(**stage.data.model_dump(exclude={"weight"}), scorer="edit")

    def prepare(self, run: StageEnv, index: int) -> Any:
        from lifelong.data.edit_requests import load_requests, subject_position, target_ids

        stage = run.cfg.stages[index]
        reqs = load_requests(stage.data)
        for r in reqs:  # tokenization problems surface before any training of the run
            subject_position(run.tokenizer, r.prompt, r.subject, r.where)
            target_ids(run.tokenizer, r.text, r.target_new)
        return reqs

    def apply(self, run: StageEnv, index: int, prepared: Any, resume: Optional[dict] = None) -> dict:
        from lifelong.editing.api import build
        from lifelong.editing.protocol import run_protocol

        stage = run.cfg.stages[index]
        t0 = time.perf_counter()
        editor = build(stage.edit.method, stage.edit.params)
        group = stage.edit.group or (len(prepared) if editor.batched else 1)
        was_training = run.model.training
        run.model.eval()
        out = run_protocol(
            run.model,
            run.tokenizer,
            editor,
            prepared,
            "sequential",
            group,
            bootstrap=0,
            seed=run.cfg.seed,
            quiet=run.quiet or not run.accelerator.is_main_process,
            console=run.console,
        )
        run.model.train(was_training)
        changed = sum(r.changed_parameters() for r in out["results"])
        if run.results_extra is not None:
            run.results_extra.setdefault("edits", {})[stage.name] = {
                "method": stage.edit.method,
                "requests": len(prepared),
                "group": group,
                "summary": {k: v["mean"] for k, v in out["summary"].items()},
            }
        run.log(
            type="edit",
            stage=index,
            method=stage.edit.method,
            requests=len(prepared),
            summary={k: v["mean"] for k, v in out["summary"].items()},
            seconds=out["seconds_total"],
        )
        return {
            "wall_s": time.perf_counter() - t0,
            "steps": 0,
            "tokens": 0,
            "trainable_params": 0,
            "edits": len(prepared),
            "changed_weights": changed,
        }
