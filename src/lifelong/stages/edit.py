"""Edit stage: apply knowledge-edit requests (docs/editing.md) to the stream's model with a weight editor
(ROME, MEMIT, FT-L, MEND). The stage's own eval task defaults to the edits' efficacy (top-1), so the
results matrix shows whether a later fine-tuning stage erases the edits and whether the edits hurt the
earlier tasks; the full edit metrics of the stage (every variant) go to results.json under `edits`.

Sharded (FSDP2): editors read and write whole weight matrices and run their own forward passes, so the edit
runs on a whole copy of the model on the main process (gathered from the shards), and the tensors it changed
are then broadcast and written into every process's shards (`sharding.assign_full_`): the sharded model ends
with the weights the one-process edit gives. The main process needs room for one whole copy (on its device);
the others wait for it."""

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
        from lifelong.train.sharding import is_sharded

        stage = run.cfg.stages[index]
        t0 = time.perf_counter()
        editor = build(stage.edit.method, stage.edit.params)
        group = stage.edit.group or (len(prepared) if editor.batched else 1)
        was_training = run.model.training
        run.model.eval()
        sharded = is_sharded(run.model)
        target = _whole_copy(run) if sharded else run.model
        done: dict[str, Any] = {}
        if target is not None:
            out = run_protocol(
                target,
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
            done = {
                "changed": sum(r.changed_parameters() for r in out["results"]),
                "summary": {k: v["mean"] for k, v in out["summary"].items()},
                "seconds": out["seconds_total"],
                "names": sorted({n for r in out["results"] for n in r.deltas}),
            }
        if sharded:
            done = _scatter(run, target, done)
        run.model.train(was_training)
        changed = done["changed"]
        if run.results_extra is not None:
            run.results_extra.setdefault("edits", {})[stage.name] = {
                "method": stage.edit.method,
                "requests": len(prepared),
                "group": group,
                "summary": done["summary"],
            }
        run.log(
            type="edit",
            stage=index,
            method=stage.edit.method,
            requests=len(prepared),
            summary=done["summary"],
            seconds=done["seconds"],
        )
        return {
            "wall_s": time.perf_counter() - t0,
            "steps": 0,
            "tokens": 0,
            "trainable_params": 0,
            "edits": len(prepared),
            "changed_weights": changed,
        }


def _whole_copy(run: StageEnv) -> Any:
    """On the main process, a plain (unsharded) copy of the sharded stream model on its device, built from
    the model's class and config and the gathered state dict; None on the others. A collective."""
    import torch
    from torch.distributed.fsdp import FSDPModule

    from lifelong.train.sharding import full_state_dict

    model, acc = run.model, run.accelerator
    cls: Any = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    if getattr(model, "config", None) is None or not hasattr(cls, "config_class"):
        raise ValueError(
            f"an edit stage under sharding edits a whole copy of the model, which only a transformers model "
            f"rebuilds from its config; this stream's model is a {cls.__name__} (a strategy's wrapper): "
            "run the edit stage before the strategy wraps the model, or without sharding"
        )
    full = full_state_dict(model)  # process 0 only
    if not acc.is_main_process:
        return None
    with torch.device("meta"):
        whole: Any = cls(model.config)
    whole.load_state_dict(full, assign=True, strict=False)
    if hasattr(whole, "tie_weights"):
        whole.tie_weights()
    held = dict(model.named_buffers())
    for name, _ in list(whole.named_buffers()):  # non-persistent buffers (rotary tables): the model's own
        if name in held:
            owner, _, leaf = name.rpartition(".")
            whole.get_submodule(owner)._buffers[leaf] = held[name].detach().clone()
    left = [n for n, t in list(whole.named_parameters()) + list(whole.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"edit stage: the gathered state dict holds no value for {left[:3]}")
    return whole.to(acc.device).eval()


def _scatter(run: StageEnv, whole: Any, done: dict[str, Any]) -> dict[str, Any]:
    """Broadcast what the main process's edit changed (the tensors named in `done["names"]` of `whole`, and
    the figures) and write them into every process's shards of the stream model. A collective."""
    import torch
    from accelerate.utils import broadcast, broadcast_object_list

    from lifelong.train.sharding import assign_full_, reshard

    reshard(run.model)  # the shards registered, not copies a forward pass left gathered (writes there are lost)
    acc = run.accelerator
    if acc.is_main_process:
        values = dict(whole.named_parameters())
        shapes = {n: (tuple(values[n].shape), values[n].dtype) for n in done["names"]}
    else:
        shapes = {}
    done, shapes = broadcast_object_list([done, shapes])
    params = dict(run.model.named_parameters())
    for name, (shape, dtype) in shapes.items():
        t = (
            values[name].detach().to(acc.device)
            if acc.is_main_process
            else torch.empty(shape, dtype=dtype, device=acc.device)
        )
        assign_full_(params[name], broadcast(t))
    return done
