"""The merge driver: `merge_models(config, out_dir)` and its YAML config (close to mergekit's: base_model,
models with weights, merge_method, parameters).

Tensors stream one name at a time from every input's safetensors shards; the output is written tensor by
tensor into sharded safetensors with the base's config, generation config and tokenizer, so peak memory is
about one tensor per input. Names and shapes are checked before anything is written; the first mismatch is
named. PEFT LoRA adapter directories are accepted as inputs: they are merged into their base first (that
one model is materialized in memory, then streamed like the others).
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal, Optional, Union

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.faults import fault_point
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import TensorContext
from lifelong.merging.st_io import CODES, DTYPES, LazyModel, StreamingWriter, copy_model_files, finalize, parse_size
from lifelong.progress import progress


class ModelEntry(Strict):
    model: str
    """A model directory with safetensors weights (or a PEFT LoRA adapter directory)."""
    parameters: dict[str, float] = Field(default_factory=lambda: {"weight": 1.0})
    """Per-model parameters; `weight` (default 1)."""


class Override(Strict):
    pattern: str
    """Glob over tensor names, e.g. `*embed_tokens*` or `lm_head.*`."""
    use: Union[Literal["base"], int, None] = None
    """Take the tensor from the base, or from model number N (0-based), unmerged."""
    weights: Optional[list[float]] = None
    """Per-model weights for the matching tensors instead of the models' own."""


class MergeConfig(Strict):
    merge_method: str
    """`lifelong ls merges` lists the methods and their parameters."""
    base_model: Optional[str] = None
    """The common base (required by methods that merge deltas: task_arithmetic, ties, dare)."""
    models: list[ModelEntry] = Field(min_length=1)
    """The models to merge."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """Method parameters (typed per method)."""
    dtype: Optional[Literal["float32", "bfloat16", "float16"]] = None
    """Output dtype (default: the reference model's)."""
    overrides: list[Override] = Field(default_factory=list)
    """Per-tensor exceptions, first matching pattern wins."""
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Seed of random methods (DARE)."""
    max_shard_size: Union[str, int] = "2GB"
    """Largest output shard."""


def _resolve_input(path: str, base: Optional[str], tmp: Path) -> Path:
    """A model dir as is; a PEFT adapter dir merged into its base and saved as safetensors under tmp."""
    p = Path(path)
    if not (p / "adapter_config.json").exists():
        return p
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_path = base or json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base_path:
        raise ValueError(f"{p}: a LoRA adapter needs base_model in the merge config")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(p)).merge_and_unload()
    out = tmp / f"adapter-{abs(hash(str(p)))}"
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def check_compatible(ref: LazyModel, ref_label: str, others: list[tuple[str, LazyModel]]) -> None:
    names = ref.names()
    for label, m in others:
        have = set(m.names())
        missing = [n for n in names if n not in have]
        if missing:
            raise ValueError(
                f"{label}: tensor {missing[0]!r} of {ref_label} is missing "
                f"({len(missing)} missing in all); models must share an architecture"
            )
        extra = sorted(have - set(names))
        if extra:
            raise ValueError(f"{label}: tensor {extra[0]!r} is not in {ref_label} ({len(extra)} extra)")
        for n in names:
            if ref.meta(n)[1] != m.meta(n)[1]:
                raise ValueError(f"tensor {n!r}: shape {ref.meta(n)[1]} in {ref_label} but {m.meta(n)[1]} in {label}")


def check_finite(name: str, merged: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    """Refuse a merged tensor with NaN or infinity that its inputs did not have (a degenerate method
    setting), naming the tensor; the output folder is then never completed."""
    bad = ~torch.isfinite(merged)
    if bad.any() and all(bool(torch.isfinite(t).all()) for t in inputs):
        raise ValueError(
            f"tensor {name!r}: the merge produced {int(bad.sum())} NaN or infinite values from finite "
            "inputs; check the method's parameters and weights (nothing was written)"
        )


def global_thresholds(
    models: list[LazyModel], base: LazyModel, weights: list[float], fraction: float, names: list[str]
) -> list[float]:
    """Per model, the magnitude above which `fraction` of all its weighted delta entries lie: exact k-th
    largest in three streaming passes (max; histogram; the entries in the threshold's bin)."""
    out = []
    floats = [n for n in names if DTYPES[base.meta(n)[0]].is_floating_point]
    for m, w in zip(models, weights):

        def deltas(n: str, m: LazyModel = m, w: float = w) -> torch.Tensor:
            return (w * (m.get(n).float() - base.get(n).float())).abs().flatten()

        total = sum(int(torch.tensor(base.meta(n)[1]).prod()) if base.meta(n)[1] else 1 for n in floats)
        k = max(1, int(round(fraction * total)))
        hi = max(float(deltas(n).max()) for n in floats)
        if hi == 0:
            out.append(0.0)
            continue
        bins = 1 << 16
        hist = torch.zeros(bins, dtype=torch.float64)
        for n in floats:
            hist += torch.histc(deltas(n).double(), bins=bins, min=0, max=hi)
        above = torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0])  # entries in bin b or higher
        b = int((above >= k).nonzero().max())
        lo_edge, hi_edge = b * hi / bins, (b + 1) * hi / bins
        n_higher = int(above[b + 1]) if b + 1 < bins else 0
        inside = torch.cat(
            [
                d[(d >= lo_edge) & ((d < hi_edge) if b + 1 < bins else (d <= hi_edge))]
                for d in (deltas(n) for n in floats)
            ]
        )
        need = k - n_higher  # the threshold is the need-th largest value inside the bin
        out.append(float(inside.sort(descending=True).values[need - 1]) if len(inside) >= need > 0 else lo_edge)
    return out


def merge_models(cfg: MergeConfig, out_dir: str | Path, quiet: bool = False, console: Optional[Any] = None) -> Path:
    """Merge as configured into a new HF model directory `out_dir` (written under a temporary name and
    renamed when complete). Progress per tensor (`lifelong.progress`; `quiet`: none)."""
    method_cls = MERGE_METHODS.get(cfg.merge_method)
    method = method_cls(method_cls.Params(**cfg.parameters))
    if method_cls.uses_base and not cfg.base_model:
        raise ValueError(f"merge_method {cfg.merge_method} merges deltas against a base: set base_model")
    if method_cls.n_models and len(cfg.models) != method_cls.n_models:
        raise ValueError(
            f"merge_method {cfg.merge_method} takes exactly {method_cls.n_models} models, got {len(cfg.models)}"
        )
    weights = [float(e.parameters.get("weight", 1.0)) for e in cfg.models]
    for label, ws in [("models' weights", weights)] + [
        (f"override {o.pattern!r}: weights", o.weights) for o in cfg.overrides if o.weights
    ]:
        if len(ws) != len(cfg.models):
            raise ValueError(f"{label}: {len(ws)} weights for {len(cfg.models)} models")
        why = method.check_weights(list(ws))
        if why:
            raise ValueError(f"{label}: {why}")
    out = Path(out_dir)
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out (merges never overwrite)")
    if cfg.merge_method == "greedy_soup":
        return _greedy_soup(cfg, method, out, quiet, console)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    work = Path(tempfile.mkdtemp(prefix="lifelong-merge-"))
    try:
        paths = [_resolve_input(e.model, cfg.base_model, work) for e in cfg.models]
        models = [LazyModel(p) for p in paths]
        base = LazyModel(cfg.base_model) if cfg.base_model else None
        ref, ref_label = (base, f"base {cfg.base_model}") if base else (models[0], f"model {cfg.models[0].model}")
        check_compatible(ref, ref_label, [(f"model {e.model}", m) for e, m in zip(cfg.models, models) if m is not ref])
        names = ref.names()
        thresholds = None
        frac = method.global_fraction()
        if frac is not None and base is not None:
            thresholds = global_thresholds(models, base, weights, frac, names)
        plan = []
        for n in names:
            code, shape = ref.meta(n)
            if cfg.dtype and DTYPES[code].is_floating_point:
                code = CODES[getattr(torch, cfg.dtype)]
            plan.append((n, code, shape))
        writer = StreamingWriter(tmp, plan, parse_size(cfg.max_shard_size))
        with progress(len(plan), f"merge {cfg.merge_method}", quiet, console, unit="tensors") as bar:
            for n, code, _ in plan:
                rule = next((o for o in cfg.overrides if fnmatch.fnmatchcase(n, o.pattern)), None)
                src_dtype = DTYPES[ref.meta(n)[0]]
                if not src_dtype.is_floating_point:
                    merged = ref.get(n)
                elif rule is not None and rule.use is not None:
                    if rule.use == "base":
                        if base is None:
                            raise ValueError(f"override {rule.pattern!r}: `use: base` needs base_model")
                        merged = base.get(n)
                    else:
                        merged = models[int(rule.use)].get(n)
                else:
                    w = rule.weights if rule is not None and rule.weights else weights
                    ctx = TensorContext(name=n, seed=cfg.seed, threshold=thresholds)
                    inputs = [m.get(n).float() for m in models] + ([base.get(n).float()] if base is not None else [])
                    merged = method.merge(inputs[: len(models)], list(w), inputs[-1] if base is not None else None, ctx)
                    check_finite(n, merged, inputs)
                    del inputs
                writer.write(n, merged.to(DTYPES[code]))
                del merged
                bar.advance()
                fault_point("merge-tensor")  # a testing hook (lifelong.faults): killed with some tensors written
        writer.close()
        copy_model_files(paths[0] if base is None else Path(cfg.base_model), tmp)  # type: ignore[arg-type]
        finalize(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def load_merge_config(path: str | Path, overrides: Optional[list[str]] = None) -> MergeConfig:
    """Read and validate a merge YAML with file:line errors (and dotted overrides)."""
    from pydantic import ValidationError

    from lifelong.configio import ConfigError, apply_overrides, format_validation_error, read_yaml

    path = Path(path)
    raw, lines = read_yaml(path, "merge config")
    raw = apply_overrides(raw, overrides or [])
    try:
        cfg = MergeConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("\n".join(format_validation_error(err, str(path), lines))) from None
    if cfg.merge_method not in MERGE_METHODS:
        raise ConfigError(
            f"{path}:{lines.get(('merge_method',), '?')}: merge_method: "
            f"{MERGE_METHODS.unknown_message(cfg.merge_method)}"
        )
    try:
        method_cls = MERGE_METHODS.get(cfg.merge_method)
        method = method_cls(method_cls.Params(**cfg.parameters))
    except ValidationError as err:
        raise ConfigError("\n".join(format_validation_error(err, str(path), lines, ("parameters",)))) from None
    why = method.check_weights([float(e.parameters.get("weight", 1.0)) for e in cfg.models])
    if why:
        raise ConfigError(f"{path}:{lines.get(('models',), '?')}: models: {why}")
    base_dir = path.parent
    fix = lambda p: str((base_dir / p).resolve()) if p and not Path(p).is_absolute() and (base_dir / p).exists() else p  # noqa: E731
    cfg.base_model = fix(cfg.base_model)
    for e in cfg.models:
        e.model = fix(e.model)
    return cfg


def _greedy_soup(cfg: MergeConfig, method: Any, out: Path, quiet: bool = False, console: Optional[Any] = None) -> Path:
    """Select the soup's ingredients by held-out score, then stream their uniform average."""
    from lifelong.config import EvalTaskConfig
    from lifelong.data.formats import Formatter
    from lifelong.eval.lm import HFLM
    from lifelong.eval.tasks import build_task
    from lifelong.merging.greedy_soup import select_greedy

    p = method.params
    if not p.eval:
        raise ValueError("greedy_soup needs parameters.eval: the held-out task (path or rows, scorer, ...)")
    task = build_task(EvalTaskConfig(**p.eval), "heldout", None, None, None, "parameters.eval")
    work = Path(tempfile.mkdtemp(prefix="lifelong-soup-"))
    cache: dict[tuple, float] = {}

    def score(idx: list[int]) -> float:
        key = tuple(sorted(idx))
        if key not in cache:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            d = work / ("soup-" + "-".join(map(str, key)))
            sub = cfg.model_copy(
                update={
                    "merge_method": "linear",
                    "parameters": {},
                    "models": [ModelEntry(model=cfg.models[i].model, parameters={"weight": 1.0}) for i in key],
                }
            )
            merge_models(sub, d, quiet=True)  # trials: the final merge shows progress
            tok_dir = cfg.base_model or cfg.models[0].model
            model = AutoModelForCausalLM.from_pretrained(str(d)).eval()
            tok = AutoTokenizer.from_pretrained(tok_dir)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            lm = HFLM(model, Formatter(tok), p.batch_size)
            value = float(task.scorer.aggregate(task.scorer.score(lm, task.items)))
            cache[key] = value if task.higher_is_better else -value
            shutil.rmtree(d, ignore_errors=True)
        return cache[key]

    try:
        kept, log = select_greedy(len(cfg.models), score)
        final = cfg.model_copy(
            update={
                "merge_method": "linear",
                "parameters": {},
                "models": [ModelEntry(model=cfg.models[i].model, parameters={"weight": 1.0}) for i in kept],
            }
        )
        merge_models(final, out, quiet, console)
        import json

        (out / "greedy_soup.json").write_text(
            json.dumps({"kept": [cfg.models[i].model for i in kept], "trials": log}, indent=1)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
