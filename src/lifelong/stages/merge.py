"""Merge stage: merge the end-of-stage weights of earlier stages (e.g. two branches tuned from the same
base with `start_from: base`) with a registered merge method, and continue the stream from the result, so
the merged model is scored in the same results matrix as everything else.

The merge reads the kept safetensors files (written whole, also under sharding), never the live model.
Sharded (FSDP2): every process streams the merged file one tensor at a time and keeps its shard of each
(`sharding.assign_full_`, no communication), so no process holds a whole model."""

from __future__ import annotations

import shutil
import time
from typing import Any, Optional

from lifelong.stages import STAGE_KINDS
from lifelong.stages.base import StageKind
from lifelong.train.context import StageEnv


@STAGE_KINDS.register("merge")
class Merge(StageKind):
    """Merge earlier stages' weights (task arithmetic, TIES, DARE, SLERP, linear) into the stream's model."""

    trainable = False

    @classmethod
    def check(cls, cfg: Any, index: int, at: Any) -> list[str]:
        from lifelong.merging import MERGE_METHODS

        m = cfg.stages[index].merge
        if m is None:
            return [at(("stages", index, "merge"), "a merge stage needs `merge: {method, models}`")]
        loc = ("stages", index, "merge")
        if m.method not in MERGE_METHODS:
            return [at(loc + ("method",), MERGE_METHODS.unknown_message(m.method))]
        from lifelong.merging.params import MethodParams, SettingError

        cls_ = MERGE_METHODS.get(m.method)
        if cls_.adapter_space:
            return [
                at(
                    loc + ("method",),
                    f"merge_method {m.method} merges PEFT LoRA adapter directories, and a stage merges the full "
                    "weights its earlier stages kept; use a full-weight method (ties, linear, task_arithmetic, "
                    "...) here, or `lifelong merge` on exported adapters (export.format: peft)",
                )
            ]
        spec = MethodParams(m.method, cls_)
        try:  # global names are the method's Params; per-model ones (density, ...) are every model's default
            scope = spec.parse_scope(m.parameters, loc + ("parameters",), True, "")
        except SettingError as e:
            return [at(e.loc, e.message)]
        fixed = {k: v for k, v in m.parameters.items() if spec.is_global(k) and not isinstance(scope[k], (list, tuple))}
        params, msgs = at.params(cls_.Params, fixed, loc + ("parameters",))
        if params is not None:
            why = cls_(params).check_weights(m.weights or [1.0] * len(m.models))
            if why:
                msgs.append(at(loc + ("weights",), why))
        return msgs

    def prepare(self, run: StageEnv, index: int) -> Any:
        return None

    def apply(self, run: StageEnv, index: int, prepared: Any, resume: Optional[dict] = None) -> dict:
        from safetensors.torch import load_model

        from lifelong.merging import MERGE_METHODS
        from lifelong.merging.engine import MergeConfig, ModelEntry, merge_models
        from lifelong.train.sharding import is_sharded

        stage = run.cfg.stages[index]
        m = stage.merge
        assert m is not None
        t0 = time.perf_counter()
        weights = m.weights or [1.0] * len(m.models)
        out = run.run_dir / "keep" / f"{stage.name}-merged"
        if run.accelerator.is_main_process:
            shutil.rmtree(out, ignore_errors=True)
            method_cls = MERGE_METHODS.get(m.method)
            cfg = MergeConfig(
                merge_method=m.method,
                # only methods that merge against a base get one: mergekit would average a base into linear
                # merges, and slerp without a base interpolates between the two stages
                base_model=str(run.kept_path(m.base).parent) if method_cls.uses_base else None,
                models=[
                    ModelEntry(model=str(run.kept_path(n).parent), parameters={"weight": w})
                    for n, w in zip(m.models, weights)
                ],
                parameters=m.parameters,
                seed=run.cfg.seed,
                max_shard_size="100000GB",
            )
            merge_models(cfg, out, run.quiet, run.console)
        run.accelerator.wait_for_everyone()
        if is_sharded(run.model):
            _stream_into(run.model, out / "model.safetensors")
        else:
            load_model(run.model, str(out / "model.safetensors"), strict=False)
        run.log(type="merge", stage=index, method=m.method, models=m.models)
        return {
            "wall_s": time.perf_counter() - t0,
            "steps": 0,
            "tokens": 0,
            "trainable_params": 0,
            "merged_models": len(m.models),
        }


def _stream_into(model: Any, path: Any) -> None:
    """Load a safetensors file into a (sharded) model one tensor at a time, each process writing its own
    shards; names the model does not have are skipped, as `load_model(strict=False)` does."""
    from safetensors import safe_open

    from lifelong.train.sharding import assign_full_, reshard

    reshard(model)  # the shards registered, not copies a forward pass left gathered (writes there would be lost)
    targets = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            if name in targets:
                assign_full_(targets[name], f.get_tensor(name))
