"""The merge driver: `merge_models(config, out_dir)` and its YAML config, mergekit's (`merge_method`,
`base_model`, `models` or `slices`, `parameters` with gradients and filters, `dtype`, `out_dtype`,
`tokenizer_source`/`tokenizer`, `chat_template`) plus lifelong's `overrides`, `seed` and `max_shard_size`.

Parameters are resolved per tensor as mergekit's planner does (`lifelong.merging.params`): t = idx/(n-1)
for layer idx of an n-layer slice (1 for a one-layer slice), 0 outside the layers; a model's own (or its
slice source's) parameters, then the slice's, then the global ones. One method instance is built per
distinct set of resolved global parameters.

Tensors stream one name at a time from every input's safetensors shards; the output is written tensor by
tensor into sharded safetensors, so peak memory is about one tensor per input. Names and shapes are checked
and every parameter resolved before anything is written; the first problem is named. Inputs are local model
directories, hub ids (`org/name[@revision]`, from the local Hugging Face cache or downloaded), PEFT LoRA
adapter directories (merged into their base first) and mergekit's `model+lora` references.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import torch
from pydantic import Field, PrivateAttr, field_validator, model_validator

from lifelong.config import Strict
from lifelong.faults import fault_point
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext
from lifelong.merging.params import MethodParams, Setting, SettingError
from lifelong.merging.st_io import (
    CODES,
    DTYPES,
    LazyModel,
    StreamingWriter,
    copy_model_files,
    finalize,
    parse_size,
    read_json,
)
from lifelong.merging.vocab import plan_vocab, vocab_axis
from lifelong.progress import progress

DTypeName = Literal["float32", "bfloat16", "float16", "float64"]


def _dtype_name(v: Any) -> Any:
    return v.removeprefix("torch.") if isinstance(v, str) else v


def _none_is_empty(v: Any) -> Any:
    return {} if v is None else v


class ModelEntry(Strict):
    model: str
    """A model: a local directory with safetensors weights, a hub id (`org/name`, optionally `@revision`),
    a PEFT LoRA adapter directory (merged into base_model first), or mergekit's `model+lora_dir`."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """This model's parameters (settings: a value, a gradient over the layers, or {filter, value} conditions);
    `weight` defaults to 1."""

    _empty = field_validator("parameters", mode="before")(_none_is_empty)


class SliceSource(Strict):
    model: str
    """The model the layers come from (as in `models:`)."""
    layer_range: tuple[int, int]
    """[first, last) source layers."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """This source's per-model parameters."""

    _empty = field_validator("parameters", mode="before")(_none_is_empty)


class OutputSlice(Strict):
    sources: list[SliceSource] = Field(min_length=1)
    """The models whose layers are merged into this run of output layers (one source: copied)."""
    base_model: Optional[str] = None
    """This slice's base (default: the config's base_model)."""
    residual_weight: Optional[float] = None
    """Accepted for mergekit compatibility; mergekit does not use it either."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """Parameters for this slice's layers (above the global ones, below each source's)."""

    _empty = field_validator("parameters", mode="before")(_none_is_empty)


class TokenizerConfig(Strict):
    source: str = "union"
    """`base`, `union`, or a model whose tokenizer the output takes (mergekit's `tokenizer.source`)."""
    tokens: Optional[dict[str, Any]] = None
    """mergekit's per-token embedding sources: not implemented (refused)."""
    pad_to_multiple_of: Optional[int] = Field(default=None, ge=1)
    """Pad the output vocabulary's rows to a multiple of this (mergekit's; padding rows hold each input's
    mean embedding)."""


class Override(Strict):
    pattern: str
    """Glob over tensor names, e.g. `*embed_tokens*` or `lm_head.*`."""
    use: Union[Literal["base"], int, None] = None
    """Take the tensor from the base, or from input model number N (0-based), unmerged."""
    weights: Optional[list[float]] = None
    """Per-model weights for the matching tensors instead of the models' own."""


class MergeConfig(Strict):
    merge_method: str
    """`lifelong ls merges` lists the methods and their parameters."""
    base_model: Optional[str] = None
    """The common base (required by methods that merge deltas). When it is also listed under `models:`
    (mergekit's convention) it is the base only, or also an input for methods that merge it (linear)."""
    models: Optional[list[ModelEntry]] = None
    """The models to merge (or `slices:`)."""
    slices: Optional[list[OutputSlice]] = None
    """Output layers assembled from layer ranges of the models (frankenmerges, depth up-scaling)."""
    modules: Optional[Any] = None
    """mergekit's multi-module syntax: not supported (refused)."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """Global parameters: a method's global parameters, and every model's default for its per-model ones."""
    dtype: Optional[DTypeName] = None
    """mergekit's dtype: inputs are rounded to it when read (computation is in float32), and it is the
    output dtype unless `out_dtype` is set. Default: the inputs' dtype."""
    out_dtype: Optional[DTypeName] = None
    """Output dtype (default: `dtype`, else the inputs' dtype)."""
    tokenizer_source: Optional[str] = None
    """`base`, `union`, or a model (`model:<path>` or the path) whose tokenizer the output takes; needed
    when the inputs' vocabularies differ."""
    tokenizer: Optional[TokenizerConfig] = None
    """mergekit's tokenizer block: `source` and `pad_to_multiple_of` (not `tokens`)."""
    chat_template: Optional[str] = None
    """`auto` (the most common template of the inputs), a model directory whose template to copy, or the
    Jinja template text itself."""
    name: Optional[str] = None
    """mergekit's output name: ignored."""
    overrides: list[Override] = Field(default_factory=list)
    """Per-tensor exceptions, first matching pattern wins (lifelong's)."""
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Seed of random methods (DARE)."""
    max_shard_size: Union[str, int] = "2GB"
    """Largest output shard."""

    _where: Any = PrivateAttr(default=None)
    """(file, line map) when read from a YAML file: located errors."""

    _params = field_validator("parameters", mode="before")(_none_is_empty)
    _dt = field_validator("dtype", "out_dtype", mode="before")(_dtype_name)

    @model_validator(mode="after")
    def _shape(self) -> "MergeConfig":
        if self.modules is not None:
            raise ValueError(
                "mergekit's `modules:` syntax (models with several modules) is not supported; use `models:` "
                "or `slices:`"
            )
        if (self.models is None) == (self.slices is None) or not (self.models or self.slices):
            raise ValueError("give exactly one of `models:` (whole models) or `slices:` (layer ranges), not empty")
        if self.tokenizer_source is not None and self.tokenizer is not None:
            raise ValueError("give `tokenizer_source` or `tokenizer`, not both (as in mergekit)")
        if self.tokenizer is not None and self.tokenizer.tokens:
            raise ValueError(
                "tokenizer.tokens (per-token embedding sources) is not implemented; remove it, or use "
                "tokenizer_source: base | union | <model>"
            )
        return self

    def vocab_source(self) -> Optional[str]:
        return self.tokenizer.source if self.tokenizer is not None else self.tokenizer_source


# ---- input models ---------------------------------------------------------------------------------
LAYER_RE = re.compile(r"^((?:[^.]+\.)*?(?:layers|h|blocks)\.)(\d+)\.(.+)$")
N_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def split_layer(name: str) -> Optional[tuple[str, int, str]]:
    """(prefix, layer index, rest) of a layer tensor (`...layers.N.`, `...h.N.`, `...blocks.N.`), or None."""
    m = LAYER_RE.match(name)
    return (m.group(1), int(m.group(2)), m.group(3)) if m else None


class InputModel:
    """One input model (its reference as written and where its files are) with its layer structure."""

    def __init__(self, ref: str, path: Path) -> None:
        self.ref, self.path = ref, path
        self.lazy = LazyModel(path)
        self.config: dict[str, Any] = read_json(path / "config.json") or {}
        self._layers: Optional[dict[str, dict[int, list[str]]]] = None

    def names(self) -> list[str]:
        return self.lazy.names()

    def layers(self) -> dict[str, dict[int, list[str]]]:
        """prefix -> layer index -> the rest of each tensor name in that layer (file order)."""
        if self._layers is None:
            out: dict[str, dict[int, list[str]]] = {}
            for n in self.names():
                sp = split_layer(n)
                if sp:
                    out.setdefault(sp[0], {}).setdefault(sp[1], []).append(sp[2])
            self._layers = out
        return self._layers

    def n_layers(self, prefix: str) -> int:
        """Layers of the stack `prefix`: config.json's count for a model with one stack, else from names."""
        layers = self.layers()
        if len(layers) == 1:
            for k in N_LAYER_KEYS:
                if isinstance(self.config.get(k), int):
                    return int(self.config[k])
        return max(layers.get(prefix, {-1: []})) + 1

    def vocab_size(self) -> Optional[int]:
        v = self.config.get("vocab_size")
        return int(v) if isinstance(v, int) else None


def _hub_snapshot(repo: str, revision: Optional[str]) -> Path:
    """A hub model from the local Hugging Face cache, or downloaded (config, tokenizer, safetensors)."""
    import huggingface_hub
    from huggingface_hub import constants

    patterns = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja"]
    try:
        return Path(
            huggingface_hub.snapshot_download(
                repo, revision=revision, allow_patterns=patterns, local_files_only=True, cache_dir=None
            )
        )
    except Exception:
        pass
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline:
        raise ValueError(
            f"model {repo!r}: not a local directory and not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}), and the hub is offline (HF_HUB_OFFLINE); download it first "
            f"(`huggingface-cli download {repo}`) or give a local directory"
        )
    try:
        return Path(huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=patterns))
    except Exception as e:
        raise ValueError(
            f"model {repo!r}: not a local directory and not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); downloading it failed: {type(e).__name__}: {e}"
        ) from None


def _locate(ref: str) -> Path:
    """A local directory as is; otherwise a hub id (`org/name[@revision]`)."""
    p = Path(ref).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"model {ref!r}: not a directory (give a model directory or a hub id)")
        return p
    repo, _, rev = ref.partition("@")
    if repo.count("/") != 1 or repo.startswith(("/", ".", "~")):
        raise ValueError(f"model {ref!r}: no such directory (and not a hub id of the form org/name)")
    return _hub_snapshot(repo, rev or None)


def _apply_lora(base: Path, adapter: Path, tmp: Path) -> Path:
    """The base with a PEFT LoRA adapter merged in, saved as safetensors under tmp."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if not (adapter / "adapter_config.json").exists():
        raise ValueError(f"{adapter}: not a PEFT adapter directory (no adapter_config.json)")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(adapter))
    merged = model.merge_and_unload()
    out = Path(tempfile.mkdtemp(prefix="adapter-", dir=tmp))
    merged.save_pretrained(str(out), safe_serialization=True)
    for f in base.iterdir():  # the base's tokenizer goes with the merged weights
        if f.is_file() and not (out / f.name).exists() and f.suffix not in (".safetensors", ".bin"):
            shutil.copy2(f, out / f.name)
    return out


def _resolve_input(path: str, base: Optional[str], tmp: Path) -> Path:
    """A model reference as a local directory: a model dir or hub id as is; a PEFT adapter dir merged into
    its base (base_model, or the adapter's base_model_name_or_path); `model+lora` with the LoRA applied."""
    p = Path(path).expanduser()
    if not p.exists() and "+" in path:
        model_ref, _, lora_ref = path.partition("+")
        return _apply_lora(_locate(model_ref), _locate(lora_ref), tmp)
    loc = _locate(path)
    if not (loc / "adapter_config.json").exists():
        return loc
    base_path = base or read_json(loc / "adapter_config.json").get("base_model_name_or_path")
    if not base_path:
        raise ValueError(f"{loc}: a LoRA adapter needs base_model in the merge config")
    return _apply_lora(_locate(base_path), loc, tmp)


# ---- checks ---------------------------------------------------------------------------------------
def check_compatible(ref: LazyModel, ref_label: str, others: list[tuple[str, LazyModel]], skip: Any = None) -> None:
    """Every model has exactly `ref`'s tensor names and shapes (`skip(name)`: an axis whose size may differ,
    the vocabulary's when tokenizers are aligned)."""
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
            _same_shape(n, ref.meta(n)[1], ref_label, m.meta(n)[1], label, skip(n) if skip else None)


def _same_shape(name: str, a: list[int], a_label: str, b: list[int], b_label: str, axis: Optional[int]) -> None:
    """Equal shapes, except along `axis` (the vocabulary's, when tokenizers are aligned)."""
    if axis is not None and len(a) == len(b):
        ok = all(x == y for i, (x, y) in enumerate(zip(a, b)) if i != axis)
    else:
        ok = a == b
    if not ok:
        raise ValueError(f"tensor {name!r}: shape {a} in {a_label} but {b} in {b_label}")


def check_finite(name: str, merged: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    """Refuse a merged tensor with NaN or infinity that its inputs did not have (a degenerate method
    setting), naming the tensor; the output folder is then never completed."""
    bad = _count_nonfinite(merged)
    if bad and not any(_count_nonfinite(t) for t in inputs):
        raise ValueError(
            f"tensor {name!r}: the merge produced {bad} NaN or infinite values from finite "
            "inputs; check the method's parameters and weights (nothing was written)"
        )


def _count_nonfinite(t: torch.Tensor, step: int = 1 << 20) -> int:
    """NaN and infinite entries, counted in chunks: `torch.isfinite` on a whole float tensor allocates a
    float temporary of its size plus the masks (measured: +2.9 tensors at peak on a 108 MB embedding)."""
    if not t.is_floating_point():
        return 0
    flat = t.reshape(-1)
    bad = 0
    for a in range(0, flat.numel(), step):
        chunk = flat[a : a + step]
        # a NaN or infinity anywhere makes the sum non-finite, so a finite sum (the usual case) settles the
        # chunk in one pass without a mask; a non-finite sum (or a finite overflow) is then counted exactly
        if not bool(torch.isfinite(chunk.sum())):
            bad += int((~torch.isfinite(chunk)).sum())
    return bad


def global_thresholds(
    models: list[LazyModel],
    base: LazyModel,
    weights: list[float],
    fraction: Union[float, list[float]],
    names: list[str],
    weight_of: Optional[Callable[[int, str], float]] = None,
) -> list[float]:
    """Per model, the magnitude above which `fraction` (or `fraction[i]` for model i) of all its weighted
    delta entries lie: exact k-th largest in three streaming passes (max; histogram; the entries in the
    threshold's bin). `weight_of(i, name)`: model i's weight for that tensor (default: `weights[i]`)."""
    out = []
    floats = [n for n in names if DTYPES[base.meta(n)[0]].is_floating_point]
    fractions = fraction if isinstance(fraction, list) else [fraction] * len(models)
    for i, m in enumerate(models):
        frac_i = fractions[i]

        def deltas(n: str, m: LazyModel = m, i: int = i) -> torch.Tensor:
            w = weight_of(i, n) if weight_of is not None else weights[i]
            return (w * (m.get(n).float() - base.get(n).float())).abs().flatten()

        total = sum(math.prod(base.meta(n)[1]) for n in floats)
        k = max(1, int(round(frac_i * total)))
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


# ---- the plan -------------------------------------------------------------------------------------
@dataclass
class _Source:
    model: InputModel
    start: int
    params: dict[str, Setting]
    loc: tuple
    """Location in the config (`models.1`, `slices.0.sources.1`)."""


@dataclass
class _Slice:
    sources: list[_Source]
    params: dict[str, Setting]
    loc: tuple
    n: Optional[int]
    """Layers of this slice (None: whole models, each stack of layers its own count)."""
    base: Optional[_Source] = None


@dataclass
class _Job:
    out: str
    code: str
    shape: list[int]
    t: float
    inputs: list[tuple[_Source, str]]
    """Merged inputs (`tensors`) and their tensor names."""
    base: Optional[tuple[_Source, str]]
    method: Optional[MergeMethod] = None
    weights: list[float] = field(default_factory=list)
    model_params: list[dict[str, Any]] = field(default_factory=list)
    take: Optional[tuple[_Source, str]] = None
    """Copied unmerged (integer buffers, `overrides: use`)."""
    vocab_axis: Optional[int] = None


class _Planner:
    def __init__(self, cfg: MergeConfig, work: Path) -> None:
        self.cfg = cfg
        self.work = work
        self.method_cls = MERGE_METHODS.get(cfg.merge_method)
        self.spec = MethodParams(cfg.merge_method, self.method_cls)
        self._models: dict[str, InputModel] = {}
        self._methods: dict[str, MergeMethod] = {}
        self._checked_weights: set[tuple] = set()

    # -- errors, located in the YAML when the config came from a file
    def fail(self, loc: tuple, message: str) -> ValueError:
        where = self.cfg._where
        if where is not None:
            from lifelong.configio import ConfigError, Locator

            return ConfigError(Locator(where[0], where[1])(loc, message))
        return ValueError(SettingError(loc, message).__str__())

    def model(self, ref: str) -> InputModel:
        if ref not in self._models:
            path = _resolve_input(ref, self.cfg.base_model, self.work)
            key = str(path.resolve())
            same = next((m for m in self._models.values() if str(m.path.resolve()) == key), None)
            self._models[ref] = same if same is not None else InputModel(ref, path)
        return self._models[ref]

    def parse_scopes(self) -> None:
        cfg, spec = self.cfg, self.spec
        try:
            self.global_params = spec.parse_scope(cfg.parameters, ("parameters",), True, "")
            self.entry_params = [
                spec.parse_scope(e.parameters, ("models", i, "parameters"), False, "a model's `parameters:`")
                for i, e in enumerate(cfg.models or [])
            ]
            self.slice_params = [
                (
                    spec.parse_scope(s.parameters, ("slices", i, "parameters"), True, ""),
                    [
                        spec.parse_scope(
                            src.parameters,
                            ("slices", i, "sources", j, "parameters"),
                            False,
                            "a slice source's `parameters:`",
                        )
                        for j, src in enumerate(s.sources)
                    ],
                )
                for i, s in enumerate(cfg.slices or [])
            ]
        except SettingError as e:
            raise self.fail(e.loc, e.message) from None

    def build_slices(self) -> list[_Slice]:
        cfg = self.cfg
        base = self.model(cfg.base_model) if cfg.base_model else None
        if cfg.models is not None:
            sources = [
                _Source(self.model(e.model), 0, p, ("models", i))
                for i, (e, p) in enumerate(zip(cfg.models, self.entry_params))
            ]
            sl = _Slice(sources, {}, ("models",), None)
            if base is not None:
                sl.base = next((s for s in sources if s.model is base), None)
                if sl.base is None:  # mergekit adds an unlisted base_model to the inputs
                    sl.base = _Source(base, 0, {}, ("base_model",))
                    sources.append(sl.base)
            return [sl]
        out = []
        assert cfg.slices is not None
        for i, (s, (sp, src_params)) in enumerate(zip(cfg.slices, self.slice_params)):
            srcs = []
            lengths = []
            for j, (src, p) in enumerate(zip(s.sources, src_params)):
                m = self.model(src.model)
                a, b = src.layer_range
                loc = ("slices", i, "sources", j, "layer_range")
                stacks = list(m.layers())
                if len(stacks) != 1:
                    raise self.fail(
                        loc,
                        f"slices need a model with one stack of numbered layers; {src.model} has "
                        f"{len(stacks)} ({', '.join(stacks) or 'none'})",
                    )
                n = m.n_layers(stacks[0])
                if not 0 <= a < b <= n:
                    raise self.fail(
                        loc, f"[{a}, {b}] is not a range of {src.model}'s {n} layers (0 <= first < last <= {n})"
                    )
                lengths.append(b - a)
                srcs.append(_Source(m, a, p, ("slices", i, "sources", j)))
            if len(set(lengths)) != 1:
                raise self.fail(
                    ("slices", i, "sources"),
                    f"all sources of a slice must have the same number of layers, got {lengths}",
                )
            sl = _Slice(srcs, sp, ("slices", i), lengths[0])
            base_ref = s.base_model or cfg.base_model
            if base_ref:
                bm = self.model(base_ref)
                sl.base = next((x for x in srcs if x.model is bm), None)
                if sl.base is None and self.method_cls.uses_base:
                    raise self.fail(
                        ("slices", i, "sources"),
                        f"the base model {base_ref} is not among this slice's sources; {self.cfg.merge_method} "
                        "merges against it: add it as a source with the same layer_range",
                    )
            out.append(sl)
        prefixes = {next(iter(s.model.layers())) for sl in out for s in sl.sources}
        if len(prefixes) != 1:
            raise self.fail(("slices",), f"the slices' models number their layers differently: {sorted(prefixes)}")
        return out

    # -- methods and parameters
    def method_for(self, globals_: dict[str, Any], loc: tuple, tensor: str) -> MergeMethod:
        key = json.dumps(sorted(globals_.items()), default=repr)
        if key not in self._methods:
            from pydantic import ValidationError

            try:
                params = self.method_cls.Params(**globals_)
            except ValidationError as err:
                e = err.errors()[0]
                name = ".".join(str(x) for x in e["loc"])
                raise self.fail(
                    ("parameters", name) if name else ("parameters",),
                    f"for tensor {tensor!r} the parameters resolve to {globals_}: "
                    + str(e["msg"]).removeprefix("Value error, "),
                ) from None
            self._methods[key] = self.method_cls(params)
        return self._methods[key]

    def resolve(self, job: _Job, sl: _Slice, merged: list[_Source]) -> None:
        """Fill job.method, weights and model_params (mergekit's resolve_parameters)."""
        spec = self.spec
        globals_ = spec.resolve_globals([sl.params, self.global_params], job.out, job.t)
        job.method = self.method_for(globals_, sl.loc, job.out)
        job.model_params = []
        check = self.method_cls.check_model_params
        for src, name in job.inputs:
            own = [s for s in sl.sources if s.model is src.model and s.params]
            scopes = [s.params for s in own] + [sl.params, self.global_params]
            locs = [s.loc + ("parameters",) for s in own] + [sl.loc + ("parameters",), ("parameters",)]
            mp, origin = spec.resolve_model(scopes, name, job.t)
            why = check(mp)
            if why:
                culprit = next(
                    (k for k in origin if check({**spec.model_defaults, k: mp[k]})), next(iter(origin), None)
                )
                loc = locs[origin[culprit]] + (culprit,) if culprit is not None else src.loc
                raise self.fail(loc, f"for tensor {name!r} of {src.model.ref}: {why}")
            job.model_params.append(mp)
        job.weights = [float(mp["weight"]) for mp in job.model_params]

    def check_weights(self, job: _Job, weights: list[float], what: str) -> None:
        key = (id(job.method), tuple(weights))
        if key in self._checked_weights:
            return
        self._checked_weights.add(key)
        assert job.method is not None
        why = job.method.check_weights(list(weights))
        if why:
            raise self.fail(
                ("models",) if self.cfg.models is not None else ("slices",), f"{what} (tensor {job.out!r}): {why}"
            )


PRE_PARTS = {"embed_tokens", "wte", "wpe", "embed_in", "word_embeddings"}
POST_PARTS = {"norm", "lm_head", "ln_f", "embed_out", "final_layernorm", "final_layer_norm", "final_norm"}


def _known_side(name: str) -> Optional[str]:
    """ "pre" / "post" for the usual names of embeddings and of the final norm and output head, else None.
    Building the model on the meta device to read its module order imports its modeling code (+135 MB
    resident for llama), so it is only done for names these rules do not place."""
    parts = set(name.split("."))
    if parts & PRE_PARTS:
        return "pre"
    if parts & POST_PARTS:
        return "post"
    return None


def _pre_names(model: InputModel, names: list[str]) -> set[str]:
    """The non-layer tensors that come before the layers (embeddings), by the model's module order (built
    on the meta device), else by name."""
    by_name = {n: _known_side(n) for n in names}
    if all(side is not None for side in by_name.values()):  # the common architectures: no model build
        return {n for n, side in by_name.items() if side == "pre"}
    order: list[str] = []
    try:
        from transformers import AutoConfig, AutoModelForCausalLM

        with torch.device("meta"):
            m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(model.path)))
        order = list(m.state_dict())
    except Exception:
        order = []
    first = next((i for i, n in enumerate(order) if split_layer(n)), None)
    known = set(order[:first]) if first is not None else set()
    pre = set()
    for n in names:
        if n in order:
            if n in known:
                pre.add(n)
        elif ("embed" in n and "embed_out" not in n) or any(p in ("wte", "wpe") for p in n.split(".")):
            pre.add(n)
    return pre


def _plan_jobs(pl: _Planner, slices: list[_Slice], donor: InputModel, vocab: Any, vocab_axis: Any) -> list[_Job]:
    """Every output tensor: its inputs, position t, resolved parameters and method, checked (names,
    shapes, weights) before anything is read."""
    cfg = pl.cfg
    mode = pl.method_cls.base_in_models
    jobs: list[_Job] = []

    def merged_of(sl: _Slice) -> list[_Source]:
        return [s for s in sl.sources if mode == "input" or s is not sl.base]

    for sl in slices:
        merged = merged_of(sl)
        if pl.method_cls.uses_base and sl.base is None:
            raise pl.fail(
                ("base_model",), f"merge_method {cfg.merge_method} merges deltas against a base: set base_model"
            )
        n_models = pl.method_cls.n_models
        if n_models and len(merged) != n_models:
            besides = " besides the base" if mode == "base" and sl.base is not None else ""
            raise pl.fail(
                sl.loc,
                f"merge_method {cfg.merge_method} takes exactly {n_models} models{besides}, got {len(merged)}",
            )
        why = pl.method_cls.check_inputs(len([s for s in sl.sources if s is not sl.base]), sl.base is not None)
        if why:
            raise pl.fail(sl.loc, why)

    def vocab_sizes(srcs: list[_Source]) -> list[Optional[int]]:
        return [s.model.vocab_size() for s in srcs]

    def add(out: str, t: float, sl: _Slice, names: dict[int, str], srcs: list[_Source]) -> None:
        merged = merged_of(sl)
        inputs = [(s, names[id(s)]) for s in merged]
        base = (sl.base, names[id(sl.base)]) if sl.base is not None else None
        ref_src, ref_name = base if base is not None else inputs[0]
        code, shape = ref_src.model.lazy.meta(ref_name)
        axis = None
        if vocab is not None and split_layer(out) is None:
            axis = vocab_axis(out, shape, {v for v in vocab_sizes(srcs) if v is not None})
        everyone = inputs + ([base] if base is not None and base[0] not in merged else [])
        for s, n in everyone:
            have = s.model.lazy.where
            if n not in have:
                raise pl.fail(
                    s.loc,
                    f"model {s.model.ref}: tensor {n!r} is missing (needed for output tensor {out!r}); models "
                    "must share an architecture",
                )
            if s is not ref_src:
                _same_shape(n, shape, f"{ref_src.model.ref}", s.model.lazy.meta(n)[1], s.model.ref, axis)
        out_shape = list(shape)
        if axis is not None:
            out_shape[axis] = vocab.size
        src_dtype = DTYPES[code]
        job = _Job(out, code, out_shape, t, inputs, base, vocab_axis=axis)
        if not src_dtype.is_floating_point:
            job.take = (ref_src, ref_name)
            jobs.append(job)
            return
        dtypes = [DTYPES[s.model.lazy.meta(n)[0]] for s, n in everyone]
        promoted = dtypes[0]
        for d in dtypes[1:]:
            promoted = torch.promote_types(promoted, d)
        want = cfg.out_dtype or cfg.dtype
        job.code = CODES[getattr(torch, want)] if want else CODES[promoted]
        pl.resolve(job, sl, merged)
        rule = next((o for o in cfg.overrides if fnmatch.fnmatchcase(out, o.pattern)), None)
        if rule is not None and rule.use is not None:
            if rule.use == "base":
                if base is None:
                    raise pl.fail(("overrides",), f"override {rule.pattern!r}: `use: base` needs base_model")
                job.take = base
            else:
                if not 0 <= int(rule.use) < len(inputs):
                    raise pl.fail(
                        ("overrides",), f"override {rule.pattern!r}: use {rule.use}, but there are {len(inputs)} models"
                    )
                job.take = inputs[int(rule.use)]
        elif rule is not None and rule.weights:
            if len(rule.weights) != len(inputs):
                raise pl.fail(
                    ("overrides",),
                    f"override {rule.pattern!r}: weights: {len(rule.weights)} weights for {len(inputs)} models",
                )
            job.weights = [float(w) for w in rule.weights]
            pl.check_weights(job, job.weights, f"override {rule.pattern!r}: weights")
        else:
            pl.check_weights(job, job.weights, "models' weights")
        jobs.append(job)

    if cfg.models is not None:
        sl = slices[0]
        ref = sl.base.model if sl.base is not None else sl.sources[0].model
        ref_label = f"base {ref.ref}" if sl.base is not None else f"model {ref.ref}"
        distinct: list[InputModel] = []
        for s in sl.sources:
            if all(s.model is not d for d in distinct):
                distinct.append(s.model)
        skip = None
        if vocab is not None:

            def skip(n: str) -> Optional[int]:
                sizes = {v for v in vocab_sizes(sl.sources) if v is not None}
                return None if split_layer(n) else vocab_axis(n, ref.lazy.meta(n)[1], sizes)

        check_compatible(ref.lazy, ref_label, [(f"model {m.ref}", m.lazy) for m in distinct if m is not ref], skip)
        for n in ref.names():
            sp = split_layer(n)
            t = 0.0
            if sp is not None:
                count = ref.n_layers(sp[0])
                t = sp[1] / (count - 1) if count > 1 else 1.0
            add(n, t, sl, {id(s): n for s in sl.sources}, sl.sources)
        return jobs

    # slices: tensors before the layers from the first slice's sources, after them from the last's
    prefix = next(iter(donor.layers()))
    non_layer = [n for n in donor.names() if split_layer(n) is None]
    pre = _pre_names(donor, non_layer) if len(slices) > 1 else set(non_layer)
    for n in non_layer:
        if n in pre:
            add(n, 0.0, slices[0], {id(s): n for s in slices[0].sources}, slices[0].sources)
    k = 0
    for sl in slices:
        assert sl.n is not None
        lead = sl.sources[0]
        for idx in range(sl.n):
            t = idx / (sl.n - 1) if sl.n > 1 else 1.0
            rests = lead.model.layers()[prefix].get(lead.start + idx, [])
            for rest in rests:
                names = {id(s): f"{prefix}{s.start + idx}.{rest}" for s in sl.sources}
                add(f"{prefix}{k}.{rest}", t, sl, names, sl.sources)
            k += 1
    for n in non_layer:
        if n not in pre:
            add(n, 0.0, slices[-1], {id(s): n for s in slices[-1].sources}, slices[-1].sources)
    return jobs


def _out_config(cfg: MergeConfig, donor: InputModel, slices: list[_Slice], vocab: Any) -> dict[str, Any]:
    """config.json of the output: the donor's, with the layer count and per-layer lists of `slices:`, the
    output dtype and the vocabulary size of an aligned tokenizer."""
    conf = dict(donor.config)
    want = cfg.out_dtype or cfg.dtype
    if want:
        keys: list[str] = [k for k in ("dtype", "torch_dtype") if k in conf] or ["torch_dtype"]
        for k in keys:
            conf[k] = want
    if cfg.slices is not None:
        total = sum(sl.n or 0 for sl in slices)
        n_src = {k: donor.config[k] for k in N_LAYER_KEYS if isinstance(donor.config.get(k), int)}
        for k in n_src:
            conf[k] = total
        count = next(iter(n_src.values()), None)
        if count and count > 1:
            for key, value in donor.config.items():
                if key == "architectures" or not isinstance(value, list) or len(value) != count:
                    continue
                new = []
                for sl in slices:
                    lead = sl.sources[0]
                    lst = lead.model.config.get(key)
                    if not isinstance(lst, list):
                        lst = value
                    new += [lst[lead.start + idx] for idx in range(sl.n or 0)]
                conf[key] = new
    if vocab is not None:
        conf["vocab_size"] = int(vocab.size)
    return conf


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
MERGEKIT_TEMPLATES = ("alpaca", "chatml", "exaone", "llama3", "mistral")


def _template_of(path: Path) -> Optional[str]:
    jinja = path / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text()
    tc = read_json(path / "tokenizer_config.json") or {}
    t = tc.get("chat_template")
    if isinstance(t, list):  # named templates: the default one
        t = next((x.get("template") for x in t if isinstance(x, dict) and x.get("name") == "default"), None)
    return t if isinstance(t, str) else None


def _chat_template(cfg: MergeConfig, models: list[InputModel]) -> Optional[str]:
    """The template `chat_template:` asks for (checked before any tensor is read)."""
    ct = cfg.chat_template
    if not ct:
        return None
    if ct == "auto":
        found = [t.strip() for t in (_template_of(m.path) for m in models) if t]
        return Counter(found).most_common(1)[0][0] if found else None
    if "{" in ct:
        return ct
    p = Path(ct).expanduser()
    if p.is_dir():
        t = _template_of(p)
        if t is None:
            raise ValueError(f"chat_template: {ct} has no chat template (tokenizer_config.json or chat_template.jinja)")
        return t
    if ct in MERGEKIT_TEMPLATES:
        raise ValueError(
            f"chat_template: {ct!r} names one of mergekit's bundled templates, which lifelong does not ship; "
            "give `auto` (the inputs' most common template), a model directory to copy it from, or the Jinja "
            "text itself"
        )
    raise ValueError(f"chat_template: {ct!r} is not `auto`, a model directory, or a Jinja template (text with {{ }})")


def _write_chat_template(out: Path, template: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    tok.chat_template = template
    tok.save_pretrained(str(out))


def merge_models(cfg: MergeConfig, out_dir: str | Path, quiet: bool = False, console: Optional[Any] = None) -> Path:
    """Merge as configured into a new HF model directory `out_dir` (written under a temporary name and
    renamed when complete). Progress per tensor (`lifelong.progress`; `quiet`: none)."""
    out = Path(out_dir)
    if MERGE_METHODS.get(cfg.merge_method).adapter_space:
        from lifelong.merging.adapters import merge_adapters  # LoRA adapters merged as adapters

        return Path(merge_adapters(cfg, out, quiet, console))
    if cfg.merge_method == "greedy_soup":
        if out.exists():
            raise ValueError(f"{out} already exists; choose another --out (merges never overwrite)")
        method_cls = MERGE_METHODS.get(cfg.merge_method)
        return _greedy_soup(cfg, method_cls(method_cls.Params(**cfg.parameters)), out, quiet, console)
    work = Path(tempfile.mkdtemp(prefix="lifelong-merge-"))
    try:
        pl = _Planner(cfg, work)
        pl.parse_scopes()
        if out.exists():
            raise ValueError(f"{out} already exists; choose another --out (merges never overwrite)")
        slices = pl.build_slices()
        models: list[InputModel] = []
        for m in pl._models.values():
            if all(m is not x for x in models):
                models.append(m)
        donor = pl.model(cfg.base_model) if cfg.base_model else slices[0].sources[0].model
        source = cfg.vocab_source()
        base_dir = pl.model(cfg.base_model).path if cfg.base_model else None
        if source not in (None, "base", "union"):  # a model whose tokenizer the output takes
            source = "model:" + str(_locate(source.removeprefix("model:")))  # type: ignore[union-attr]
        pad = cfg.tokenizer.pad_to_multiple_of if cfg.tokenizer is not None else None
        others = [m.path for m in models if base_dir is None or m.path != base_dir]
        try:
            vocab = plan_vocab(source, base_dir, others, **({"pad_to_multiple_of": pad} if pad else {}))
        except ValueError as e:
            where = ("tokenizer", "source") if cfg.tokenizer is not None else ("tokenizer_source",)
            raise pl.fail(where, str(e)) from None  # the field that fixes it
        template = _chat_template(cfg, [donor] + [m for m in models if m is not donor])
        jobs = _plan_jobs(pl, slices, donor, vocab, vocab_axis)
        thresholds = _thresholds(pl, jobs)
        _execute(cfg, jobs, slices, donor, vocab, template, thresholds, out, quiet, console)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _fractions(method: MergeMethod, model_params: list[dict[str, Any]]) -> Optional[list[float]]:
    """Per model, the fraction a method trims to over the whole model (TIES `trim: global`), or None."""
    got = method.global_fractions(model_params)
    return [float(x) for x in got] if got is not None else None


def _thresholds(pl: _Planner, jobs: list[_Job]) -> Optional[list[float]]:
    """Per-model magnitude thresholds over the whole model, for methods that trim globally."""
    merged = [j for j in jobs if j.take is None and j.base is not None and j.method is not None]
    fracs = {tuple(f) for j in merged if (f := _fractions(j.method, j.model_params)) is not None}  # type: ignore[arg-type]
    if not fracs:
        return None
    if len(fracs) > 1 or pl.cfg.models is None or len(merged) != len([j for j in jobs if j.take is None]):
        raise pl.fail(
            ("parameters",),
            "a global trim takes `models:` (not slices) with one density per model for the whole model "
            f"(no gradient or filter on it); got {sorted(fracs)[:3]}",
        )
    first = merged[0]
    assert first.base is not None
    by_name = {j.out: j for j in merged}
    return global_thresholds(
        [s.model.lazy for s, _ in first.inputs],
        first.base[0].model.lazy,
        first.weights,
        list(fracs.pop()),
        list(by_name),
        weight_of=lambda i, n: by_name[n].weights[i],
    )


def _read(src: _Source, name: str, dtype: Optional[str], cache: dict) -> torch.Tensor:
    """One input tensor in float32 (rounded to `dtype` first, as mergekit loads it), read once per job."""
    key = (id(src.model), name)
    if key not in cache:
        t = src.model.lazy.get(name)
        if dtype and t.is_floating_point():
            t = t.to(getattr(torch, dtype))
        cache[key] = t.float() if t.is_floating_point() else t
    return cache[key]


def _execute(
    cfg: MergeConfig,
    jobs: list[_Job],
    slices: list[_Slice],
    donor: InputModel,
    vocab: Any,
    template: Optional[str],
    thresholds: Optional[list[float]],
    out: Path,
    quiet: bool,
    console: Optional[Any],
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        writer = StreamingWriter(tmp, [(j.out, j.code, j.shape) for j in jobs], parse_size(cfg.max_shard_size))
        with progress(len(jobs), f"merge {cfg.merge_method}", quiet, console, unit="tensors") as bar:
            for j in jobs:
                cache: dict = {}
                if j.take is not None:
                    src, name = j.take
                    merged = _read(src, name, cfg.dtype, cache)
                    if j.vocab_axis is not None:
                        merged = vocab.align([merged], j.vocab_axis, [str(src.model.path)])[0]
                else:
                    tensors = [_read(s, n, cfg.dtype, cache) for s, n in j.inputs]
                    base = _read(j.base[0], j.base[1], cfg.dtype, cache) if j.base is not None else None
                    if j.vocab_axis is not None:
                        srcs = [s for s, _ in j.inputs] + ([j.base[0]] if j.base is not None else [])
                        aligned = vocab.align(
                            tensors + ([base] if base is not None else []),
                            j.vocab_axis,
                            [str(s.model.path) for s in srcs],
                        )
                        tensors, base = aligned[: len(tensors)], (aligned[-1] if base is not None else None)
                    ctx = TensorContext(
                        name=j.out, seed=cfg.seed, threshold=thresholds, model_params=j.model_params, t=j.t
                    )
                    assert j.method is not None
                    merged = j.method.merge(tensors, list(j.weights), base, ctx)
                    check_finite(j.out, merged, tensors + ([base] if base is not None else []))
                    del tensors, base
                writer.write(j.out, merged.to(DTYPES[j.code]))
                del merged, cache
                bar.advance()
                fault_point("merge-tensor")  # a testing hook (lifelong.faults): killed with some tensors written
        writer.close()
        copy_model_files(donor.path, tmp, skip=TOKENIZER_FILES if vocab is not None else ())
        if donor.config:
            (tmp / "config.json").write_text(json.dumps(_out_config(cfg, donor, slices, vocab), indent=2) + "\n")
        if vocab is not None:
            vocab.save_tokenizer(tmp)  # the output vocabulary's tokenizer (and config.json's vocab_size)
        if template is not None:
            _write_chat_template(tmp, template)
        finalize(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_config(cfg: MergeConfig) -> None:
    """The checks that need no model files: method parameters (names, scopes, values) and, when they are
    plain numbers, the models' weights. Errors are located when the config came from a file."""
    pl = _Planner(cfg, Path("."))
    pl.parse_scopes()
    if cfg.models is None:
        return
    default_w = pl.global_params.get("weight", 1.0)
    scopes = [p if "weight" in p else {"weight": default_w} for p in pl.entry_params]
    in_models = [e.model for e in cfg.models]
    if cfg.base_model and pl.method_cls.base_in_models == "input" and cfg.base_model not in in_models:
        scopes.append({"weight": default_w})  # merged too, as mergekit does
    elif cfg.base_model and pl.method_cls.base_in_models == "base":
        scopes = [p for p, m in zip(scopes, in_models) if m != cfg.base_model]
    ws = [p["weight"] for p in scopes]
    fixed = {k: v for k, v in pl.global_params.items() if pl.spec.is_global(k) and isinstance(v, (int, float, str))}
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in ws):
        return  # gradients or filters: checked per tensor before anything is written
    try:
        method = pl.method_for(fixed, ("parameters",), "*")
    except ValueError:
        return  # depends on other per-tensor values: checked per tensor
    why = method.check_weights([float(w) for w in ws])  # type: ignore[arg-type]
    if why:
        raise pl.fail(("models",), why)


def load_merge_config(path: str | Path, overrides: Optional[list[str]] = None) -> MergeConfig:
    """Read and validate a merge YAML with file:line errors (and dotted overrides). Relative model paths
    are taken from the YAML's folder."""
    from pydantic import ValidationError

    from lifelong.configio import ConfigError, apply_overrides, format_validation_error, read_yaml

    path = Path(path)
    raw, lines = read_yaml(path, "merge config")
    raw = apply_overrides(raw, overrides or [])
    try:
        cfg = MergeConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("\n".join(format_validation_error(err, str(path), lines))) from None
    cfg._where = (str(path), lines)
    if cfg.merge_method not in MERGE_METHODS:
        raise ConfigError(
            f"{path}:{lines.get(('merge_method',), '?')}: merge_method: "
            f"{MERGE_METHODS.unknown_message(cfg.merge_method)}"
        )
    base_dir = path.parent

    def fix(p: Optional[str]) -> Optional[str]:
        if not p:
            return p
        if "+" in p and not (base_dir / p).exists():
            return "+".join(fix(x) or x for x in p.split("+", 1))
        return str((base_dir / p).resolve()) if not Path(p).is_absolute() and (base_dir / p).exists() else p

    cfg.base_model = fix(cfg.base_model)
    for e in cfg.models or []:
        e.model = fix(e.model)  # type: ignore[assignment]
    for s in cfg.slices or []:
        s.base_model = fix(s.base_model)
        for src in s.sources:
            src.model = fix(src.model)  # type: ignore[assignment]
    if cfg.tokenizer_source not in (None, "base", "union"):
        ts = cfg.tokenizer_source.removeprefix("model:")  # type: ignore[union-attr]
        cfg.tokenizer_source = "model:" + (fix(ts) or ts)
    if cfg.tokenizer is not None and cfg.tokenizer.source not in ("base", "union"):
        cfg.tokenizer.source = fix(cfg.tokenizer.source.removeprefix("model:")) or cfg.tokenizer.source
    if cfg.chat_template and "{" not in cfg.chat_template and cfg.chat_template != "auto":
        cfg.chat_template = fix(cfg.chat_template)
    check_config(cfg)
    try:
        _chat_template(cfg, [])
    except ValueError as e:
        raise ConfigError(f"{path}:{lines.get(('chat_template',), '?')}: {e}") from None
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
    if not cfg.models:
        raise ValueError("greedy_soup takes `models:` (candidate models), not slices")
    task = build_task(EvalTaskConfig(**p.eval), "heldout", None, None, None, "parameters.eval")
    work = Path(tempfile.mkdtemp(prefix="lifelong-soup-"))
    cache: dict[tuple, float] = {}
    candidates = cfg.models

    def soup(idx: Any) -> MergeConfig:  # a uniform average of these candidates (the base is not one)
        return cfg.model_copy(
            update={
                "merge_method": "linear",
                "base_model": None,
                "parameters": {},
                "models": [ModelEntry(model=candidates[i].model, parameters={"weight": 1.0}) for i in idx],
                "chat_template": None,
            }
        )

    def score(idx: list[int]) -> float:
        key = tuple(sorted(idx))
        if key not in cache:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            d = work / ("soup-" + "-".join(map(str, key)))
            merge_models(soup(key), d, quiet=True)  # trials: the final merge shows progress
            tok_dir = cfg.base_model or candidates[0].model
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
        kept, log = select_greedy(len(candidates), score)
        merge_models(soup(kept), out, quiet, console)
        (out / "greedy_soup.json").write_text(
            json.dumps({"kept": [candidates[i].model for i in kept], "trials": log}, indent=1)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
